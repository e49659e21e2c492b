"""What a slider move costs in the dashboard, on a 110-ion, 20,000-frame trajectory.

Generates a planted-hop trajectory (110 mobile Li among 125 lattice sites, 16 framework
atoms, 20,000 frames), analyses it once as the Run button does
(``dashboard.analysis.run_analysis``: read, unwrap, clustering, transport, the JSON), then
times each slider move as the page computes it: the page has one callback per view and a
move triggers only the views that depend on the moved parameter (``views.VIEWS[name].fields``),
which share one memoised engine Result. Per move: the cheap stages of the engine once,
then each triggered view's ``process_data`` + ``create_figure`` + Dash's JSON encoding,
and the summary (status, verdict, descriptor table). The "all views" column is what the
page cost before (one callback redrawing every figure, MSD and van Hove included), in the
same run. The callbacks run concurrently in the server (threads or gunicorn workers);
the total here is their sum, an upper bound on one process. Also times the first view in
a process that has not got the session in memory (another gunicorn worker): the
trajectory is re-read and the clustering loaded from the stage cache.

flask-caching would answer a repeated slider position from disk; every move here is new.

    python benchmarks/bench_sliders.py [--ions 110] [--frames 20000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import plotly.io.json as pjson  # noqa: E402

from dashboard import analysis  # noqa: E402
from dashboard.config import Config  # noqa: E402
from dashboard import views  # noqa: E402
from iondiff_core.io import write_xdatcar  # noqa: E402
from iondiff_core.parameters import Parameters  # noqa: E402
from iondiff_core.synthetic import make_synthetic  # noqa: E402

MOVES = [
    ("defaults", {}),
    ("silhouette threshold 0.6", {"silhouette_threshold": 0.6}),
    ("r_vib 0.6 Å", {"r_vib_A": 0.6}),
    ("reference level: 99 % quantile", {"reference_level": 0.99}),
    ("smoothing width x 2", {"width_factor": 2.0}),
    ("pair distance 4 Å", {"pair_distance_A": 4.0}),
    ("n_max 8", {"n_max": 8}),
    ("r_vib 0.4 Å, width x 0.5", {"r_vib_A": 0.4, "width_factor": 0.5}),
]


def triggered(changed: set) -> list[str]:
    """The views whose callback a change of these parameters fires (all of them at the start)."""
    return [name for name, v in views.VIEWS.items() if changed is None or changed & set(v.fields)]


def timed_move(cfg, entry_id, sliders, names) -> tuple[float, float, float, str]:
    """Cheap stages, then the triggered views and the summary; returns (engine s, views s, MB, status)."""
    t0 = time.perf_counter()
    views.result_of(cfg, entry_id, sliders)
    t1 = time.perf_counter()
    payload = 0
    for name in names:
        payload += len(pjson.to_json_plotly(views.view_figure(cfg, name, entry_id, sliders)))
    s = views.summary(cfg, entry_id, sliders)
    payload += len(pjson.to_json_plotly(s["table"]))
    return t1 - t0, time.perf_counter() - t1, payload / 1e6, s["status"]


def timed_all_views(cfg, entry_id, sliders) -> float:
    """Every view redrawn (the page's single callback before), Result already in memory."""
    t0 = time.perf_counter()
    for name in views.VIEWS:
        pjson.to_json_plotly(views.view_figure(cfg, name, entry_id, sliders))
    return time.perf_counter() - t0


def write_planted_run(folder: Path, ions: int, frames: int):
    """The benchmark trajectory (planted hops and chains, 16 framework atoms) as an XDATCAR
    and INCAR in ``folder/sim``: (the Synthetic, the run folder)."""
    syn = make_synthetic(n_frames=frames, n_mobile=ions, grid=5, n_framework=16,
                         chain_sizes=(1, 2, 3, 4, 2, 1) * max(1, frames // 4000), seed=1)
    sim = folder / "sim"
    sim.mkdir()
    write_xdatcar(syn.trajectory, sim / "XDATCAR")
    (sim / "INCAR").write_text(f"POTIM = {syn.trajectory.timestep_fs}\nNBLOCK = 1\nTEBEG = 600\n")
    return syn, sim


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ions", type=int, default=110)
    ap.add_argument("--frames", type=int, default=20000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        syn, sim = write_planted_run(tmp, args.ions, args.frames)
        cfg = Config.from_env(data_dir=tmp / "data", roots=[])
        cfg.ensure_folders()
        print(f"{args.ions} mobile ions x {args.frames} frames, {len(syn.hops)} planted hops", flush=True)

        t0 = time.perf_counter()
        entry_id = analysis.run_analysis(cfg, sim, Parameters())
        print(f"Run (read, unwrap, clustering, transport, JSON): {time.perf_counter() - t0:.1f} s\n")

        print(f"{'slider move':34s} {'views redrawn':>28s} {'engine s':>8s} {'views s':>8s} {'total s':>8s} {'MB':>5s} "
              f"{'all views s':>11s}  result")
        timed_all_views(cfg, entry_id, {"n_max": 21})  # warm-up: plotly's validators load on first use
        state: dict = {}
        for k, (label, change) in enumerate(MOVES):
            new = {**state, **change} if k else {}
            names = triggered(None if k == 0 else set(change))
            te, tv, mb, status = timed_move(cfg, entry_id, new, names)
            ta = timed_all_views(cfg, entry_id, new)
            shown = ",".join(names) if len(names) < len(views.VIEWS) else "all"
            print(f"{label:34s} {shown:>28s} {te:8.2f} {tv:8.2f} {te + tv:8.2f} {mb:5.2f} {te + ta:11.2f}  "
                  f"{status.split(': ', 1)[1]}", flush=True)
            state = new

        analysis._SESSIONS = analysis._SessionCache()  # as in a web process that never saw this entry
        analysis._RESULTS = analysis.Memo(size=8, weigh=analysis.resident_bytes)
        move = {"r_vib_A": 0.55}
        te, tv, mb, _ = timed_move(cfg, entry_id, move, triggered(set(move)))
        print(f"{'r_vib 0.55 Å, session not in memory':34s} {'3d,timeline,heatmaps,pdf':>28s} {te:8.2f} {tv:8.2f} "
              f"{te + tv:8.2f} {mb:5.2f} {'':>11s}  (re-read + cached clustering)")


if __name__ == "__main__":
    main()
