"""Redis killed and restarted in the middle of a job (issue 11): the page keeps showing the
job as running (no failure), the job's result reaches the library and the page, the worker
takes the next job, and the jobs queued before the restart are not lost."""

import json
import time
import urllib.request

from celery import Celery

from dashboard.storage import Library
from iondiff_core.io import write_xdatcar
from iondiff_core.synthetic import make_synthetic

from .test_stack import browser, run_in_browser, text, until


def queued(redis_url: str) -> set[str]:
    """Ids of the jobs waiting in Redis' queue (the clustering's block jobs among them)."""
    import redis

    return {json.loads(m)["headers"]["id"] for m in redis.Redis.from_url(redis_url).lrange("celery", 0, -1)}


def unacked(redis_url: str) -> int:
    """Jobs delivered to a worker and not acknowledged yet (kombu's Redis transport)."""
    import redis

    return redis.Redis.from_url(redis_url).hlen("unacked")


def test_redis_restart_mid_job_loses_nothing(stack, tmp_path):
    # Large enough that the analysis outlasts the restart (the clustering got 5x faster).
    syn = make_synthetic(n_frames=36000, n_mobile=96, grid=5, chain_sizes=(1, 2, 3, 4) * 3, seed=21)
    running = tmp_path / "XDATCAR_LiRestart.gz"
    write_xdatcar(syn.trajectory, running)
    later = []
    for k in range(2):  # two small runs queued behind it, straight to the broker
        path = stack.sims / f"XDATCAR_LiQueued{k}.gz"
        write_xdatcar(make_synthetic(n_frames=1200, n_mobile=8, chain_sizes=(1, 2), seed=30 + k).trajectory, path)
        later.append(path)
    client = Celery("test-client", broker=stack.env["REDIS_URL"], backend=stack.env["REDIS_URL"])
    client.conf.broker_connection_retry_on_startup = True
    driver = browser()
    try:
        run_in_browser(driver, stack.url, running)
        until(driver, lambda: "clustering ion" in text(driver, "#progress-text") or text(driver, "#run-error"), 90)
        assert text(driver, "#run-error") == "", text(driver, "#run-error")
        jobs = [
            client.send_task("iondiff.analyse_into_library", args=[str(p), {"species": "Li"}, 10.0, None, p.name.split(".")[0]])
            for p in later
        ]
        until(driver, lambda: {j.id for j in jobs} <= queued(stack.env["REDIS_URL"]), 10)  # behind the running job
        assert "hops" not in text(driver, "#view-summary")  # still running when Redis goes
        stack.restart_redis(down_s=3)  # SIGKILL: no clean shutdown
        # After the restart the page shows the job as running (or, once it ends, its result), never as failed.
        for _ in range(6):
            assert text(driver, "#run-error") == ""
            finished = "hops" in text(driver, "#view-summary")
            assert finished or driver.execute_script("return document.querySelector('#run-button').disabled") is True
            assert urllib.request.urlopen(stack.url + "/health", timeout=10).status == 200
            time.sleep(0.5)
        # The running job's result reaches the library and the page.
        until(driver, lambda: "hops" in text(driver, "#view-summary") or text(driver, "#run-error"), 120)
        assert text(driver, "#run-error") == "" and "hops" in text(driver, "#view-summary")
        # The worker takes the next jobs, queued before the restart: nothing was lost.
        ids = [job.get(timeout=90) for job in jobs]
        # Every job was acknowledged: none is left to be delivered again after the
        # visibility timeout (a second run of a finished job).
        until(driver, lambda: unacked(stack.env["REDIS_URL"]) == 0, 30)
    finally:
        driver.quit()
        client.close()
    names = sorted(e.name for e in Library(stack.data / "library.sqlite").list())
    assert len(names) == 3 and all(n in " ".join(names) for n in ("LiRestart", "LiQueued0", "LiQueued1")), names
    assert len(set(ids)) == 2
    # The restart really hit both: the worker lost its broker, the web's polls found no Redis.
    assert "Connection to broker lost" in (stack.data / "worker.log").read_text(errors="replace")
    assert "Redis unreachable" in (stack.data / "web.log").read_text(errors="replace")
