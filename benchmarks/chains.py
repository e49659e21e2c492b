"""Recovery of planted concerted chains under the two event-width rules (METHOD.md 4, issue 8.6).

For planted vacancy-following chains at several hop speeds (transit frames) and
temperatures (thermal amplitude), the full analysis is run once per case; each width
rule (``duration``: FWHM = the detected transit, the paper; ``padded``: FWHM = transit
+ 2 frames, from the last frame at A to the first at B) is applied to the same hops. A
chain is recovered when the hops found for it form exactly one group. Independent
random walkers check that the rule does not invent concert: the null-model verdict must
stay "chance".

    python benchmarks/chains.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from iondiff_core import pipeline  # noqa: E402
from iondiff_core.parameters import Parameters  # noqa: E402
from iondiff_core.synthetic import make_independent_walkers, make_synthetic  # noqa: E402

RULES = ("duration", "padded")


def match_within(h, planted, tol: int = 3) -> dict[int, int]:
    """planted index -> found index: same ion, the found transit inside the planted motion
    (+- ``tol`` frames). The found transit is shorter than the planted one (the ion is
    within its vibration radius for the first and last part of the motion), more so for
    slow hops, so boundary-to-boundary matching would miss them."""
    out, used = {}, np.zeros(len(h), bool)
    for k, p in enumerate(planted):
        c = np.flatnonzero((h.ion == p.ion) & (h.start >= p.start - tol) & (h.end <= p.end + tol) & ~used)
        if c.size:
            best = c[np.argmax(h.end[c] - h.start[c])]
            used[best] = True
            out[k] = int(best)
    return out


def hop_recall(result, syn) -> float:
    planted = [p for p in syn.hops if not p.open_ended]
    return len(match_within(result.hops, planted)) / max(1, len(planted))


def chain_recovery(result, syn) -> tuple[int, int]:
    """(chains recovered, planted chains of n >= 2)."""
    h = result.hops
    found = match_within(h, syn.hops)
    group = result.correlations.group_of
    ok = total = 0
    for g in syn.groups:
        if len(g) < 2 or any(syn.hops[k].open_ended for k in g):
            continue
        total += 1
        if all(k in found for k in g):
            members = {found[k] for k in g}
            labels = {int(group[m]) for m in members}
            if len(labels) == 1 and int(np.sum(group == labels.pop())) == len(members):
                ok += 1
    return ok, total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer cases (for a smoke run)")
    args = ap.parse_args()
    speeds = {"fast (2-4 frames)": (2, 4), "medium (6-14)": (6, 14), "slow (15-30)": (15, 30)}
    temps = {"cold (0.05 Å)": 0.05, "warm (0.15 Å)": 0.15, "hot (0.25 Å)": 0.25}
    if args.quick:
        speeds = dict(list(speeds.items())[:2])
        temps = dict(list(temps.items())[:2])
    totals = {r: [0, 0] for r in RULES}
    print(f"{'hop speed':20s} {'temperature':14s} {'lag':>4s} " + " ".join(f"{r + ' chains':>17s}" for r in RULES)
          + "  verdict (dur/pad)")
    cases = [(s, t, lag) for s in speeds for t in temps for lag in ("half", "full")]
    for sname, tname, lagname in cases:
        tf, vib = speeds[sname], temps[tname]
        # Consecutive hops of a chain start half a transit apart, or a whole shortest transit.
        lag = max(1, tf[0] // 2 + 1) if lagname == "half" else tf[0]
        syn = make_synthetic(n_frames=12000, n_mobile=30, grid=5, vib_A=vib, transit_frames=tf, lag_frames=lag,
                             chain_sizes=(2, 3, 4, 2, 3, 5, 2, 3) * 2, seed=7)
        sess = pipeline.Session.open(syn.trajectory, Parameters())
        cells, verdicts = [], []
        for rule in RULES:
            r = sess.result(Parameters(width_rule=rule))
            ok, total = chain_recovery(r, syn)
            totals[rule][0] += ok
            totals[rule][1] += total
            cells.append(f"{ok:>8d} of {total:<6d}")
            verdicts.append(r.concertedness.verdict)
        sizes = np.sort(r.correlations.sizes)[::-1][:3].tolist()
        print(f"{sname:20s} {tname:14s} {lagname:>4s} " + " ".join(f"{c:>17s}" for c in cells) + "  " + "/".join(verdicts)
              + f"  hop recall {hop_recall(r, syn):.2f}, largest groups {sizes}", flush=True)
    print(f"{'all':40s} " + " ".join(f"{totals[r][0]:>8d} of {totals[r][1]:<6d}" for r in RULES))
    print("\nIndependent walkers (48 ions, 12,000 frames, 12 hops each): verdict and excess per rule")
    for seed in range(2 if args.quick else 4):
        syn = make_independent_walkers(n_frames=12000, n_mobile=48, hops_per_ion=12, seed=seed)
        sess = pipeline.Session.open(syn.trajectory, Parameters())
        out = []
        for rule in RULES:
            c = sess.result(Parameters(width_rule=rule)).concertedness
            out.append(f"{rule}: {c.verdict} (excess {100 * c.excess:+.1f} %, p = {c.p_value:.2f})")
        print(f"  seed {seed}: " + "; ".join(out), flush=True)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n{time.perf_counter() - t0:.0f} s")
