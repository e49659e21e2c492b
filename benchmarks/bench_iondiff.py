"""IonDiff 1.6 against this engine on the same generated trajectories.

For each size it writes a planted-hop trajectory as XDATCAR + INCAR (mobile ions only:
IonDiff clusters every atom in the file), runs IonDiff's own classes
(``IonDiff.identify_diffusion.xdatcar(args).get_diffusion(args)``, its defaults:
K-means, K = 2..10, Euclidean silhouette threshold 0.7, distance_thd 0.5 Å here) and this
engine (defaults), and prints the time of each, the ratio, the hops each found and how
many match the planted ones (same ion, both boundaries within 3 frames).

IonDiff costs O(T^2) per ion and K (scikit-learn's silhouette), so for large sizes it
runs on the first ``--iondiff-ions`` ions only and its total is extrapolated linearly in
the number of ions (its ions are independent); the table says which figures are
measured and which extrapolated.

    python benchmarks/bench_iondiff.py            # default, ~10 minutes on 2 cores
    python benchmarks/bench_iondiff.py --quick    # a smoke run, < 1 minute
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
import tracemalloc
from argparse import Namespace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iondiff_core import pipeline  # noqa: E402
from iondiff_core.io import write_xdatcar  # noqa: E402
from iondiff_core.parameters import Parameters  # noqa: E402
from iondiff_core.synthetic import make_synthetic, match_hops  # noqa: E402
from iondiff_core.trajectory import Trajectory  # noqa: E402

TIMESTEP_FS = 10.0


def planted(n_ions: int, n_frames: int, seed: int = 0):
    grid = 4 if n_ions < 48 else 5
    chains = (1, 2, 3, 1, 2) * max(1, n_frames // 4000)
    return make_synthetic(n_frames=n_frames, n_mobile=n_ions, grid=grid, chain_sizes=chains, n_framework=0, seed=seed,
                          timestep_fs=TIMESTEP_FS)


def subset(traj: Trajectory, ions: int) -> Trajectory:
    return Trajectory(traj.positions_frac[:, :ions], traj.cells, traj.species[:ions], traj.timestep_fs, traj.temperature_K)


def run_iondiff(traj: Trajectory, folder: Path) -> tuple[float, list[tuple[int, int, int]]]:
    """Seconds and hops (ion, start, end) of IonDiff 1.6 on ``traj``."""
    from IonDiff.identify_diffusion import xdatcar

    folder.mkdir(parents=True, exist_ok=True)
    write_xdatcar(traj, folder / "XDATCAR")
    (folder / "INCAR").write_text(f"POTIM = {TIMESTEP_FS}\nNBLOCK = 1\n")
    args = Namespace(MD_path=str(folder), classifier="K-means", n_attempts=10, silhouette_thd=0.7, distance_thd=0.5, make_plot=False)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        hops = xdatcar(args).get_diffusion(args)
    dt = time.perf_counter() - t0
    # IonDiff's [particle, idx_0, idx_1]: idx_0 is the first transit frame, idx_1 the last
    # (its own expansion marks idx_0+1..idx_1); -1 means still in transit at the end.
    n = traj.n_frames
    return dt, [(int(p), int(a), int(b) if b >= 0 else n - 1) for p, a, b in hops]


def run_ours(traj: Trajectory) -> tuple[float, float, float, object]:
    """Seconds of the expensive stages, of the cheap stages, peak extra memory (bytes), result."""
    tracemalloc.start()
    t0 = time.perf_counter()
    session = pipeline.Session.open(traj, Parameters())
    t1 = time.perf_counter()
    result = session.result()
    t2 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return t1 - t0, t2 - t1, peak, result


def agreement(found, planted_hops) -> int:
    if not found:
        return 0
    ion, start, end = (np.array(x) for x in zip(*found))
    return len(match_hops(ion, start, end, planted_hops))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--iondiff-ions", type=int, default=4, help="ions IonDiff runs on at the largest sizes")
    args = ap.parse_args()
    if args.quick:
        sizes = [(16, 1000), (16, 2000)]
        full_iondiff_frames = 2000
    else:
        sizes = [(16, 2000), (16, 4000), (16, 8000), (16, 16000), (64, 2000), (64, 16000)]
        full_iondiff_frames = 4000
    print(f"{'ions':>4} {'frames':>6} | {'IonDiff s':>10} {'ours s':>7} {'(clust.':>7} {'cheap)':>6} {'ratio':>7} | "
          f"{'planted':>7} {'IonDiff hops/match':>18} {'ours hops/match':>15} {'ours=IonDiff':>12} | {'mem x pos':>9}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_ions, n_frames in sizes:
            syn = planted(n_ions, n_frames)
            traj = syn.trajectory
            pos_bytes = traj.positions_frac.nbytes
            t_exp, t_cheap, peak, res = run_ours(traj)
            ours = list(zip(res.hops.ion.tolist(), res.hops.start.tolist(), res.hops.end.tolist()))
            measured = n_ions if n_frames <= full_iondiff_frames else min(args.iondiff_ions, n_ions)
            t_id, id_hops = run_iondiff(subset(traj, measured), Path(tmp) / f"{n_ions}_{n_frames}")
            t_id_total = t_id * n_ions / measured
            planted_sub = [h for h in syn.hops if h.ion < measured]
            ours_sub = [h for h in ours if h[0] < measured]
            same = agreement(ours_sub, [Namespace(ion=i, start=s, end=e) for i, s, e in id_hops]) if id_hops else 0
            tag = "" if measured == n_ions else f"*{measured}"
            total = t_exp + t_cheap
            line = (f"{n_ions:>4} {n_frames:>6} | {t_id_total:>9.1f}{'e' if tag else ' '} {total:>7.2f} {t_exp:>7.2f} {t_cheap:>6.2f} "
                    f"{t_id_total / total:>6.0f}x | {len(planted_sub):>4}{tag:<3} {len(id_hops):>8}/{agreement(id_hops, planted_sub):<9} "
                    f"{len(ours_sub):>7}/{agreement(ours_sub, planted_sub):<7} {same:>12} | {(peak + pos_bytes) / pos_bytes:>8.1f}x")
            print(line, flush=True)
            rows.append((n_ions, n_frames, total))
    print("\nIonDiff s: 'e' = extrapolated from the ions marked *k (IonDiff ran on the first k ions; per-ion cost x ions);")
    print("hop columns then count those k ions only. mem x pos: peak memory of our analysis (tracemalloc) plus the positions")
    print("array, over the positions array (T x N x 3 float64). ours = clustering (once, cached) + cheap stages (every slider move).")
    for n in sorted({r[0] for r in rows}):
        pts = [(f, t) for i, f, t in rows if i == n]
        if len(pts) > 1:
            (f0, t0), (f1, t1) = pts[0], pts[-1]
            print(f"ours, {n} ions: {f1 / f0:.0f}x the frames cost {t1 / t0:.1f}x the time (linear scaling = {f1 / f0:.0f}x)")


if __name__ == "__main__":
    main()
