"""What a slider move costs in the dashboard, on a 110-ion, 20,000-frame trajectory.

Generates a planted-hop trajectory (110 mobile Li among 125 lattice sites, 16 framework
atoms, 20,000 frames), analyses it once as the Run button does
(``dashboard.analysis.run_analysis``: read, unwrap, clustering, transport, the JSON), then
times each slider move as the page's callback computes it (``dashboard.views.analyse_views``:
cheap stages of the engine, every ``process_data`` and ``create_figure``) plus the JSON
encoding Dash applies before sending the figures, and the payload size. Also times
the first view in a process that has not got the session in memory (another gunicorn
worker): the trajectory is re-read and the clustering loaded from the stage cache.

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
from dashboard.views import analyse_views  # noqa: E402
from iondiff_core.io import write_xdatcar  # noqa: E402
from iondiff_core.parameters import Parameters  # noqa: E402
from iondiff_core.synthetic import make_synthetic  # noqa: E402

MOVES = [
    ("defaults", {}),
    ("silhouette threshold 0.6", {"silhouette_threshold": 0.6}),
    ("r_vib 0.6 Å", {"r_vib_A": 0.6}),
    ("reference level: 99 % quantile", {"reference_level": 0.99}),
    ("smoothing width x 2", {"width_factor": 2.0}),
    ("n_max 8", {"n_max": 8}),
    ("r_vib 0.4 Å, width x 0.5", {"r_vib_A": 0.4, "width_factor": 0.5}),
]


def timed_view(cfg, entry_id, sliders):
    t0 = time.perf_counter()
    v = analyse_views(cfg, entry_id, sliders)
    t1 = time.perf_counter()
    payload = pjson.to_json_plotly({k: v[k] for k in ("3d", "timeline", "heatmaps", "pdf", "msd", "vanhove", "table")})
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(payload) / 1e6, v["status"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ions", type=int, default=110)
    ap.add_argument("--frames", type=int, default=20000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        syn = make_synthetic(n_frames=args.frames, n_mobile=args.ions, grid=5, n_framework=16,
                             chain_sizes=(1, 2, 3, 4, 2, 1) * max(1, args.frames // 4000), seed=1)
        sim = tmp / "sim"
        sim.mkdir()
        write_xdatcar(syn.trajectory, sim / "XDATCAR")
        (sim / "INCAR").write_text(f"POTIM = {syn.trajectory.timestep_fs}\nNBLOCK = 1\nTEBEG = 600\n")
        cfg = Config.from_env(data_dir=tmp / "data", roots=[])
        cfg.ensure_folders()
        print(f"{args.ions} mobile ions x {args.frames} frames, {len(syn.hops)} planted hops", flush=True)

        t0 = time.perf_counter()
        entry_id = analysis.run_analysis(cfg, sim, Parameters())
        print(f"Run (read, unwrap, clustering, transport, JSON): {time.perf_counter() - t0:.1f} s\n")

        print(f"{'slider move':34s} {'views s':>8s} {'JSON s':>7s} {'total s':>8s} {'MB':>6s}  result")
        for label, sliders in MOVES:
            tv, tj, mb, status = timed_view(cfg, entry_id, sliders)
            print(f"{label:34s} {tv:8.2f} {tj:7.2f} {tv + tj:8.2f} {mb:6.2f}  {status.split(': ', 1)[1]}", flush=True)

        analysis._SESSIONS = analysis._SessionCache()  # as in a web process that never saw this entry
        tv, tj, mb, _ = timed_view(cfg, entry_id, {"r_vib_A": 0.55})
        print(f"{'r_vib 0.55 Å, session not in memory':34s} {tv:8.2f} {tj:7.2f} {tv + tj:8.2f} {mb:6.2f}  "
              "(re-read + cached clustering)")


if __name__ == "__main__":
    main()
