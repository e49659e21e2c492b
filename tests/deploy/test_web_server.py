"""The web servers a lab runs, started as the README and the Dockerfile start them:
``python app.py`` (waitress) survives hostile request bodies, and gunicorn's fresh
threaded workers serve their first page without Dash's start-up race (plotly/dash#3971)."""

import http.cookiejar
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from .stack import ROOT, _stop, free_port, wait_http


def _env(data: Path, **extra) -> dict:
    """The environment of a server under test: no password, no Redis, the given settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("IONDIFF_PASSWORD", "REDIS_URL", "IONDIFF_PORT", "IONDIFF_HOST")}
    return {**env, "IONDIFF_DATA": str(data), "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", **extra}


@contextmanager
def process(cmd, env, log: Path):
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield p
    finally:
        _stop(p)


def raw(port: int, data: bytes, wait: float = 0.3, read: bool = False) -> bytes:
    """Send raw bytes, optionally read the answer, close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        if read:
            return s.recv(4096)
        time.sleep(wait)
    return b""


def test_python_app_py_survives_huge_chunk_sizes_and_refuses_big_bodies_unread(tmp_path):
    """The README's first command: chunked posts announcing a 1-4 GiB chunk with a few
    bytes (werkzeug's development server died on each, leaving a .part file) leave the
    server answering; a 500 MB body to a callback is refused from its headers; a client
    that stops sending is disconnected."""
    port = free_port()
    data = tmp_path / "data"
    with process([sys.executable, "app.py"], _env(data, IONDIFF_PORT=str(port), IONDIFF_READ_TIMEOUT_S="2"),
                 tmp_path / "app.log") as p:
        wait_http(f"http://127.0.0.1:{port}/health")
        for size in (1 << 30, (1 << 31) + 5, (1 << 32) - 1) * 2:
            raw(port, b"POST /upload?kind=trajectory&name=x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n%x\r\nshort body\r\n0\r\n\r\n" % size)
        assert p.poll() is None, (tmp_path / "app.log").read_text()
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).read() == b"OK"
        assert not list(data.rglob("*.part")) and not any((data / "uploads").iterdir())

        # An upload above IONDIFF_MAX_REQUEST_MB (20) is the upload's own business: read, then judged.
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        tok = json.load(opener.open(f"http://127.0.0.1:{port}/upload/token", timeout=10))
        req = urllib.request.Request(f"http://127.0.0.1:{port}/upload?kind=trajectory&name=XDATCAR", data=b"x\n" * (13 * 1024**2),
                                     headers={tok["header"]: tok["token"]})
        try:
            opener.open(req, timeout=60)
        except urllib.error.HTTPError as exc:
            assert exc.code == 400 and "XDATCAR line 2" in json.load(exc)["error"]
        else:
            raise AssertionError("junk was accepted")

        t = time.time()
        head = raw(port, b"POST /_dash-update-component HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n{" % (500 * 1024**2), read=True)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert time.time() - t < 5
        # A client that stops sending is disconnected after IONDIFF_READ_TIMEOUT_S (2 s here).
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            t = time.time()
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\nabc")
            assert s.recv(100) == b"" and time.time() - t < 15
        assert p.poll() is None


def _asset_urls(data: Path) -> list[str]:
    """The page's script URLs, from an app in this process (same files, same fingerprints)."""
    from dashboard.app_factory import create_app

    app = create_app(data_dir=data)
    html = app.server.test_client().get("/").get_data(as_text=True)
    return re.findall(r'src="(/_dash-component-suites/[^"]+)"', html)


def _get(url: str) -> int:
    end = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=120) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:  # not listening yet
            if time.time() > end:
                raise
            time.sleep(0.05)


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_fresh_threaded_gunicorn_workers_serve_their_first_page(tmp_path):
    """gunicorn as the Dockerfile runs it (gunicorn.conf.py), two workers of sixteen
    threads, started three times: the first page, its scripts, layout and dependencies
    are asked of every worker while it starts, many at once (queued before it accepts);
    every answer is 200. (Before the warm-up, 1-2 script requests of a burst failed.)"""
    assets = _asset_urls(tmp_path / "local")
    assert any("/dash/" in a for a in assets)
    workers, threads = 2, 16
    paths = ["/", "/_dash-layout", "/_dash-dependencies", *assets]
    for start in range(3):
        port = free_port()
        log = tmp_path / f"gunicorn{start}.log"
        cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", str(workers), "--threads", str(threads),
               "-b", f"127.0.0.1:{port}", "--access-logfile", "-", "--access-logformat", "ACCESS %(p)s %(s)s %(U)s",
               "app:server"]
        with process(cmd, _env(tmp_path / f"data{start}"), log):
            url = f"http://127.0.0.1:{port}"
            statuses = []
            for burst in range(8):  # until every worker has answered (its first answers came in a burst)
                with ThreadPoolExecutor(2 * workers * threads) as pool:
                    jobs = [pool.submit(_get, url + paths[i % len(paths)]) for i in range(2 * workers * threads)]
                    statuses += [(j.result(), paths[i % len(paths)]) for i, j in enumerate(jobs)]
                time.sleep(0.5)  # the access log is written after the answer
                text = log.read_text()
                booted = set(re.findall(r"Booting worker with pid: (\d+)", text))
                served = set(re.findall(r"ACCESS <(\d+)>", text))
                if len(booted) == workers and booted <= served:
                    break
            bad = [s for s in statuses if s[0] != 200]
            assert not bad, (bad, text[-3000:])
            assert "not a registered library" not in text
            assert len(booted) == workers and booted <= served, text[-3000:]


def test_gunicorn_frees_a_thread_from_a_client_that_stops_sending(tmp_path):
    """A client that announces a body and stops sending gets 408 after
    IONDIFF_READ_TIMEOUT_S on the upload (no .part file left); one that stops in the
    middle of its headers is disconnected."""
    port = free_port()
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", "1", "--threads", "2",
           "-b", f"127.0.0.1:{port}", "app:server"]
    with process(cmd, _env(data, IONDIFF_READ_TIMEOUT_S="1"), tmp_path / "gunicorn.log"):
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health")
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        tok = json.load(opener.open(url + "/upload/token", timeout=10))
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
        t = time.time()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall((f"POST /upload?kind=trajectory&name=XDATCAR HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                       f"Cookie: {cookie}\r\n{tok['header']}: {tok['token']}\r\nContent-Length: 100000\r\n\r\n").encode()
                      + b"x" * 1000)
            answer = s.recv(4096)
            while b"stalled" not in answer and (more := s.recv(4096)):  # the body may come in a later segment
                answer += more
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"stalled" in answer
        assert time.time() - t < 20
        assert not list(data.rglob("*.part")) and not any((data / "uploads").iterdir())
        # A client that stops in the middle of its headers is disconnected too.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            t = time.time()
            s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            assert s.recv(100) == b"" and time.time() - t < 20
        assert urllib.request.urlopen(url + "/health", timeout=10).status == 200
