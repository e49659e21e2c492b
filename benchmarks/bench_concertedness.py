"""Cost of the concertedness stages (METHOD.md 4, 4b, 5) on a slider move, and at MLIP scale.

1. 110 mobile ions x 20,000 frames of independent random walkers with 20 hops each
   (2,200 hops): the whole analysis once, then each slider move as
   ``Session.result`` computes it (hops, reference, correlations, the null model with
   200 replicas, pdf with bootstrap, descriptors), and the null model alone.
2. The correlation stages alone for 1,000 ions x 100,000 frames with ~50,000 hops
   (hop events generated directly): time and peak memory of the random reference,
   the groups and the null model. Memory is O(overlapping pairs); the dense matrix
   would need hops^2 x 8 bytes.

    python benchmarks/bench_concertedness.py [--skip-pipeline]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from iondiff_core import correlations as corr_mod  # noqa: E402
from iondiff_core import distribution, pipeline  # noqa: E402
from iondiff_core.hops import Hops  # noqa: E402
from iondiff_core.parameters import Parameters  # noqa: E402
from iondiff_core.synthetic import make_independent_walkers  # noqa: E402

MOVES = [
    ("defaults", {}),
    ("r_vib 0.6 Å", {"r_vib_A": 0.6}),
    ("reference level: 99 % quantile", {"reference_level": 0.99}),
    ("smoothing width x 2", {"width_factor": 2.0}),
    ("pair distance 4 Å", {"pair_distance_A": 4.0}),
    ("n_max 8", {"n_max": 8}),
]


def timed(f, *a, **k):
    t0 = time.perf_counter()
    out = f(*a, **k)
    return out, time.perf_counter() - t0


def slider_moves():
    syn = make_independent_walkers(n_frames=20000, n_mobile=110, hops_per_ion=20, seed=1)
    sess, t_open = timed(pipeline.Session.open, syn.trajectory, Parameters())
    print(f"110 ions x 20,000 frames, {len(syn.hops)} planted hops; analysis (clustering, transport): {t_open:.1f} s")
    print(f"{'slider move':34s} {'result s':>9s} {'hops':>6s} {'verdict':>14s}")
    for label, change in MOVES:
        r, t = timed(sess.result, Parameters(**change))
        print(f"{label:34s} {t:9.2f} {len(r.hops):6d} {r.concertedness.verdict:>14s}", flush=True)
    r = sess.result()
    sig = corr_mod.event_sigmas(r.hops)
    _, t_null = timed(corr_mod.null_replicas, r.hops, sig, 20000, r.reference_level, 200, 0)
    print(f"null model alone (200 replicas, {len(r.hops)} hops): {t_null:.2f} s\n")


def synthetic_hops(n_ions, n_frames, hops_per_ion, seed=0) -> Hops:
    rng = np.random.default_rng(seed)
    h = n_ions * hops_per_ion
    ion = np.repeat(np.arange(n_ions), hops_per_ion)
    dur = rng.integers(2, 15, h)
    start = rng.integers(0, n_frames - 20, h)
    origin = rng.uniform(0, 40, (h, 3))
    target = origin + rng.normal(scale=1.5, size=(h, 3))
    o = np.lexsort((ion, start))
    z = np.zeros(h, int)
    return Hops(ion[o], start[o], start[o] + dur[o] - 1, z, z + 1, origin[o], target[o],
                np.linalg.norm(target - origin, axis=1)[o], np.zeros(h, bool), np.ones(h, bool))


def at_scale(n_ions=1000, n_frames=100_000, hops_per_ion=50):
    hops = synthetic_hops(n_ions, n_frames, hops_per_ion)
    h = len(hops)
    print(f"{n_ions} ions x {n_frames:,} frames, {h:,} hops (dense matrix would need {h * h * 8 / 1e9:.0f} GB)")
    sig = corr_mod.event_sigmas(hops)
    rows = []
    for label, f in [
        (f"random reference ({corr_mod.replicas_for(100, h)} repetitions)", lambda: corr_mod.random_reference(sig, n_frames, 100, 0)),
        ("groups (overlapping pairs only)", lambda: corr_mod.correlate(hops, n_frames, 0.0)),
        (f"null model ({corr_mod.replicas_for(200, h, corr_mod.MIN_NULL_REPLICAS)} replicas)",
         lambda: corr_mod.null_replicas(hops, sig, n_frames, 0.0, 200, 0)),
        ("pdf of n with bootstrap", lambda: distribution.n_distribution(
            corr_mod.correlate(hops, n_frames, 0.0).sizes)),
    ]:
        tracemalloc.start()
        _, t = timed(f)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append((label, t, peak))
        print(f"  {label:38s} {t:7.2f} s  peak {peak / 1e6:7.0f} MB", flush=True)
    total = sum(t for _, t, _ in rows[1:])  # the reference is memoised per hop widths
    print(f"  a slider move that keeps the hop widths (groups + null + pdf): {total:.2f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-pipeline", action="store_true")
    args = ap.parse_args()
    if not args.skip_pipeline:
        slider_moves()
    at_scale()


if __name__ == "__main__":
    main()
