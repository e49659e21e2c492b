"""Benchmark of the XDATCAR reader: time and peak memory against naive readers.

Generates XDATCARs in VASP's own format (``%12.8f`` columns) in a temporary folder
(deleted afterwards):

* a large one, default 400 atoms x 20,000 frames (~300 MB), read plain and gzipped by
  ``iondiff_core.io.read_xdatcar`` only;
* a small one, default 200 atoms x 2,000 frames (~15 MB), read by every reader: ours,
  IonDiff 1.6's ``common_library.read_XDATCAR`` (``readlines`` + ``line.split()``), a
  naive ``np.array([l.split() for l in lines])``, and ASE's
  ``ase.io.read(..., index=':')``.

Each read runs in a fresh subprocess so the peak resident memory (``ru_maxrss``) is its
own; the table shows the peak growth over the process after imports, and that peak as
a multiple of the final positions array (T x N x 3 float64). Timings are wall-clock
and vary with machine load.

Usage::

    python benchmarks/bench_io.py [--atoms 400] [--frames 20000] [--small-frames 2000] [--no-gz]
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def generate(path: Path, n_atoms: int, n_frames: int, seed: int = 0) -> int:
    """Write a fixed-cell VASP 5 XDATCAR with random-walk positions; return its size in bytes."""
    rng = np.random.default_rng(seed)
    species, counts = ["Li", "P", "S"], [n_atoms // 2, n_atoms // 8, n_atoms - n_atoms // 2 - n_atoms // 8]
    head = (
        "bench\n           1\n    12.000000    0.000000    0.000000\n"
        "     0.000000   12.000000    0.000000\n     0.000000    0.000000   12.000000\n"
        f"   {'   '.join(species)}\n   {'   '.join(map(str, counts))}\n"
    )
    fmt = "%12.8f%12.8f%12.8f\n" * n_atoms
    x = rng.random((n_atoms, 3))
    with open(path, "w") as f:
        f.write(head)
        for t in range(n_frames):
            x = (x + rng.normal(0, 0.002, x.shape)) % 1.0
            f.write(f"Direct configuration= {t + 1:5d}\n")
            f.write(fmt % tuple(x.ravel()))
    return path.stat().st_size


_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np
kind, path = sys.argv[1], sys.argv[2]
if kind == "ours":
    from iondiff_core.io import read_xdatcar
    import pandas  # noqa: F401  (import cost is not parse cost)
elif kind == "iondiff":
    from IonDiff import common_library
elif kind == "ase":
    import ase.io
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if kind == "ours":
    tr = read_xdatcar(path)
    shape = tr.positions_frac.shape
elif kind == "iondiff":
    import os
    cell, n, comp, conc, coords = common_library.read_XDATCAR(os.path.dirname(path))
    shape = coords.shape
elif kind == "naive":
    with open(path) as f:
        lines = f.readlines()
    n = sum(int(c) for c in lines[6].split())
    coords = np.array([l.split() for l in lines[7:] if not l.startswith("Direct")], dtype=float).reshape(-1, n, 3)
    shape = coords.shape
elif kind == "ase":
    frames = ase.io.read(path, index=":", format="vasp-xdatcar")
    coords = np.array([a.get_scaled_positions() for a in frames])
    shape = coords.shape
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(seconds=dt, shape=list(shape), rss_peak_MB=(peak - base) / 1024)))
"""


def run(kind: str, path: Path, timeout: float = 3600) -> dict:
    code = _CHILD.format(root=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code, kind, str(path)], capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def row(label: str, size: int, r: dict) -> str:
    if "error" in r:
        return f"| {label:<42} | {size / 1e6:8.1f} | {'failed: ' + r['error'][:60]} |"
    t, n, three = r["shape"]
    arr_mb = t * n * 3 * 8 / 2**20
    return (
        f"| {label:<42} | {size / 1e6:8.1f} | {r['seconds']:8.2f} | {size / 1e6 / r['seconds']:7.0f} | "
        f"{r['rss_peak_MB']:8.0f} | {arr_mb:7.0f} | {r['rss_peak_MB'] / arr_mb:5.1f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--atoms", type=int, default=400)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--small-atoms", type=int, default=200)
    ap.add_argument("--small-frames", type=int, default=2000)
    ap.add_argument("--no-gz", action="store_true", help="skip the gzipped large file")
    ap.add_argument("--skip-ase", action="store_true")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_io_"))
    try:
        rows = []
        big = tmp / "big" / "XDATCAR"
        big.parent.mkdir()
        t0 = time.perf_counter()
        size_big = generate(big, args.atoms, args.frames)
        print(f"generated {big} ({size_big / 1e6:.0f} MB, {args.atoms} atoms x {args.frames} frames) "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
        rows.append(row(f"ours, plain ({args.atoms}x{args.frames})", size_big, run("ours", big)))
        if not args.no_gz:
            gz = tmp / "big" / "XDATCAR.gz"
            with open(big, "rb") as fi, gzip.open(gz, "wb", compresslevel=1) as fo:
                shutil.copyfileobj(fi, fo, 16 << 20)
            rows.append(row(f"ours, gzip ({gz.stat().st_size / 1e6:.0f} MB on disk)", size_big, run("ours", gz)))
        big.unlink()

        small = tmp / "small" / "XDATCAR"
        small.parent.mkdir()
        size_small = generate(small, args.small_atoms, args.small_frames, seed=1)
        label = f"({args.small_atoms}x{args.small_frames})"
        rows.append(row(f"ours {label}", size_small, run("ours", small)))
        rows.append(row(f"IonDiff 1.6 read_XDATCAR {label}", size_small, run("iondiff", small)))
        rows.append(row(f"naive np.array(split) {label}", size_small, run("naive", small)))
        if not args.skip_ase:
            rows.append(row(f"ase.io.read(index=':') {label}", size_small, run("ase", small)))

        print()
        print(
            "| reader                                     | text MB  | time s   |  MB/s   | peak RSS | array  | peak/ |"
        )
        print(
            "|                                            |          |          |         | +MB      | MB     | array |"
        )
        print("|" + "|".join("-" * w for w in (44, 10, 10, 9, 10, 8, 7)) + "|")
        for r in rows:
            print(r)
        print(
            "\npeak RSS +MB: growth of the process's peak resident memory during the read (ru_maxrss, includes "
            "pandas' C buffers);\narray: the final positions (T x N x 3 float64); peak/array: their ratio."
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
