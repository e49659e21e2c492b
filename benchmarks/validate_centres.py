"""Windowed clustering (default) against the whole-run clustering it replaces, on every
real trajectory in ../shared/data/real and on planted-hop trajectories.

*old* = ``iondiff_core/centres.py`` as it was at commit 4e2dd41 (read with ``git show``,
so the comparison does not drift as the code changes): each ion's whole run clustered at
once, K capped at 60. *new* = the defaults: time windows of at most 5000 frames, centres
stitched across windows and refined on each ion's whole run, no cap on K. Hops are found
from either set of centres by the same :func:`iondiff_core.hops.find_hops`.

Prints a markdown section for docs/VALIDATION.md: per run, the hops of each, how many are
the same hop (same ion, same first and last transit frame) or nearly (both within 2
frames), the clustering stage's CPU seconds; per planted case, precision and recall
(both boundaries within 4 frames, :func:`iondiff_core.synthetic.match_hops`).

    python benchmarks/validate_centres.py > /tmp/centres.md     # ~10 minutes on 2 cores
    python benchmarks/validate_centres.py --sites               # only the LGPS_650K windowed / whole-run table
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale import lattice_walk  # noqa: E402
from iondiff_core import consistency, pipeline  # noqa: E402
import iondiff_core.centres  # noqa: E402,F401
from iondiff_core.hops import find_hops  # noqa: E402
from iondiff_core.io import find_simulations, read_trajectory  # noqa: E402
from iondiff_core.parameters import Parameters  # noqa: E402
from iondiff_core.synthetic import make_synthetic, match_hops  # noqa: E402
from iondiff_core.trajectory import unwrap  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "real"
TIMESTEP_FS = {"LiPS.exyz.xz": 20.0}  # not in the file; from ../shared/data/README.md
BASE = "4e2dd41"  # the engine before time windows
OLD = Parameters(window_frames=0, k_max_limit=60)
NEW = Parameters()


def _centres_before_windows():
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASE}:iondiff_core/centres.py"],
                         capture_output=True, text=True, check=True).stdout
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("centres_before_windows", loader=None))
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(src, f"{BASE}:iondiff_core/centres.py", "exec"), mod.__dict__)
    return mod


OLD_CENTRES = _centres_before_windows()


def hops_of(x: np.ndarray, params: Parameters, timestep_fs: float | None):
    """(closed hops as (ion, start, end) rows, centres per ion, clustering CPU seconds, windows per ion,
    METHOD.md section 7 consistency summary)."""
    mod = OLD_CENTRES if params is OLD else sys.modules["iondiff_core.centres"]
    c0 = time.process_time()
    cl = mod.cluster_ions(x, np.arange(x.shape[1]), params, timestep_fs)
    cpu = time.process_time() - c0
    cen = mod.select(cl, x, params.silhouette_threshold, 2 * params.r_vib_A)
    h = find_hops(x, cen, params.r_vib_A, params.hop_rule, params.cloud_quantile).hops
    closed = ~h.open_ended
    rows = np.stack([h.ion[closed], h.start[closed], h.end[closed]], axis=1)
    windows = max(1 if getattr(c, "bounds", None) is None else len(c.bounds) - 1 for c in cl.ions)
    return rows, cen.k, cpu, windows, consistency.check(x, h).summary()


def agreement(a: np.ndarray, b: np.ndarray, tol: int) -> int:
    ref = [SimpleNamespace(ion=i, start=s, end=e) for i, s, e in a]
    return len(match_hops(b[:, 0], b[:, 1], b[:, 2], ref, tol=tol))


def real_table() -> list[str]:
    out = [
        "| trajectory | ions x frames | windows (new) | hops old | hops new | same hop | within 2 frames "
        "| ions whose centre count differs | residual old / new (Å) | MSD from hops old / new / measured (Å²) "
        "| new, one window: hops, same as old | clustering CPU s old | new | old / new |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sim in sorted(find_simulations(REAL), key=lambda p: p.name):
        traj = read_trajectory(sim, timestep_fs=TIMESTEP_FS.get(sim.name))
        prep = pipeline.prepare(traj, NEW)
        x = prep.positions_A
        a, ka, ta, _, ca = hops_of(x, OLD, traj.timestep_fs)
        b, kb, tb, w, cb = hops_of(x, NEW, traj.timestep_fs)
        same, near = agreement(a, b, 0), agreement(a, b, 2)
        if w > 1:  # the same rules on the whole run: which differences the windows make
            c1 = hops_of(x, NEW.replace(window_frames=0), traj.timestep_fs)[0]
            whole = f"{len(c1)}, {agreement(a, c1, 0)}"
        else:
            whole = "(one window)"
        row = (f"| {sim.name} | {x.shape[1]} x {x.shape[0]} | {w} | {len(a)} | {len(b)} | {same} | {near} | "
               f"{int(np.sum(ka != kb))} | {ca['residual_mean_A']:.2f} / {cb['residual_mean_A']:.2f} | "
               f"{ca['msd_from_hops_A2']:.1f} / {cb['msd_from_hops_A2']:.1f} / {ca['msd_measured_A2']:.1f} | {whole} | "
               f"{ta:.1f} | {tb:.1f} | {ta / tb:.1f} |")
        print(row, file=sys.stderr, flush=True)
        out.append(row)
    return out


def planted_cases():
    """(label, positions (T, N, 3) Å, planted hops, timestep fs)."""
    def synth(label, **kw):
        syn = make_synthetic(**kw)
        t = syn.trajectory
        return label, unwrap(t, t.indices(syn.mobile)), syn.hops, t.timestep_fs

    yield synth("make_synthetic, test fixture (16 ions x 6000 frames, 15-site walker)", n_frames=6000, n_mobile=16,
                chain_sizes=(1, 2, 3, 4, 5, 1, 2, 3), long_walker_hops=14, open_end_hop=True, skew=0.3, seed=11)
    common = dict(n_frames=5000, n_mobile=16, chain_sizes=(1, 2, 3, 4, 1, 2), long_walker_hops=12, seed=3)
    yield synth("make_synthetic, cold (noise 0.1 Å)", vib_A=0.1, **common)
    yield synth("make_synthetic, hot (noise 0.3 Å, 20 fs frames, 3-6 frame transits)", vib_A=0.3, spacing_A=3.0,
                transit_frames=(3, 6), timestep_fs=20.0, **common)
    for sites, frames in ((10, 20_000), (40, 20_000), (100, 20_000)):
        x, planted = lattice_walk(4, frames, sites, seed=sites)
        yield f"lattice walk, 4 ions x {frames} frames, {sites} sites each", x, planted, 10.0


def planted_table() -> list[str]:
    out = [
        "| planted case | planted hops | old: hops | old: P / R | old: centres of the busiest ion | new: hops | new: P / R "
        "| new: centres of the busiest ion | clustering CPU s old | new |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, x, planted, dt in planted_cases():
        cells = [label, str(len(planted))]
        times = []
        for params in (OLD, NEW):
            rows, k, cpu, _, _ = hops_of(x, params, dt)
            pairs = match_hops(rows[:, 0], rows[:, 1], rows[:, 2], planted, tol=4)
            cells += [str(len(rows)), f"{len(pairs) / max(1, len(rows)):.3f} / {len(pairs) / len(planted):.3f}", str(int(k.max()))]
            times.append(f"{cpu:.1f}")
        row = "| " + " | ".join(cells + times) + " |"
        print(row, file=sys.stderr, flush=True)
        out.append(row)
    return out


def density_sites(x: np.ndarray, cell: np.ndarray, window: int, grid_A: float = 0.2) -> np.ndarray:
    """Sites of the mobile species independent of any clustering, as GEMDAT finds them: the
    local maxima (over 5 grid cells, above 2 % of the highest) of the density of every ion's
    positions (averaged over ``window`` frames, as the clustering sees them) folded into the
    cell, on a ``grid_A`` grid smoothed by one cell. Cartesian (S, 3), Å."""
    from scipy import ndimage

    from iondiff_core.centres import denoise

    g = np.maximum(1, np.round(np.linalg.norm(cell, axis=1) / grid_A)).astype(int)
    dens = np.zeros(g)
    inv = np.linalg.inv(cell)
    for i in range(x.shape[1]):
        frac = (denoise(x[:, i], window) @ inv) % 1.0
        np.add.at(dens, tuple((np.floor(frac * g).astype(int) % g).T), 1)
    dens = ndimage.gaussian_filter(dens, 1.0, mode="wrap")
    peak = (dens == ndimage.maximum_filter(dens, size=5, mode="wrap")) & (dens > 0.02 * dens.max())
    return ((np.argwhere(peak) + 0.5) / g) @ cell


def site_table(name: str = "LGPS_650K_Li_only", off_A: float = 0.7) -> list[str]:
    """The windowed and the whole-run clustering of one long run held against METHOD.md
    section 7 and against the density sites (:func:`density_sites`)."""
    from iondiff_core.centres import denoise_window

    traj = read_trajectory(REAL / name)
    x = pipeline.prepare(traj, NEW).positions_A.astype(np.float64)
    cell = traj.cells[0]
    sites = density_sites(x, cell, denoise_window(NEW.denoise_fs, traj.timestep_fs))
    inv = np.linalg.inv(cell)

    def to_site(p):  # (nearest site, its distance in Å), minimum image
        f = (p[:, None, :] - sites[None]) @ inv
        d = np.linalg.norm((f - np.round(f)) @ cell, axis=2)
        return d.argmin(axis=1), d.min(axis=1)

    out = [
        f"Density sites of {name}: {len(sites)}. Off site: farther than {off_A} Å from every density site.",
        "",
        "| clustering | hops | consistency residual mean / max (Å) | MSD from hops / measured (Å²) | centres | centres off site "
        "| hops with an end off site | hops shorter than 1.2 Å | hops between two centres on one site | clustering CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, params in (("windowed (default)", NEW), ("whole run (window_frames=0)", NEW.replace(window_frames=0))):
        mod = sys.modules["iondiff_core.centres"]
        c0 = time.process_time()
        cl = mod.cluster_ions(x, np.arange(x.shape[1]), params, traj.timestep_fs)
        cpu = time.process_time() - c0
        cen = mod.select(cl, x, params.silhouette_threshold, 2 * params.r_vib_A)
        h = find_hops(x, cen, params.r_vib_A, params.hop_rule, params.cloud_quantile).hops
        c = consistency.check(x, h).summary()
        so, do = to_site(h.origin_A)
        st, dt = to_site(h.target_A)
        allc = np.concatenate(cen.centres)
        off = to_site(allc)[1] > off_A
        out.append(f"| {label} | {len(h)} | {c['residual_mean_A']:.2f} / {c['residual_max_A']:.2f} | "
                   f"{c['msd_from_hops_A2']:.1f} / {c['msd_measured_A2']:.1f} | {len(allc)} | {int(off.sum())} | "
                   f"{int(np.sum((do > off_A) | (dt > off_A)))} ({np.mean((do > off_A) | (dt > off_A)):.0%}) | "
                   f"{int(np.sum(h.length_A < 1.2))} | {int(np.sum(so == st))} | {cpu:.1f} |")
        print(out[-1], file=sys.stderr, flush=True)
    return out


def main() -> int:
    if not REAL.exists():
        sys.exit(f"{REAL} not found")
    if "--sites" in sys.argv:  # only the windowed / whole-run comparison on LGPS_650K
        print("\n".join(site_table()))
        return 0
    lines = ["### Planted hops", ""] + planted_table() + ["", "### Real trajectories", ""] + real_table()
    lines += ["", "### Windowed or whole run on LGPS_650K", ""] + site_table()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
