"""Load test of the lab stack on loopback: N concurrent analyses and M page loads.

Starts redis-server, a Celery worker and gunicorn (the commands of docker-compose.yml)
on free loopback ports, or uses --url with --redis-url of a running stack. Every loop
is bounded in count and time. Prints throughput, latency percentiles and errors.

    python benchmarks/load_test.py --analyses 6 --pages 300 --concurrency 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iondiff_core.io import write_xdatcar  # noqa: E402
from iondiff_core.synthetic import make_synthetic  # noqa: E402


def timed_get(url: str) -> tuple[float, str | None]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            r.read()
            err = None if r.status == 200 else f"HTTP {r.status}"
    except Exception as exc:  # noqa: BLE001 - counted as an error
        err = f"{type(exc).__name__}: {exc}"
    return time.perf_counter() - t0, err


def upload(url: str, path: Path) -> dict:
    import json

    req = urllib.request.Request(f"{url}/upload?name={path.name}", data=path.read_bytes(), method="POST")
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def percentiles(x) -> str:
    if not len(x):
        return "n/a"
    p = np.percentile(np.asarray(x) * 1000, [50, 90, 99])
    return f"p50 {p[0]:.0f} ms, p90 {p[1]:.0f} ms, p99 {p[2]:.0f} ms"


def run(url: str, data: Path, n_analyses: int, n_pages: int, concurrency: int, max_seconds: float) -> None:
    import os

    os.environ["REDIS_URL"] = os.environ.get("REDIS_URL", "")
    from dashboard.celery_app import analyse_into_library

    work = Path(tempfile.mkdtemp())
    files = []
    for k in range(n_analyses):
        p = work / f"XDATCAR_load{k}.gz"
        write_xdatcar(make_synthetic(n_frames=3000, n_mobile=24, grid=4, chain_sizes=(1, 2, 3, 4), seed=100 + k).trajectory, p)
        files.append(p)
    deadline = time.time() + max_seconds
    page_lat, page_err, ana_lat, ana_err = [], [], [], []
    lock = threading.Lock()
    t0 = time.perf_counter()

    def one_analysis(p: Path):
        s = time.perf_counter()
        try:
            up = upload(url, p)
            path = str(data / "uploads" / up["upload_id"] / up["name"])
            res = analyse_into_library.delay(path, {}, 10.0, 600.0, p.name)
            res.get(timeout=max(1.0, deadline - time.time()))
            with lock:
                ana_lat.append(time.perf_counter() - s)
        except Exception as exc:  # noqa: BLE001
            with lock:
                ana_err.append(f"{type(exc).__name__}: {exc}")

    def pages():
        paths = ("/", "/library", "/health", "/_dash-layout")
        k = 0
        while k < n_pages and time.time() < deadline:
            lat, err = timed_get(url + paths[k % len(paths)])
            with lock:
                (page_err if err else page_lat).append(err or lat)
            k += concurrency

    with ThreadPoolExecutor(max_workers=n_analyses + concurrency) as pool:
        futs = [pool.submit(one_analysis, p) for p in files] + [pool.submit(pages) for _ in range(concurrency)]
        for f in as_completed(futs):
            f.result()
    wall = time.perf_counter() - t0
    print(f"stack: {url}   wall time {wall:.1f} s (limit {max_seconds:.0f} s)")
    print(f"analyses  : {len(ana_lat)} done of {n_analyses} (24 ions x 3,000 frames each), errors {len(ana_err)}; "
          f"throughput {len(ana_lat) / wall * 60:.1f} per minute; latency {percentiles(ana_lat)}")
    print(f"page loads: {len(page_lat)} done by {concurrency} concurrent clients, errors {len(page_err)}; "
          f"throughput {len(page_lat) / wall:.1f} per s; latency {percentiles(page_lat)}")
    for e in (ana_err + page_err)[:5]:
        print("  error:", e)
    # Stop the result listener before the stack goes away (it would try to reconnect).
    analyse_into_library.app.backend.result_consumer.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--analyses", type=int, default=6)
    ap.add_argument("--pages", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-seconds", type=float, default=300)
    ap.add_argument("--worker-concurrency", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests" / "deploy"))
    from stack import running_stack

    import os

    with tempfile.TemporaryDirectory() as d:
        data, sims = Path(d) / "data", Path(d) / "sims"
        data.mkdir()
        sims.mkdir()
        with running_stack(data, sims, web_workers=2, worker_concurrency=args.worker_concurrency) as s:
            os.environ.update({k: s.env[k] for k in ("REDIS_URL", "IONDIFF_DATA")})
            run(s.url, data, args.analyses, args.pages, args.concurrency, args.max_seconds)


if __name__ == "__main__":
    main()
