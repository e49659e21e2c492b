"""The image and the compose stack, built and run (issue 11): the Dockerfile built unchanged
by podman from a local stand-in for its base image (../shared/tools/local-python-base.sh,
made from the Debian archive), run as a lab runs it; then docker-compose.yml (web, worker,
Redis built from deploy/redis.Dockerfile) brought up with podman-compose, and one analysis
sent through Redis to the worker. The files a lab deploys are the files these tests run.

Skipped, with the reason, only when podman cannot be installed or cannot run a container
on this machine. Takes a few minutes the first time (pip inside the build), less after."""

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from .stack import ROOT, free_port, wait_http

SHARED = ROOT.parent / "shared"  # beside the project, as on the CI machine
RUN = SHARED / "data" / "real" / "LGPS_600K"
BASE = "docker.io/library/python:3.11-slim"
ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", "/tmp/containers.conf")}

pytestmark = pytest.mark.slow


def sh(*cmd, timeout=600, check=True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], env=kw.pop("env", ENV), capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def status(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def podman():
    """podman, its settings (CONTAINERS_CONF) and the local base image, from the shared
    script (it installs podman, runc and mmdebstrap with apt if they are missing)."""
    script = SHARED / "tools" / "local-python-base.sh"
    if not script.is_file():
        pytest.skip(f"{script} is missing: it installs podman and builds the base image")
    r = sh("bash", script, timeout=1200, check=False)
    if r.returncode or not shutil.which("podman"):
        pytest.skip(f"podman cannot be installed or the base image built here: {(r.stdout + r.stderr)[-800:]}")
    r = sh("podman", "run", "--rm", BASE, "true", check=False, timeout=120)
    if r.returncode:
        pytest.skip(f"podman cannot run a container here: {r.stderr[-800:]}")
    if not RUN.is_dir():
        pytest.skip(f"the shared run {RUN} is missing")
    return "podman"


def build(tag: str, dockerfile: str = "Dockerfile") -> float:
    """Build as tools/local-python-base.sh says: no pull, host network, docker format
    (which keeps HEALTHCHECK). Returns the seconds it took."""
    t0 = time.monotonic()
    sh("podman", "build", "--pull=never", "--network", "host", "--format", "docker",
       "-f", ROOT / dockerfile, "-t", tag, ROOT, timeout=1200)
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def image(podman):
    tag = "localhost/iondiff-dashboard:test"
    print(f"app image built in {build(tag):.0f} s")
    return tag


def test_image_serves_runs_as_uid_1000_and_analyses_a_shared_run(image, tmp_path):
    port = free_port()
    name = f"iondiff-test-{uuid.uuid4().hex[:8]}"
    sh("podman", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8050",
       "-e", "IONDIFF_SECRET_KEY=test-secret-key", "-e", "IONDIFF_ROOTS=/sims",
       "-v", f"{RUN}:/sims/{RUN.name}:ro", image)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", 120)
        assert status(url + "/") == 200 and status(url + "/docs/METHOD.md") == 200
        assert sh("podman", "exec", name, "id", "-u").stdout.strip() == "1000"
        # The image's own HEALTHCHECK (kept by --format docker) passes.
        assert "8050/health" in sh("podman", "inspect", "--format", "{{json .Config.Healthcheck}}", name).stdout
        assert sh("podman", "healthcheck", "run", name, check=False).returncode == 0
        # One analysis of a real run inside the container, the same as this checkout's.
        local = tmp_path / "local.json"
        host = subprocess.Popen([sys.executable, "-m", "iondiff_core", "analyze", RUN, "--out", local, "-q"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sh("podman", "exec", name, "python", "-m", "iondiff_core", "analyze", f"/sims/{RUN.name}",
           "--out", "/data/LGPS.json", "-q")
        inside = json.loads(sh("podman", "exec", name, "cat", "/data/LGPS.json").stdout)
        assert host.wait(timeout=600) == 0
        here = json.loads(local.read_text())
        assert len(inside["hops"]) == len(here["hops"]) > 0
        assert inside["descriptors"] == here["descriptors"]
    finally:
        sh("podman", "rm", "-f", "-v", name, check=False)  # with its anonymous /data volume


def compose(project: str, *args, timeout=1200, check=True, env=None) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "podman_compose", "-p", project, "-f", ROOT / "docker-compose.yml", *args,
              timeout=timeout, check=check, env=env, cwd=ROOT)


def test_compose_stack_runs_an_analysis_on_its_worker(podman):
    pytest.importorskip("podman_compose", reason="podman-compose is not installed (requirements-dev.txt)")
    project = f"iondifftest{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {**ENV, "SIMULATIONS": str(RUN.parent), "IONDIFF_SECRET_KEY": "test-secret-key", "IONDIFF_PUBLISH": str(port)}
    t0 = time.monotonic()
    # The compose file's own build sections, built the way local-python-base.sh says.
    compose(project, "--podman-build-args=--pull=never --network host --format docker", "build", env=env)
    print(f"compose images built in {time.monotonic() - t0:.0f} s")
    try:
        compose(project, "up", "-d", "--no-build", env=env)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", 120)
        assert status(url + "/") == 200
        # Redis keeps its data on its volume (deploy/redis.conf).
        aof = compose(project, "exec", "redis", "redis-cli", "--raw", "config", "get", "appendonly", env=env).stdout
        assert "yes" in aof.split()
        # A job through Redis to the worker service, into the library on the shared volume.
        send = ("from dashboard.celery_app import analyse_into_library as a;"
                f"print(a.delay('/sims/{RUN.name}', {{'species': 'Li'}}, None, None, 'LGPS-compose').get(timeout=600))")
        entry = compose(project, "exec", "web", "python", "-c", send, env=env).stdout.strip().splitlines()[-1]
        names = compose(project, "exec", "web", "python", "-c",
                        "from dashboard.storage import Library; print([e.name for e in Library('/data/library.sqlite').list()])",
                        env=env).stdout
        assert "LGPS-compose" in names
        logs = compose(project, "logs", "worker", env=env, check=False)
        assert f"succeeded" in logs.stdout + logs.stderr and entry in logs.stdout + logs.stderr
    finally:
        compose(project, "down", "-v", env=env, check=False, timeout=300)
