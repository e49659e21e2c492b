"""Start a lab stack on loopback with the commands docker-compose.yml runs: redis-server
(with deploy/redis.conf, as deploy/redis.Dockerfile), a Celery worker
(``celery -A app:celery_app worker``) and ``gunicorn -w 2 app:server``.
Used by the deployment tests and by ``benchmarks/load_test.py``."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@dataclass
class Stack:
    url: str
    env: dict
    data: Path
    sims: Path
    procs: dict
    redis_cmd: list

    def restart_redis(self, down_s: float = 2.0) -> None:
        """Kill redis-server (SIGKILL: no clean shutdown), leave it down ``down_s`` seconds,
        start it again on the same port and append-only file."""
        p = self.procs["redis"]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        time.sleep(down_s)
        self.procs["redis"] = _start_redis(self.redis_cmd)

    def worker_children(self, name: str = "worker") -> list[int]:
        import psutil

        return [c.pid for c in psutil.Process(self.procs[name].pid).children(recursive=True)]

    def start_worker(self, concurrency: int = 1, name: str = "worker", queues: str | None = None, **extra_env) -> None:
        """Start a Celery worker node ``name@host``, logging to ``<data>/<name>.log``;
        ``queues``: its ``-Q`` (default: every queue of the app)."""
        path = self.data / f"{name}.log"
        offset = path.stat().st_size if path.exists() else 0
        log = open(path, "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "app:celery_app", "worker", "--concurrency", str(concurrency),
             "-n", f"{name}@%h", "--loglevel", "info", "--without-gossip", "--without-mingle",
             *(["-Q", queues] if queues else [])],
            cwd=ROOT, env={**self.env, **extra_env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        end = time.time() + 60
        while time.time() < end and b"ready" not in path.read_bytes()[offset:]:
            time.sleep(0.3)

    def restart_worker(self, concurrency: int = 1, **extra_env) -> None:
        """Stop the worker (warm shutdown) and start a new one, with ``extra_env`` set."""
        _stop(self.procs.pop("worker"))
        self.start_worker(concurrency, **extra_env)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def redis_command(port: int, folder: Path) -> list:
    """redis-server with the deployment's own settings (deploy/redis.conf: append-only file,
    so queued jobs survive a restart or a kill), on loopback, its files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return ["redis-server", str(ROOT / "deploy" / "redis.conf"),
            "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes", "--dir", str(folder)]


def _start_redis(cmd: list) -> subprocess.Popen:
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, start_new_session=True)
    port = int(cmd[cmd.index("--port") + 1])
    end = time.time() + 20
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"PING\r\n")
                if c.recv(64).startswith(b"+PONG"):  # -LOADING while the append-only file is read
                    return p
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"redis-server did not answer on port {port}")


@contextmanager
def running_stack(data: Path, sims: Path, web_workers: int = 2, worker_concurrency: int = 1, workers: int = 1,
                  other_queues: str | None = None, **extra_env):
    """Redis, Celery workers (``worker``, ``worker2``, ...) and gunicorn on free loopback
    ports, every process with ``extra_env`` set; stopped on exit."""
    redis_port, web_port = free_port(), free_port()
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "IONDIFF_DATA": str(data),
        "IONDIFF_ROOTS": str(sims),
        "IONDIFF_SECRET_KEY": "test-secret-key",
        "PYTHONPATH": str(ROOT),
        **extra_env,
    }
    env.pop("IONDIFF_PASSWORD", None)
    procs = {}
    redis_cmd = redis_command(redis_port, data / "redis")
    procs["redis"] = _start_redis(redis_cmd)
    s = Stack(f"http://127.0.0.1:{web_port}", env, data, sims, procs, redis_cmd)
    try:
        for k in range(workers):
            s.start_worker(worker_concurrency, "worker" if k == 0 else f"worker{k + 1}", None if k == 0 else other_queues)
        procs["web"] = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "-w", str(web_workers), "--threads", "2", "--timeout", "120", "-b", f"127.0.0.1:{web_port}", "app:server"],
            cwd=ROOT, env=env, stdout=open(data / "web.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_http(s.url + "/health")
        yield s
    finally:
        for p in procs.values():
            _stop(p)
