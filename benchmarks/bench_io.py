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

With ``--formats`` it benchmarks the other streaming readers instead (LAMMPS dump,
extxyz, vasprun.xml, H5MD, ASE .traj, and the XDATCAR for reference) on generated NPT
runs (a triclinic cell that changes every frame, 20 % Li):

* speed: our fast path against ASE (``ase.io.read(index=':')``) on the same file, in
  MB/s and frames/s, with the ratio;
* memory: a larger file read mobile-only as float32 (``keep='mobile',
  dtype=np.float32``); the peak traced by ``tracemalloc`` during the read as a
  multiple of the float32 positions of the mobile ions (goal <= 2), and the growth of
  the peak RSS over the same read.

Usage::

    python benchmarks/bench_io.py [--atoms 400] [--frames 20000] [--small-frames 2000] [--no-gz]
    python benchmarks/bench_io.py --formats [--fmt-atoms 400] [--fmt-frames 400] [--mem-atoms 500] [--mem-frames 4000]
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


# --------------------------------------------------------------------------- other formats
def npt_walk(n_atoms: int, n_frames: int, seed: int = 0, li_fraction: float = 0.2):
    """Species, unwrapped fractional positions (T, N, 3) and triclinic cells (T, 3, 3) Å."""
    rng = np.random.default_rng(seed)
    n_li = int(n_atoms * li_fraction)
    species = ["Li"] * n_li + ["P"] * (n_atoms // 10) + ["S"] * (n_atoms - n_li - n_atoms // 10)
    base = np.array([[20.0, 0.0, 0.0], [2.0, 21.0, 0.0], [-1.0, 1.0, 22.0]])
    cells = base[None] * (1 + 0.01 * rng.standard_normal((n_frames, 1, 1)))
    steps = rng.normal(0, 0.004, (n_frames, n_atoms, 3))
    steps[:, :n_li] *= 5
    u = rng.random((n_atoms, 3)) + np.cumsum(steps, axis=0)
    return species, u, cells


def write_formats(folder: Path, n_atoms: int, n_frames: int, which: tuple[str, ...], seed: int = 0, li_fraction=0.2) -> dict:
    """Write the run in each format of ``which``; return {format: path}."""
    species, u, cells = npt_walk(n_atoms, n_frames, seed, li_fraction)
    types = {"Li": 1, "P": 2, "S": 3}
    out = {}
    img = np.floor(u)
    w = u - img
    if "lammps" in which:
        p = out["lammps"] = folder / "dump.lammpstrj"
        ids = np.arange(1, n_atoms + 1)
        ty = np.array([types[s] for s in species])
        with open(p, "w") as f:
            for t in range(n_frames):
                (lx, _, _), (xy, ly, _), (xz, yz, lz) = cells[t]
                f.write(f"ITEM: TIMESTEP\n{t * 10}\nITEM: NUMBER OF ATOMS\n{n_atoms}\nITEM: BOX BOUNDS xy xz yz pp pp pp\n")
                f.write(f"{min(0, xy, xz, xy + xz)} {lx + max(0, xy, xz, xy + xz)} {xy}\n{min(0, yz)} {ly + max(0, yz)} {xz}\n0 {lz} {yz}\n")
                f.write("ITEM: ATOMS id type xs ys zs ix iy iz\n")
                block = np.column_stack([ids, ty, w[t], img[t]])
                f.write(("%d %d %.7f %.7f %.7f %d %d %d\n" * n_atoms) % tuple(block.ravel()))
    if "extxyz" in which:
        p = out["extxyz"] = folder / "md.extxyz"
        with open(p, "w") as f:
            for t in range(n_frames):
                lat = " ".join(f"{x:.8f}" for x in cells[t].ravel())
                f.write(f'{n_atoms}\nLattice="{lat}" Properties=species:S:1:pos:R:3 time={t * 2.0} pbc="T T T"\n')
                cart = w[t] @ cells[t]
                f.write("".join(f"{s} {x:.8f} {y:.8f} {z:.8f}\n" for s, (x, y, z) in zip(species, cart)))
    if "vasprun" in which:
        p = out["vasprun"] = folder / "vasprun.xml"
        rc = "".join(f"<rc><c>{s}</c><c>{types[s]}</c></rc>\n" for s in species)
        en = '<energy><i name="e_fr_energy"> -1.0 </i><i name="e_wo_entrp"> -1.0 </i><i name="e_0_energy"> -1.0 </i></energy>'
        with open(p, "w") as f:
            f.write('<?xml version="1.0" encoding="ISO-8859-1"?>\n<modeling>\n<incar>\n<i name="IBRION" type="int"> 0</i>\n'
                    '<i name="POTIM"> 2.0</i>\n<i name="TEBEG"> 600.0</i>\n</incar>\n'
                    '<kpoints>\n<varray name="kpointlist" >\n<v> 0.0 0.0 0.0 </v>\n</varray>\n'
                    '<varray name="weights" >\n<v> 1.0 </v>\n</varray>\n</kpoints>\n')
            f.write(f'<atominfo>\n<atoms> {n_atoms} </atoms>\n<types> 3 </types>\n<array name="atoms" >\n<set>\n{rc}</set>\n</array>\n</atominfo>\n')
            init = "".join("<v> %.8f %.8f %.8f </v>\n" % tuple(v) for v in cells[0])
            f.write(f'<structure name="initialpos" >\n<crystal>\n<varray name="basis" >\n{init}</varray>\n</crystal>\n'
                    f'<varray name="positions" >\n' + ("<v> %.8f %.8f %.8f </v>\n" * n_atoms) % tuple(w[0].ravel())
                    + "</varray>\n</structure>\n")
            for t in range(n_frames):
                basis = "".join("<v> %.8f %.8f %.8f </v>\n" % tuple(v) for v in cells[t])
                pos = ("<v> %.8f %.8f %.8f </v>\n" * n_atoms) % tuple(w[t].ravel())
                forces = "<v> 0.0 0.0 0.0 </v>\n" * n_atoms
                f.write(f'<calculation>\n<scstep>{en}</scstep>\n<structure>\n<crystal>\n<varray name="basis" >\n{basis}</varray>\n'
                        f'</crystal>\n<varray name="positions" >\n{pos}</varray>\n</structure>\n'
                        f'<varray name="forces" >\n{forces}</varray>\n{en}\n</calculation>\n')
            f.write("</modeling>\n")
    if "h5md" in which:
        import h5py

        p = out["h5md"] = folder / "md.h5md"
        with h5py.File(p, "w") as f:
            g = f.create_group("particles/all")
            v = g.create_dataset("position/value", data=np.einsum("tnj,tjk->tnk", w, cells), chunks=(min(n_frames, 64), n_atoms, 3))
            v.attrs["unit"] = "Angstrom"
            g.create_dataset("position/time", data=np.arange(n_frames) * 0.002).attrs["unit"] = "ps"
            g.create_dataset("image/value", data=img.astype(np.int32))
            g.create_dataset("box/edges/value", data=cells)
            g.create_dataset("species", data=np.array([types[s] for s in species], dtype=np.int32))
    if "traj" in which:
        import ase
        from ase.io import Trajectory as AseTrajectory

        p = out["traj"] = folder / "md.traj"
        with AseTrajectory(str(p), "w") as tw:
            for t in range(n_frames):
                tw.write(ase.Atoms(species, scaled_positions=w[t], cell=cells[t], pbc=True))
    if "xdatcar" in which:
        sys.path.insert(0, str(ROOT))
        from iondiff_core.io import write_xdatcar
        from iondiff_core.trajectory import Trajectory

        out["xdatcar"] = write_xdatcar(Trajectory(w, cells, species), folder / "XDATCAR")
    return out


_FMT_CHILD = r"""
import json, resource, sys, time, tracemalloc
sys.path.insert(0, {root!r})
import numpy as np
mode, fmt, path = sys.argv[1], sys.argv[2], sys.argv[3]
from iondiff_core.io import read_trajectory
import pandas, ase.io, h5py  # noqa: F401  (import cost is not parse cost)
ase_fmt = dict(lammps="lammps-dump-text", extxyz="extxyz", vasprun="vasp-xml", traj="traj", xdatcar="vasp-xdatcar")
tmap = "1=Li,2=P,3=S" if fmt in ("lammps", "h5md") else None
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "mem":
    tracemalloc.start()
t0 = time.perf_counter()
if mode == "ase":
    frames = ase.io.read(path, index=":", format=ase_fmt[fmt])
    shape = (len(frames), len(frames[0]), 3)
    out_bytes = 0
else:
    kw = dict(keep="mobile", dtype=np.float32) if mode == "mem" else {{}}
    tr = read_trajectory(path, timestep_fs=1.0, type_map=tmap, **kw)
    shape = tr.positions_frac.shape
    out_bytes = tr.positions_frac.nbytes
dt = time.perf_counter() - t0
traced = tracemalloc.get_traced_memory()[1] if mode == "mem" else 0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(dict(seconds=dt, shape=list(shape), out_bytes=out_bytes, traced_peak=traced, rss_MB=(peak - base) / 1024)))
"""


def run_fmt(mode: str, fmt: str, path: Path, timeout: float = 600) -> dict:
    code = _FMT_CHILD.format(root=str(ROOT))
    try:
        out = subprocess.run([sys.executable, "-c", code, mode, fmt, str(path)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_formats(args) -> None:
    fmts = ("lammps", "extxyz", "vasprun", "h5md", "traj", "xdatcar")
    tmp = Path(tempfile.mkdtemp(prefix="bench_fmt_"))
    try:
        files = write_formats(tmp, args.fmt_atoms, args.fmt_frames, fmts)
        print(f"\nspeed: {args.fmt_atoms} atoms x {args.fmt_frames} frames, NPT triclinic; ours (all atoms, float64) vs ase.io.read(index=':')")
        print("| format  | file MB | ours s | ours MB/s | ours frames/s | ASE s  | ASE MB/s | ASE frames/s | ours/ASE speed |")
        print("|---------|---------|--------|-----------|---------------|--------|----------|--------------|----------------|")
        for fmt in fmts:
            p = files[fmt]
            mb = p.stat().st_size / 1e6
            ours = run_fmt("ours", fmt, p)
            ase_r = run_fmt("ase", fmt, p) if fmt != "h5md" and not args.skip_ase else {"error": "no ASE reader"}
            if "error" in ours:
                print(f"| {fmt:<7} | {mb:7.1f} | failed: {ours['error'][:80]}")
                continue
            line = f"| {fmt:<7} | {mb:7.1f} | {ours['seconds']:6.2f} | {mb / ours['seconds']:9.1f} | {args.fmt_frames / ours['seconds']:13.0f} |"
            if "error" in ase_r:
                line += f" {'-':>6} | {'-':>8} | {'-':>12} | {ase_r['error'][:14]:>14} |"
            else:
                line += (f" {ase_r['seconds']:6.2f} | {mb / ase_r['seconds']:8.1f} | {args.fmt_frames / ase_r['seconds']:12.0f} | "
                         f"{ase_r['seconds'] / ours['seconds']:13.1f}x |")
            print(line, flush=True)
        for p in files.values():
            p.unlink()

        mem = write_formats(tmp, args.mem_atoms, args.mem_frames, fmts, li_fraction=0.4)
        print(f"\nmemory: {args.mem_atoms} atoms (40 % Li) x {args.mem_frames} frames read with keep='mobile', dtype=float32")
        print("| format  | file MB | s      | mobile float32 MB | tracemalloc peak MB | peak / mobile | peak RSS +MB |")
        print("|---------|---------|--------|-------------------|---------------------|---------------|--------------|")
        for fmt in fmts:
            p = mem[fmt]
            r = run_fmt("mem", fmt, p)
            mb = p.stat().st_size / 1e6
            if "error" in r:
                print(f"| {fmt:<7} | {mb:7.1f} | failed: {r['error'][:80]}")
                continue
            o, pk = r["out_bytes"] / 2**20, r["traced_peak"] / 2**20
            print(f"| {fmt:<7} | {mb:7.1f} | {r['seconds']:6.2f} | {o:17.1f} | {pk:19.1f} | {pk / o:13.2f} | {r['rss_MB']:12.0f} |", flush=True)
        print("\npeak / mobile: tracemalloc's peak during the read over the final float32 mobile positions (goal <= 2);"
              "\npeak RSS +MB: growth of ru_maxrss over the read, which also counts the C libraries' buffers (pandas"
              "\ntokenizer, HDF5 chunk cache, expat); 0 means the read stayed under the high-water mark of the imports.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", action="store_true", help="benchmark the other formats' readers instead")
    ap.add_argument("--fmt-atoms", type=int, default=400)
    ap.add_argument("--fmt-frames", type=int, default=400)
    ap.add_argument("--mem-atoms", type=int, default=500)
    ap.add_argument("--mem-frames", type=int, default=4000)
    ap.add_argument("--atoms", type=int, default=400)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--small-atoms", type=int, default=200)
    ap.add_argument("--small-frames", type=int, default=2000)
    ap.add_argument("--no-gz", action="store_true", help="skip the gzipped large file")
    ap.add_argument("--skip-ase", action="store_true")
    args = ap.parse_args()
    if args.formats:
        bench_formats(args)
        return

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
