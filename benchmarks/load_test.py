"""Load test of the lab stack on loopback: N concurrent analyses and M page loads, all HTTP.

By default it starts redis-server, a Celery worker and ``gunicorn -w 2 app:server`` (the
commands of docker-compose.yml, see tests/deploy/stack.py) on free loopback ports; with
``--url`` it drives a stack that is already running on this machine (loopback only).

* An analysis is what a browser does: upload the trajectory to ``/upload``, load the
  page (for its signed ``endId``), fire the background callback of the Run button on
  ``/_dash-update-component``, and poll it with the signed job handles every second
  (Dash's default interval) until the library entry id comes back. The job runs on the
  Celery worker; polls land on either gunicorn worker, so the handles must verify in both.
* A page load is the HTML, ``/_dash-layout``, ``/_dash-dependencies`` and the routing
  callback that renders the page (the library page reads the SQLite library).

Every loop is bounded in count and in time (``--max-seconds``). Prints throughput,
latency percentiles and errors.

    python benchmarks/load_test.py --analyses 6 --pages 400 --concurrency 8
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iondiff_core.io import write_xdatcar  # noqa: E402
from iondiff_core.synthetic import make_synthetic  # noqa: E402

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class Client:
    """One browser's worth of HTTP against the dashboard."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None, timeout: float = 60):
        self.url, self.timeout = url.rstrip("/"), timeout
        self.headers = {"Authorization": "Basic " + base64.b64encode(":".join(auth).encode()).decode()} if auth else {}
        # A browser's cookies: the session an upload is bound to (and its upload token).
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())

    def request(self, path: str, body: bytes | None = None, content_type: str = "application/json", headers=None):
        headers = dict(self.headers, **({"Content-Type": content_type} if body is not None else {}), **(headers or {}))
        req = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST" if body is not None else "GET")
        with self.opener.open(req, timeout=self.timeout) as r:
            return r.status, r.read()

    def upload(self, path: Path) -> dict:
        """Post a file to /upload as dashboard/assets/upload.js does (with the session's upload token)."""
        tok = json.loads(self.request("/upload/token")[1])
        with open(path, "rb") as f:
            return json.loads(self.request(f"/upload?name={urllib.parse.quote(path.name)}", f.read(),
                                           "application/octet-stream", {tok["header"]: tok["token"]})[1])

    def end_id(self, page: str = "/") -> str:
        _, html = self.request(page)
        m = re.search(rb'<script id="_dash-config" type="application/json">(.*?)</script>', html, re.S)
        return json.loads(m.group(1))["end_id"]

    def callback(self, dep: dict, inputs: list, state: list, changed: str, query: dict) -> tuple[int, dict]:
        outputs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in dep["output"].strip(".").split("...")]
        body = {
            "output": dep["output"], "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": [{**i, "value": v} for i, v in zip(dep["inputs"], inputs)],
            "state": [{**s, "value": v} for s, v in zip(dep["state"], state)],
            "changedPropIds": [changed],
        }
        code, raw = self.request("/_dash-update-component?" + urllib.parse.urlencode(query), json.dumps(body).encode())
        return code, (json.loads(raw) if raw else {})

    def dependencies(self) -> list[dict]:
        return json.loads(self.request("/_dash-dependencies")[1])


def find_dep(deps: list[dict], output_part: str, input_id: str) -> dict:
    return next(d for d in deps if output_part in d["output"] and any(i["id"] == input_id for i in d["inputs"]))


def page_load(client: Client, deps: list[dict], path: str) -> None:
    end_id = client.end_id(path)
    client.request("/_dash-layout")
    client.request("/_dash-dependencies")
    route = find_dep(deps, "_pages_content.children", "_pages_location")  # Dash Pages router
    code, doc = client.callback(route, [path, ""], [], "_pages_location.pathname", {"endId": end_id})
    if code != 200 or "response" not in doc:
        raise RuntimeError(f"routing callback for {path}: HTTP {code}")


def analysis(client: Client, deps: list[dict], path: Path, deadline: float, poll_s: float = 1.0) -> tuple[str, int]:
    """Upload and analyse one trajectory as the page does; returns (entry id, polls)."""
    up = client.upload(path)
    if not up.get("ok"):
        raise RuntimeError(f"upload: {up.get('error')}")
    source = {"kind": "upload", "ref": up["ref"], "name": up["name"], "species": up.get("species")}
    end_id = client.end_id("/")
    run = find_dep(deps, "entry-store.data", "run-button")
    state = [source, "Li", 10, 600]
    _, handles = client.callback(run, [1], state, "run-button.n_clicks", {"endId": end_id})
    query = {"endId": end_id, "cacheKey": handles["cacheKey"], "job": handles["job"]}
    polls = 0
    while time.time() < deadline:
        time.sleep(poll_s)
        polls += 1
        code, doc = client.callback(run, [1], state, "run-button.n_clicks", query)
        if "response" in doc:
            out = doc["response"]
            entry = out.get("entry-store", {}).get("data")
            if not entry:
                raise RuntimeError(f"analysis failed: {json.dumps(out.get('run-error'))[:200]}")
            return entry, polls
    raise TimeoutError("no result before the time limit")


def percentiles(x) -> str:
    if not len(x):
        return "n/a"
    p = np.percentile(np.asarray(x) * 1000, [50, 90, 99])
    return f"p50 {p[0]:.0f} ms, p90 {p[1]:.0f} ms, p99 {p[2]:.0f} ms"


def run(url, n_analyses, n_pages, concurrency, max_seconds, ions, frames, auth=None) -> dict:
    client = Client(url, auth)
    deps = client.dependencies()
    work = Path(tempfile.mkdtemp(prefix="iondiff-load-"))
    files = []
    for k in range(n_analyses):  # distinct trajectories: the library would dedupe identical ones
        p = work / f"XDATCAR_Load{k}.gz"
        syn = make_synthetic(n_frames=frames, n_mobile=ions, grid=5 if ions > 32 else 4, chain_sizes=(1, 2, 3, 4), seed=100 + k)
        write_xdatcar(syn.trajectory, p)
        files.append(p)
    lock = threading.Lock()
    stats = {"ana": [], "ana_err": [], "page": [], "page_err": [], "polls": 0}
    t0 = time.perf_counter()
    deadline = time.time() + max_seconds

    def one_analysis(p: Path):
        s = time.perf_counter()
        try:
            _, polls = analysis(Client(url, auth), deps, p, deadline)
            with lock:
                stats["ana"].append(time.perf_counter() - s)
                stats["polls"] += polls
        except Exception as exc:  # noqa: BLE001 - counted and printed
            with lock:
                stats["ana_err"].append(f"analysis {p.name}: {type(exc).__name__}: {exc}")

    counter = iter(range(n_pages))

    def page_client():
        c = Client(url, auth)
        while time.time() < deadline:
            with lock:
                k = next(counter, None)
            if k is None:
                return
            s = time.perf_counter()
            try:
                page_load(c, deps, ("/", "/library")[k % 2])
                with lock:
                    stats["page"].append(time.perf_counter() - s)
                    stats["page_end"] = time.perf_counter()
            except Exception as exc:  # noqa: BLE001
                with lock:
                    stats["page_err"].append(f"page: {type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=n_analyses + concurrency) as pool:
        futs = [pool.submit(one_analysis, p) for p in files] + [pool.submit(page_client) for _ in range(concurrency)]
        for f in futs:
            f.result()
    wall = time.perf_counter() - t0
    a, pg = stats["ana"], stats["page"]
    page_span = max(stats.get("page_end", t0) - t0, 1e-9)
    print(f"stack: {url}   wall time {wall:.1f} s (limit {max_seconds:.0f} s)")
    print(f"analyses  : {len(a)} done of {n_analyses} ({ions} ions x {frames:,} frames each, upload + background callback "
          f"polled every 1 s, {stats['polls']} polls), errors {len(stats['ana_err'])}; "
          f"throughput {len(a) / wall * 60:.1f} per minute; latency {percentiles(a)}")
    print(f"page loads: {len(pg)} done of {n_pages} by {concurrency} concurrent clients (HTML + layout + dependencies + "
          f"routing callback), errors {len(stats['page_err'])}; throughput {len(pg) / page_span:.1f} per s over {page_span:.1f} s; latency {percentiles(pg)}")
    for e in (stats["ana_err"] + stats["page_err"])[:5]:
        print("  error:", e)
    return stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--analyses", type=int, default=6, help="concurrent analyses (default 6)")
    ap.add_argument("--pages", type=int, default=400, help="page loads in all (default 400)")
    ap.add_argument("--concurrency", type=int, default=8, help="concurrent page-loading clients (default 8)")
    ap.add_argument("--max-seconds", type=float, default=300, help="stop everything after this (default 300)")
    ap.add_argument("--ions", type=int, default=48, help="mobile ions per trajectory (default 48)")
    ap.add_argument("--frames", type=int, default=8000, help="frames per trajectory (default 8000)")
    ap.add_argument("--worker-concurrency", type=int, default=2, help="Celery worker processes of the started stack")
    ap.add_argument("--web-workers", type=int, default=2, help="gunicorn workers of the started stack")
    ap.add_argument("--url", help="a running stack on this machine (loopback only) instead of starting one")
    ap.add_argument("--user", default="lab", help="login of a password-protected stack (with --password)")
    ap.add_argument("--password", help="password of a protected stack")
    args = ap.parse_args(argv)
    for name in ("analyses", "pages", "concurrency", "ions", "frames"):
        if not 0 <= getattr(args, name) <= {"analyses": 64, "pages": 20000, "concurrency": 64, "ions": 512, "frames": 200000}[name]:
            ap.error(f"--{name} out of bounds")
    if not 0 < args.max_seconds <= 3600:
        ap.error("--max-seconds must be in (0, 3600]")
    auth = (args.user, args.password) if args.password else None
    bounded = dict(n_analyses=args.analyses, n_pages=args.pages, concurrency=args.concurrency,
                   max_seconds=args.max_seconds, ions=args.ions, frames=args.frames, auth=auth)
    if args.url:
        host = urllib.parse.urlsplit(args.url).hostname
        if host not in LOOPBACK:
            ap.error(f"--url must be a loopback address, not {host}")
        run(args.url, **bounded)
        return
    sys.path.insert(0, str(ROOT / "tests" / "deploy"))
    from stack import running_stack

    with tempfile.TemporaryDirectory() as d:
        data, sims = Path(d) / "data", Path(d) / "sims"
        data.mkdir()
        sims.mkdir()
        with running_stack(data, sims, web_workers=args.web_workers, worker_concurrency=args.worker_concurrency) as s:
            print(f"started: redis-server, celery worker --concurrency {args.worker_concurrency}, gunicorn -w {args.web_workers}")
            run(s.url, **bounded)


if __name__ == "__main__":
    main()
