"""Cost of the clustering stage at MLIP scale, on generated lattice random walks.

Three tables, each measured in one run:

1. Time per ion-frame against the number of sites each ion visits, the windowed
   clustering (default) against the whole-run clustering (``window_frames=0``,
   ``k_max_limit=60``: the engine before windows), with planted-hop precision and recall.
2. Time and peak memory (resident set size sampled every 5 ms, above the RSS with
   the input positions already in memory) of the clustering stage against ions x frames (10^6, 10^7 ion-frames; 10^8 with
   ``--huge``), with planted-hop precision and recall (goal >= 0.95).
3. This engine's whole analysis against GEMDAT 1.8's whole site analysis on
   ``../shared/data/real/LGPS_650K_Li_only`` (``pip install -r benchmarks/requirements.txt``),
   run alternately ``--repeats`` times (each ratio of two runs back to back), with the
   engine's time per stage.
4. ``--end-to-end`` (only): ``pipeline.analyze`` on generated XDATCAR and extxyz files
   (independent walkers, half as many S framework atoms as Li) of 10^6 and 10^7 ion-frames:
   wall time, peak RSS above the process's RSS before the call (while reading, unwrapping,
   clustering and fitting D; and over the whole analysis, groups and null model included),
   its ratio to the float32 positions of the mobile ions, planted-hop precision and recall; the default mobile-only
   float32 read against ``mobile_only=False`` (every atom, float64) on the same file. Each
   file is written, and each analysis run, in a fresh process, so none inherits another's heap.
   ``--sizes`` replaces the sizes, ``--huge`` adds 10^8 ion-frames (1000 x 100,000; the
   generator writes past 10^7 ion-frames through a memory-mapped .npy, a chunk at a time),
   ``--jobs`` sets the clustering's processes, ``--formats`` the files written.

Times per ion-frame are CPU seconds of the process (with one process; wall seconds with
more), because the benchmark machine is shared and wall time there is noisy.

The walker: each ion dwells at a lattice site (2.5 Å spacing) with Gaussian noise,
then hops in a straight transit of 6-14 frames to a new neighbouring site (+a, +b or
+c, so every site is new and ``n_sites`` sites are visited), evenly spread in time
with jitter. Frames 10 fs apart; clustering on 300 fs averages (the default).
Precision/recall: a found hop matches a planted one of the same ion when both
boundaries lie within 4 frames (:func:`iondiff_core.synthetic.match_hops`).

    python benchmarks/bench_scale.py            # about 4 minutes of CPU (one process)
    python benchmarks/bench_scale.py --quick    # smaller sizes, under a minute
    python benchmarks/bench_scale.py --huge     # adds 10^8 ion-frames (2.4 GB of positions)
    python benchmarks/bench_scale.py --peers    # only: this engine against GEMDAT 1.8 on LGPS_650K
    python benchmarks/bench_scale.py --end-to-end          # only: whole analyses of files, ~5 minutes
    python benchmarks/bench_scale.py --end-to-end --quick  # 10^6 ion-frames only
    python benchmarks/bench_scale.py --end-to-end --huge --jobs 2 --formats xdatcar  # adds 1000 x 100,000
    python benchmarks/bench_scale.py --transport    # only: van Hove pair budget and unwrap peak, ~1 minute

5. ``--transport`` (only): the van Hove function at the pipeline's 12 lags on a float32
   random walk (Li density 0.03 / Å^3, cubic cell), the default pair budget against all
   pairs (the engine before the budget), CPU seconds of each and their ratio, and the
   largest |difference| in units of the stated error of G_d; and the traced (tracemalloc)
   peak of unwrapping a float32 read, read positions included, kept beside the unwrapped
   copy (``unwrap``, the engine before) against unwrapped in its own buffer
   (``unwrap_in_place``), as a multiple of the float32 positions.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iondiff_core.centres import cluster_ions, select  # noqa: E402
from iondiff_core.hops import find_hops  # noqa: E402
from iondiff_core.parameters import Parameters  # noqa: E402
from iondiff_core.synthetic import match_hops  # noqa: E402

TIMESTEP_FS = 10.0
OLD = dict(window_frames=0, k_max_limit=60)  # the whole-run clustering, as before windows


def lattice_walk(n_ions: int, n_frames: int, n_sites: int, spacing_A: float = 2.5, vib_A: float = 0.15,
                 transit_frames: tuple[int, int] = (6, 14), seed: int = 0):
    """Unwrapped positions (T, N, 3) in Å of ions that each visit ``n_sites`` distinct sites,
    and the planted hops (objects with ``ion``, ``start``, ``end``: transit frames, inclusive)."""
    rng = np.random.default_rng(seed)
    n_hops = n_sites - 1
    t = np.arange(n_frames)
    pos = np.empty((n_frames, n_ions, 3))
    planted = []
    dwell = n_frames / n_sites
    if n_hops and dwell < 3 * transit_frames[1]:
        raise ValueError(f"{n_sites} sites in {n_frames} frames: dwells too short for the transits")
    for i in range(n_ions):
        steps = np.eye(3)[rng.integers(0, 3, n_hops)] * spacing_A
        sites = np.concatenate([np.zeros((1, 3)), np.cumsum(steps, axis=0)]) + rng.uniform(0, 20, 3)
        dur = rng.integers(transit_frames[0], transit_frames[1] + 1, n_hops)
        mid = ((np.arange(1, n_sites) + rng.uniform(-0.25, 0.25, n_hops)) * dwell).astype(int)
        start = mid - dur // 2
        # Knots: at the origin site on the frame before the transit, at the target after it.
        knot_t = np.stack([start - 1, start + dur], axis=1).ravel()
        knot_x = np.repeat(sites, 2, axis=0)[1:-1]
        for d in range(3):
            pos[:, i, d] = np.interp(t, knot_t, knot_x[:, d]) if n_hops else sites[0, d]
        planted += [SimpleNamespace(ion=i, start=int(s), end=int(s + n - 1)) for s, n in zip(start, dur)]
        pos[:, i, :] += rng.normal(scale=vib_A, size=(n_frames, 3))  # per ion: no second copy of all positions
    return pos, planted


class PeakRSS:
    """Peak resident set size (MB) above the one at entry, sampled every 5 ms in a thread
    (tracemalloc would slow the many small numpy allocations of the stage down twofold)."""

    def __enter__(self):
        self._proc = psutil.Process()
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        self.MB = (self.peak - self.base) / 1e6


def measure(x: np.ndarray, planted: list, params: Parameters, n_jobs: int = 1) -> dict:
    """Clustering stage: seconds, peak MB above its input; then hops: precision, recall, centres."""
    with PeakRSS() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        cl = cluster_ions(x, np.arange(x.shape[1]), params, TIMESTEP_FS, n_jobs=n_jobs)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = mem.MB
    cen = select(cl, x, params.silhouette_threshold, 2 * params.r_vib_A)
    h = find_hops(x, cen, params.r_vib_A, params.hop_rule, params.cloud_quantile).hops
    found = ~h.open_ended
    pairs = match_hops(h.ion[found], h.start[found], h.end[found], planted, tol=4)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        # CPU time of this process: the machine is shared, so wall time is noisy (1 process only).
        "us_per_ion_frame": (cpu if n_jobs == 1 else seconds) / x.shape[0] / x.shape[1] * 1e6,
        "peak_MB": peak,
        "precision": len(pairs) / found.sum() if found.sum() else float("nan"),
        "recall": len(pairs) / len(planted) if planted else float("nan"),
        "centres": float(np.mean(cen.k)),
    }


def fmt(v, spec=".2f"):
    return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def sites_table(frames: int, ions: int, sites: list[int], old_max_sites: int) -> None:
    print(f"\n## Time per ion-frame against sites visited per ion ({ions} ions x {frames} frames, 1 process)\n")
    print("| sites visited | new: µs / ion-frame | new / new at 1 site | new: centres per ion | new: P / R "
          "| old: µs / ion-frame | old / new | old: centres per ion | old: P / R |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = None
    for s in sites:
        x, planted = lattice_walk(ions, frames, s, seed=s)
        new = measure(x, planted, Parameters())
        base = base or new["us_per_ion_frame"]
        row = [str(s), fmt(new["us_per_ion_frame"]), fmt(new["us_per_ion_frame"] / base), fmt(new["centres"], ".1f"),
               f"{fmt(new['precision'], '.3f')} / {fmt(new['recall'], '.3f')}"]
        if s <= old_max_sites:
            old = measure(x, planted, Parameters(**OLD))
            row += [fmt(old["us_per_ion_frame"]), fmt(old["us_per_ion_frame"] / new["us_per_ion_frame"]),
                    fmt(old["centres"], ".1f"), f"{fmt(old['precision'], '.3f')} / {fmt(old['recall'], '.3f')}"]
        else:
            row += ["not run (see --old-max-sites)", "", "", ""]
        print("| " + " | ".join(row) + " |", flush=True)


def size_table(sizes: list[tuple[int, int]], frames_per_site: int, n_jobs: int) -> None:
    print(f"\n## Clustering stage against ions x frames (a hop every ~{frames_per_site} frames per ion, {n_jobs} process(es))\n")
    print("| ions | frames | ion-frames | positions (MB, float64) | wall seconds | µs / ion-frame | peak RSS above input (MB) "
          "| planted hops | precision | recall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ions, frames in sizes:
        x, planted = lattice_walk(ions, frames, max(1, frames // frames_per_site), seed=ions + frames)
        r = measure(x, planted, Parameters(), n_jobs)
        print(f"| {ions} | {frames} | {ions * frames:.0e} | {x.nbytes / 1e6:.0f} | {r['seconds']:.1f} | "
              f"{r['us_per_ion_frame']:.2f} | {r['peak_MB']:.0f} | {len(planted)} | {fmt(r['precision'], '.3f')} | "
              f"{fmt(r['recall'], '.3f')} |", flush=True)
        del x


LGPS_650K = ROOT.parent / "shared" / "data" / "real" / "LGPS_650K_Li_only"


def run_gemdat(xdatcar: Path, timestep_ps: float, species: str = "Li") -> tuple[int, float]:
    """GEMDAT 1.8's whole site analysis of an XDATCAR, its file reading included: the
    file through ASE (GEMDAT reads XDATCARs no other way), the Li density volume, its
    peaks as sites, the transitions between them and the jumps. (jumps, wall s)."""
    import io
    import tempfile

    import ase.io
    from gemdat import Jumps, Trajectory, Transitions
    from gemdat.volume import trajectory_to_volume
    from pymatgen.core import Element

    from iondiff_core.io.xdatcar import open_decompressed

    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "XDATCAR"
        with io.BufferedReader(open_decompressed(xdatcar)) as src:
            plain.write_bytes(src.read())  # decompression is not timed for either tool
        t0 = time.perf_counter()
        frames = ase.io.read(plain, index=":", format="vasp-xdatcar")
        coords = np.array([a.get_scaled_positions(wrap=True) for a in frames])
        traj = Trajectory(species=[Element(s) for s in frames[0].get_chemical_symbols()], coords=coords,
                          lattice=np.array(frames[0].cell), time_step=timestep_ps)
        sites = trajectory_to_volume(traj.filter(species), resolution=0.2).to_structure(specie=species)
        jumps = Jumps(transitions=Transitions.from_trajectory(trajectory=traj, sites=sites, floating_specie=species))
        return len(jumps.data), time.perf_counter() - t0


def _timed_analysis(folder: Path):
    """``pipeline.analyze`` of a folder, wall seconds per stage (from its progress reports) and in all."""
    from iondiff_core import pipeline

    seen: dict[str, float] = {}

    def progress(stage, fraction, message):
        seen.setdefault(stage, time.perf_counter())

    for memo in (pipeline._MEMO, pipeline._NEAREST):  # a repeat must not reuse the last run's null model
        memo._d.clear()
    t0 = time.perf_counter()
    r = pipeline.analyze(folder, Parameters(), progress=progress)
    t1 = time.perf_counter()
    marks = [(k, v) for k, v in seen.items()] + [("end", t1)]
    stages = {k: marks[i + 1][1] - v for i, (k, v) in enumerate(marks[:-1])}
    return r, t1 - t0, stages


def peers_table(repeats: int = 2) -> None:
    """This engine's whole analysis against GEMDAT's whole site analysis on LGPS_650K, run
    alternately ``repeats`` times (the machine is shared: each ratio is of back-to-back runs)."""
    import tempfile

    from iondiff_core.io.xdatcar import open_decompressed

    if not LGPS_650K.exists():
        print(f"{LGPS_650K} not found: peers table skipped")
        return
    print("\nLGPS_650K_Li_only (20 Li x 13,979 frames, 15 fs), whole runs, file reading included, wall seconds")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "LGPS_650K"
        folder.mkdir()
        with open_decompressed(next(LGPS_650K.glob("XDATCAR*"))) as src:
            (folder / "XDATCAR").write_bytes(src.read())
        (folder / "INCAR").write_text((LGPS_650K / "INCAR").read_text())
        ratios = []
        for rep in range(repeats):
            r, ours, stages = _timed_analysis(folder)
            parts = ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
            print(f"  run {rep + 1}: this engine (read, unwrap, clustering, transport, hops, groups, null model): {ours:6.2f} s, "
                  f"{len(r.hops)} hops ({parts})")
            try:
                jumps, gem = run_gemdat(folder / "XDATCAR", r.prep.trajectory.timestep_ps)
            except ImportError:
                print("  GEMDAT not installed (pip install -r benchmarks/requirements.txt)")
                return
            print(f"  run {rep + 1}: GEMDAT 1.8 (ASE read, density, sites, transitions, jumps):                  {gem:6.2f} s, {jumps} jumps")
            ratios.append(gem / ours)
        print(f"  GEMDAT / this engine, back-to-back pairs: {', '.join(f'{q:.2f}x' for q in ratios)}")


def _write_walkers(folder: str, kind: str, ions: int, frames: int, hops_per_ion: int, seed: int) -> list[tuple[int, int, int]]:
    """(In a child process.) Write independent walkers with ions // 2 S atoms as an XDATCAR
    (with INCAR) or an extxyz file; return the planted hops as (ion, start, end)."""
    from iondiff_core.io import write_xdatcar
    from iondiff_core.io.extxyz import write_extxyz
    from iondiff_core.synthetic import make_independent_walkers

    # Past 10^7 ion-frames the positions go to a memory-mapped .npy, a chunk at a time.
    big = ions * frames > 10_000_000
    npy = Path(folder) / "walkers.npy"
    s = make_independent_walkers(n_frames=frames, n_mobile=ions, hops_per_ion=hops_per_ion, n_framework=ions // 2, seed=seed,
                                 out=npy if big else None)
    if kind == "xdatcar":
        write_xdatcar(s.trajectory, Path(folder) / "XDATCAR", write_incar=True)
    else:
        write_extxyz(s.trajectory, Path(folder) / "md.extxyz")
    hops = [(h.ion, h.start, h.end) for h in s.hops]
    del s
    if big:
        npy.unlink()
    return hops


def _analyze_file(path: str, mobile_only: bool, n_jobs: int = 1) -> dict:
    """(In a child process.) ``pipeline.analyze`` of a file, as :meth:`Session.open` (read,
    unwrap, clustering, transport) then :meth:`Session.result` (hops, groups, null model):
    wall seconds, peak RSS above the RSS before the call (MB) during the first part and
    overall, the hops found and the bytes of the float32 mobile positions."""
    from iondiff_core.pipeline import Session

    with PeakRSS() as first:
        t0 = time.perf_counter()
        s = Session.open(path, Parameters(), timestep_fs=TIMESTEP_FS, mobile_only=mobile_only, n_jobs=n_jobs)
    with PeakRSS() as second:
        r = s.result()
        seconds = time.perf_counter() - t0
    h = r.hops
    keep = ~h.open_ended
    return {"seconds": seconds, "open_MB": first.MB, "peak_MB": (max(first.peak, second.peak) - first.base) / 1e6,
            "ion": h.ion[keep], "start": h.start[keep], "end": h.end[keep],
            "f32_MB": r.prep.positions_A.shape[0] * r.prep.positions_A.shape[1] * 12 / 1e6,
            "D": r.transport.tracer.D_cm2_s if r.transport else float("nan")}


def end_to_end_table(sizes: list[tuple[int, int]], old_up_to: int, n_jobs: int = 1, kinds=("xdatcar", "extxyz")) -> None:
    """Whole analyses of generated files, each in a fresh process (see the module docstring)."""
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")

    def child(fn, *a):
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            return pool.submit(fn, *a).result()

    print("\n## Whole analysis of a file (pipeline.analyze: read, unwrap, clustering, transport, hops, groups, null model;"
          f" {n_jobs} process(es) for the clustering; Li + half as many S)\n")
    print("| format | ions x frames | ion-frames | read | wall s | float32 Li positions (MB) "
          "| peak RSS: read to transport (MB) | / positions | peak RSS: whole analysis (MB) | / positions "
          "| planted hops | precision | recall | D_tracer (cm^2/s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for ions, frames in sizes:
        for kind in kinds:
            with tempfile.TemporaryDirectory() as tmp:
                planted = child(_write_walkers, tmp, kind, ions, frames, max(1, frames // 1000), ions + frames)
                ref = [SimpleNamespace(ion=i, start=a, end=b) for i, a, b in planted]
                path = tmp if kind == "xdatcar" else str(Path(tmp) / "md.extxyz")
                for mobile_only in (True, False) if ions * frames <= old_up_to else (True,):
                    r = child(_analyze_file, path, mobile_only, n_jobs)
                    pairs = match_hops(r["ion"], r["start"], r["end"], ref, tol=4)
                    how = "Li only, float32" if mobile_only else "all atoms, float64"
                    print(f"| {kind} | {ions} x {frames} | {ions * frames:.0e} | {how} | {r['seconds']:.1f} | {r['f32_MB']:.0f} | "
                          f"{r['open_MB']:.0f} | {r['open_MB'] / r['f32_MB']:.2f} | {r['peak_MB']:.0f} | "
                          f"{r['peak_MB'] / r['f32_MB']:.2f} | {len(ref)} | "
                          f"{fmt(len(pairs) / len(r['ion']) if len(r['ion']) else float('nan'), '.3f')} | "
                          f"{fmt(len(pairs) / len(ref), '.3f')} | {r['D']:.4g} |", flush=True)


def transport_table(sizes: list[tuple[int, int]]) -> None:
    from iondiff_core.transport import van_hove

    print("\n## van Hove distinct part: pair budget (default) against all pairs, 12 lags, 50 origins")
    print("| ions x frames | all pairs (s CPU) | budget (s CPU) | ratio | reference ions | max abs(diff)/error |")
    print("|---|---|---|---|---|---|")
    for n, t in sizes:
        rng = np.random.default_rng(0)
        L = (n / 0.03) ** (1 / 3)
        x = (rng.uniform(0, L, (1, n, 3)) + np.cumsum(rng.normal(scale=0.05, size=(t, n, 3)), axis=0)).astype(np.float32)
        cell = np.eye(3) * L
        lags = np.unique(np.linspace(0, (t - 1) // 2, 12).astype(int))
        c0 = time.process_time()
        full = van_hove(x, cell, 0.01, lags, max_pairs=1 << 62)
        c1 = time.process_time()
        part = van_hove(x, cell, 0.01, lags)
        c2 = time.process_time()
        ok = np.isfinite(full.distinct) & (part.distinct_err > 0)
        z = np.abs(part.distinct - full.distinct)[ok] / np.hypot(part.distinct_err, full.distinct_err)[ok]
        print(f"| {n} x {t} | {c1 - c0:.2f} | {c2 - c1:.2f} | {(c1 - c0) / (c2 - c1):.1f}x | "
              f"{part.n_reference_ions.min()} of {n} | {z.max():.2f} |", flush=True)
    unwrap_peak_table(sizes)


def unwrap_peak_table(sizes: list[tuple[int, int]]) -> None:
    import tracemalloc

    from iondiff_core.trajectory import Trajectory, unwrap, unwrap_in_place

    print("\n## Unwrapping a float32 read: traced peak (read positions included) / float32 positions")
    print("| ions x frames | positions (MB) | kept beside (unwrap) | in its own buffer (unwrap_in_place) |")
    print("|---|---|---|---|")
    for n, t in sizes:
        row = []
        for in_place in (False, True):
            tracemalloc.start()
            rng = np.random.default_rng(1)
            frac = rng.random(size=(t, n, 3), dtype=np.float32)  # the "read" positions
            traj = Trajectory(frac, np.eye(3) * 30.0, ["Li"] * n)
            del frac
            if in_place:
                pos = unwrap_in_place(traj)
            else:
                pos = unwrap(traj, dtype=np.float32)
                traj.release_positions()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            row.append(peak / pos.nbytes)
            del pos, traj
        print(f"| {n} x {t} | {n * t * 12 / 1e6:.0f} | {row[0]:.2f}x | {row[1]:.2f}x |", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (development)")
    ap.add_argument("--huge", action="store_true", help="add 10^8 ion-frames (1000 ions x 100,000 frames)")
    ap.add_argument("--jobs", type=int, default=1, help="processes for the clustering in the size and end-to-end tables (default 1)")
    ap.add_argument("--old-max-sites", type=int, default=100, help="run the whole-run clustering up to this many sites")
    ap.add_argument("--peers", action="store_true", help="only the table against GEMDAT 1.8 on LGPS_650K")
    ap.add_argument("--repeats", type=int, default=2, help="--peers: alternate runs of each (default 2)")
    ap.add_argument("--end-to-end", action="store_true", help="only the whole analysis of generated files (10^6, 10^7 ion-frames)")
    ap.add_argument("--sizes", help="--end-to-end: ions x frames to run instead, e.g. 1000x30000,1000x100000")
    ap.add_argument("--formats", default="xdatcar,extxyz", help="--end-to-end: file formats (default xdatcar,extxyz)")
    ap.add_argument("--all-atoms-up-to", type=float, default=1e6,
                    help="--end-to-end: also run the all-atoms float64 path up to this many ion-frames (default 1e6)")
    ap.add_argument("--transport", action="store_true", help="only the van Hove pair budget and unwrap peak tables")
    args = ap.parse_args(argv)
    if args.transport:
        transport_table([(100, 10_000), (300, 10_000), (1000, 10_000)])
        return 0
    if args.end_to_end:
        sizes = [(100, 10_000)] if args.quick else [(100, 10_000), (1000, 10_000)]
        if args.sizes:
            sizes = [tuple(int(v) for v in z.split("x")) for z in args.sizes.split(",")]
        if args.huge:
            sizes.append((1000, 100_000))
        end_to_end_table(sizes, old_up_to=args.all_atoms_up_to, n_jobs=args.jobs, kinds=args.formats.split(","))
        return 0
    if args.peers:
        peers_table(args.repeats)
        return 0
    if args.quick:
        sites_table(20_000, 2, [1, 10, 30], args.old_max_sites)
        size_table([(100, 10_000)], 2000, args.jobs)
        return 0
    sites_table(100_000, 2, [1, 10, 30, 100, 300], min(args.old_max_sites, 100))
    sizes = [(100, 10_000), (1000, 10_000), (100, 100_000)]
    if args.huge:
        sizes.append((1000, 100_000))
    size_table(sizes, 2000, args.jobs)
    peers_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
