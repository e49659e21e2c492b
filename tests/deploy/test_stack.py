"""The lab deployment on loopback: Redis, a Celery worker, gunicorn with two workers."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from dashboard.storage import Library
from iondiff_core.io import write_xdatcar
from iondiff_core.synthetic import make_synthetic

from .stack import ROOT, _stop, free_port, wait_http


def browser():
    from tests.conftest import pytest_setup_options

    return webdriver.Chrome(options=pytest_setup_options())


def until(driver, condition, timeout=60):
    WebDriverWait(driver, timeout, ignored_exceptions=(Exception,)).until(lambda _: condition())


def text(driver, css):
    return driver.execute_script(f"var e = document.querySelector('{css}'); return e ? e.innerText : '';")


def run_in_browser(driver, url, path, timestep="10"):
    driver.get(url + "/")
    until(driver, lambda: driver.find_element("css selector", "#trajectory-file"), 30)
    driver.find_element("css selector", "#trajectory-file").send_keys(str(path))
    until(driver, lambda: "uploaded" in text(driver, "#upload-status"), 60)
    # The page fills species, timestep and temperature from the file once it has read it:
    # type the timestep after that, or the page may clear it (a job with no timestep).
    until(driver, lambda: text(driver, "#species").strip(), 60)
    box = driver.find_element("css selector", "#timestep")
    box.send_keys(timestep)
    until(driver, lambda: box.get_attribute("value") == timestep, 10)
    driver.find_element("css selector", "#run-button").click()


def get(url):
    return urllib.request.urlopen(url, timeout=10).status


def library_is_consistent(data):
    """Every entry of the library has its files: no half-written result."""
    from pathlib import Path

    entries = Library(data / "library.sqlite").list()
    return entries, all(Path(e.result).exists() and Path(e.trajectory).exists() for e in entries)


def status(url, auth=None):
    """HTTP status of a GET, with optional Basic credentials (user, password)."""
    import base64
    import urllib.error

    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        return urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_health_endpoint_and_optional_password(stack):
    assert get(stack.url + "/health") == 200 and get(stack.url + "/") == 200  # no password: open
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**stack.env, "IONDIFF_PASSWORD": "s3cret", "IONDIFF_USER": "lab"}
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "app:server"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_http(url + "/health")  # the health endpoint stays open for the container HEALTHCHECK
        assert status(url + "/") == 401
        assert status(url + "/_dash-layout") == 401 and status(url + "/library") == 401
        assert status(url + "/", ("lab", "wrong")) == 401 and status(url + "/", ("other", "s3cret")) == 401
        assert status(url + "/", ("lab", "s3cret")) == 200 and status(url + "/_dash-layout", ("lab", "s3cret")) == 200
    finally:
        _stop(web)


def test_analysis_on_the_worker_seen_by_a_second_session(stack, tmp_path):
    syn = make_synthetic(n_frames=1500, n_mobile=12, chain_sizes=(1, 2, 3), seed=5)
    xd = tmp_path / "XDATCAR_LiStack.gz"
    write_xdatcar(syn.trajectory, xd)
    first, second = browser(), browser()
    try:
        run_in_browser(first, stack.url, xd)
        until(first, lambda: "hops" in text(first, "#view-summary"), 120)
        assert "6 hops" in text(first, "#view-summary")
        second.get(stack.url + "/library")
        until(second, lambda: "LiStack" in text(second, "#library-table"), 30)
    finally:
        first.quit()
        second.quit()
    assert b"background_callback_" in (stack.data / "worker.log").read_bytes()  # it ran on the worker
    entries, ok = library_is_consistent(stack.data)
    assert ok and len(entries) == 1


def job_received(log_path, offset: int, timeout: float = 90) -> None:
    """Wait until the worker logs that it received an analysis job (after ``offset``)."""
    import re

    end = time.time() + timeout
    while not re.search(rb"Task background_callback_\w+\[[\w-]+\] received", log_path.read_bytes()[offset:]):
        assert time.time() < end, "the worker received no job"
        time.sleep(0.05)


def test_killed_worker_job_is_retried_and_the_app_keeps_serving(stack, tmp_path):
    """The worker process is killed while the analysis provably runs (just after the worker
    received it, and no library entry exists once the process is dead: the clustering is now
    too fast to wait for its progress on the page); Celery redelivers that same job (acks
    late), which completes: one entry, its hops shown."""
    import re

    import psutil

    syn = make_synthetic(n_frames=12000, n_mobile=48, grid=5, chain_sizes=(1, 2, 3, 4) * 3, seed=9)
    xd = tmp_path / "XDATCAR_LiKill.gz"
    write_xdatcar(syn.trajectory, xd)
    before = len(Library(stack.data / "library.sqlite").list())
    log_path = stack.data / "worker.log"
    offset = log_path.stat().st_size

    driver = browser()
    try:
        run_in_browser(driver, stack.url, xd)
        job_received(log_path, offset)
        victims = [psutil.Process(pid) for pid in stack.worker_children()]
        assert victims, "the worker has no pool process"
        for p in victims:
            p.kill()  # the process running the job dies mid-clustering
        psutil.wait_procs(victims, timeout=10)
        # Dead before it stored anything: the kill hit a running job, not a finished one.
        entries, ok = library_is_consistent(stack.data)
        assert ok and len(entries) == before, "the job had finished before its worker was killed"
        # The app keeps serving other users meanwhile, and nothing half-written appears
        # (the redelivered job may finish quickly: finished clustering blocks are kept).
        for _ in range(5):
            assert get(stack.url + "/health") == 200 and get(stack.url + "/library") == 200
            entries, ok = library_is_consistent(stack.data)
            assert ok and len(entries) in (before, before + 1)
            time.sleep(0.5)
        until(driver, lambda: "hops" in text(driver, "#view-summary"), 240)
    finally:
        driver.quit()
    # The worker reported the lost job, and the same job (task id) was delivered again and succeeded.
    log = log_path.read_bytes()[offset:].decode(errors="replace")
    assert "WorkerLostError" in log
    ids = re.findall(r"Task background_callback_\w+\[([0-9a-f-]+)\] received", log)
    again = {t for t in ids if ids.count(t) >= 2}
    assert again, f"the killed job was not redelivered (deliveries: {ids})"
    assert any(re.search(rf"\[{t}\] succeeded", log) for t in again)
    entries, ok = library_is_consistent(stack.data)
    assert ok and len(entries) == before + 1


def test_job_whose_worker_keeps_dying_is_reported_failed(stack, tmp_path):
    """A job that kills its worker process every time is tried a bounded number of times
    (IONDIFF_MAX_ATTEMPTS), then reported failed on the page, not redelivered forever."""
    syn = make_synthetic(n_frames=8000, n_mobile=48, grid=5, chain_sizes=(1, 2, 3, 4) * 2, seed=13)
    xd = tmp_path / "XDATCAR_LiDies.gz"
    write_xdatcar(syn.trajectory, xd)
    before = len(Library(stack.data / "library.sqlite").list())
    stack.restart_worker(IONDIFF_MAX_ATTEMPTS="1")
    driver = browser()
    try:
        log_path = stack.data / "worker.log"
        offset = log_path.stat().st_size
        run_in_browser(driver, stack.url, xd)
        job_received(log_path, offset)
        for pid in stack.worker_children():
            os.kill(pid, signal.SIGKILL)
        until(driver, lambda: "worker process died" in text(driver, "#run-error"), 60)
        assert driver.execute_script("return document.querySelector('#run-button').disabled") is False
        assert get(stack.url + "/health") == 200 and get(stack.url + "/library") == 200
    finally:
        driver.quit()
        stack.restart_worker()
    entries, ok = library_is_consistent(stack.data)
    assert ok and len(entries) == before
    assert "JobKeepsDying" in (stack.data / "worker.log").read_text(errors="replace")


def test_batch_cli_through_the_workers_matches_local(stack, tmp_path):
    for k, temp in enumerate((500, 700)):
        run = stack.sims / f"LiB_{temp}K"
        run.mkdir()
        write_xdatcar(make_synthetic(n_frames=1200, n_mobile=8, chain_sizes=(1, 2), seed=k).trajectory, run / "XDATCAR.gz")
        (run / "INCAR").write_text(f"POTIM = 2\nNBLOCK = 5\nTEBEG = {temp}\n")
    out = {}
    for mode in ("local", "celery"):
        out[mode] = stack.data / f"batch-{mode}"
        cmd = [sys.executable, "-m", "dashboard", "batch", str(stack.sims), "--out-dir", str(out[mode]), "-q"]
        r = subprocess.run(cmd + (["--celery"] if mode == "celery" else ["--jobs", "1"]), cwd=ROOT, env=stack.env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    rows = {m: {r["name"]: r for r in csv.DictReader(open(out[m] / "summary.csv"))} for m in out}
    assert set(rows["local"]) == set(rows["celery"]) and len(rows["local"]) == 2
    for name in rows["local"]:
        assert rows["local"][name]["n_hops"] == rows["celery"][name]["n_hops"]
        assert rows["local"][name]["D_tracer_cm2_s"] == rows["celery"][name]["D_tracer_cm2_s"]
    assert json.loads((out["celery"] / "cross_simulation.json").read_text())["analysed"] == 2


def test_load_script_against_the_stack(stack, capsys):
    """benchmarks/load_test.py (all HTTP: upload, signed background-callback handles polled
    across both gunicorn workers, page loads) runs clean on a small bounded load."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("load_test", ROOT / "benchmarks" / "load_test.py")
    load_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load_test)
    stats = load_test.run(stack.url, n_analyses=2, n_pages=40, concurrency=4, max_seconds=90, ions=12, frames=1500)
    assert len(stats["ana"]) == 2 and len(stats["page"]) == 40, capsys.readouterr().out
    assert not stats["ana_err"] and not stats["page_err"]
