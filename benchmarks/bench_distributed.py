"""One trajectory's clustering over Celery workers: time with 1 and 2 workers, against the
local sequential run (the baseline, in the same run), and a check that the results are
identical bit for bit.

Starts redis-server and the Celery workers of docker-compose.yml on loopback (see
tests/deploy/stack.py). This process only sends the ion blocks and assembles them
(``CeleryBlockMap(help=False)``): all the k-means runs on the workers. Each measurement
uses its own stage store, so no block is reused from the previous one.

    python benchmarks/bench_distributed.py --ions 64 --frames 8000
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iondiff_core.centres import cluster_ions, write_ion_major  # noqa: E402
from iondiff_core.parameters import Parameters  # noqa: E402
from iondiff_core.synthetic import make_synthetic  # noqa: E402
from iondiff_core.trajectory import unwrap  # noqa: E402
from tests.deploy.stack import running_stack  # noqa: E402


def identical(a, b) -> bool:
    return all(
        np.array_equal(p.ks, q.ks) and np.array_equal(p.silhouette, q.silhouette)
        and all(np.array_equal(u, v) for u, v in zip(p.centres, q.centres))
        for p, q in zip(a.ions, b.ions)
    ) and len(a.ions) == len(b.ions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ions", type=int, default=64)
    ap.add_argument("--frames", type=int, default=8000)
    ap.add_argument("--block-ions", type=int, default=4, help="ions per block (default 4: 16 blocks of 64 ions)")
    args = ap.parse_args()
    if not shutil.which("redis-server"):
        sys.exit("redis-server is not installed")
    syn = make_synthetic(n_frames=args.frames, n_mobile=args.ions, grid=5, chain_sizes=(1, 2, 3, 4) * 4, seed=1)
    t = syn.trajectory
    atoms = t.indices("Li")
    x = unwrap(t, atoms)
    params = Parameters()
    print(f"{args.ions} ions x {args.frames} frames, blocks of {args.block_ions} ions")
    t0 = time.perf_counter()
    local = cluster_ions(x, atoms, params, t.timestep_fs)
    base = time.perf_counter() - t0
    print(f"local, one process:      {base:7.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "sims").mkdir()
        (tmp / "data").mkdir()
        with running_stack(tmp / "data", tmp / "sims", web_workers=1) as stack:
            os.environ["REDIS_URL"] = stack.env["REDIS_URL"]  # before the Celery app is imported
            from dashboard.celery_app import CeleryBlockMap, celery_app

            for workers in (1, 2):
                if workers == 2:
                    stack.start_worker(1, "worker2")
                store = tmp / "data" / "stages" / f"run-{workers}"
                store.mkdir(parents=True)
                write_ion_major(x, store / "positions.npy")
                t0 = time.perf_counter()
                got = cluster_ions(str(store / "positions.npy"), atoms, params, t.timestep_fs,
                                   map_blocks=CeleryBlockMap(store, help=False), block_ions=args.block_ions)
                dt = time.perf_counter() - t0
                print(f"Celery, {workers} worker(s):     {dt:7.2f} s   ({base / dt:.2f}x the local run)   "
                      f"identical to local: {identical(local, got)}")
                gc.collect()  # the jobs' handles unsubscribe from Redis now, while it runs
            celery_app.backend.result_consumer.stop()


if __name__ == "__main__":
    main()
