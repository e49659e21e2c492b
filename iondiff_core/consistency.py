"""Hops must add up to the ions' transport (METHOD.md section 7).

For each ion, the vector sum of its hops (centre B - centre A; unfinished excursions are
not hops and do not count) is compared with its net displacement (mean position over
the last frames minus over the first frames).

:meth:`Consistency.checks` turns METHOD.md's words into three tests a run passes or fails:

* *residual*: "the vector sum of an ion's hops equals its net displacement within about
  the vibration amplitude": the median ion's residual |net - hop sum| is at most the
  median vibration radius of the centres (the radius the hop rule uses, Å). The median,
  because an ion caught mid-hop in the first or last frames averaged has a residual of a
  hop length by construction.
* *moved ions have hops*: "an ion whose net displacement exceeds the site spacing has
  hops": of the ions that moved more than ``moved_threshold_A`` (2 Å), the share with
  hops is not shown below 90 % (exact one-sided binomial test at the 5 % level, so that
  2 or 3 moved ions, which cannot show a share, do not decide the run).
* *MSD*: the hop-implied and the measured MSD agree on the root-mean-square
  displacement scale within the vibration radius: |sqrt(MSD measured) - sqrt(MSD from
  hops)| <= the median vibration radius (by Minkowski's inequality the difference is at
  most the root-mean-square residual, so hops that explain the displacements pass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from iondiff_core.hops import Hops


@dataclass
class Consistency:
    """How well the hops account for the ions' displacements.

    Attributes
    ----------
    net_A : ndarray (N, 3)
        Net displacement of each ion, Å.
    hop_sum_A : ndarray (N, 3)
        Vector sum of each ion's hops, Å.
    moved_threshold_A : float
        An ion whose net displacement exceeds this has changed site.
    vibration_radius_A : float
        Median vibration radius of the centres (Å; the hop rule's radius), the scale of
        the residual and MSD checks; NaN when not given (those checks are then undetermined).
    """

    net_A: np.ndarray
    hop_sum_A: np.ndarray
    n_hops_per_ion: np.ndarray
    moved_threshold_A: float
    vibration_radius_A: float = math.nan

    #: Share of the moved ions that must have hops (not rejected at ``SHARE_LEVEL``).
    SHARE_WITH_HOPS = 0.9
    SHARE_LEVEL = 0.05

    @property
    def residual_A(self) -> np.ndarray:
        return np.linalg.norm(self.net_A - self.hop_sum_A, axis=1)

    @property
    def moved(self) -> np.ndarray:
        return np.linalg.norm(self.net_A, axis=1) > self.moved_threshold_A

    def checks(self) -> list[dict]:
        """The three checks of METHOD.md section 7 (see the module docstring): each a dict
        with ``name``, ``value``, ``limit``, ``passed`` (True, False, or None when
        undetermined) and a ``message`` saying what was found."""
        moved = self.moved
        n_moved, n_with = int(moved.sum()), int((moved & (self.n_hops_per_ion > 0)).sum())
        vib = self.vibration_radius_A
        known = bool(np.isfinite(vib)) and len(self.net_A) > 0
        res = float(np.median(self.residual_A)) if len(self.net_A) else math.nan
        rms_net = float(np.sqrt(np.mean(np.sum(self.net_A**2, axis=1)))) if len(self.net_A) else math.nan
        rms_hop = float(np.sqrt(np.mean(np.sum(self.hop_sum_A**2, axis=1)))) if len(self.net_A) else math.nan
        p_share = binomtest(n_with, n_moved, self.SHARE_WITH_HOPS, alternative="less").pvalue if n_moved else 1.0
        share_ok = bool(p_share >= self.SHARE_LEVEL)
        return [
            {"name": "residual", "value": res, "limit": vib, "passed": (res <= vib) if known else None,
             "message": f"median residual |net displacement - hop sum| {res:.2f} Å against the median vibration radius {vib:.2f} Å"},
            {"name": "moved ions have hops", "value": n_with / n_moved if n_moved else 1.0, "limit": self.SHARE_WITH_HOPS,
             "passed": share_ok,
             "message": f"{n_with} of {n_moved} ions that moved more than {self.moved_threshold_A:g} Å have hops"
                        + ("" if share_ok else f": fewer than {self.SHARE_WITH_HOPS:.0%} (binomial p = {p_share:.2g})")},
            {"name": "MSD", "value": abs(rms_net - rms_hop), "limit": vib, "passed": (abs(rms_net - rms_hop) <= vib) if known else None,
             "message": f"root-mean-square displacement {rms_net:.2f} Å measured, {rms_hop:.2f} Å from hops "
                        f"(MSD {rms_net**2:.2f} / {rms_hop**2:.2f} Å²), against the median vibration radius {vib:.2f} Å"},
        ]

    @property
    def passed(self) -> bool | None:
        """All checks passed (True), one failed (False), or one undetermined and none failed (None)."""
        flags = [c["passed"] for c in self.checks()]
        return False if False in flags else (None if None in flags else True)

    def summary(self) -> dict:
        moved = self.moved
        with_hops = moved & (self.n_hops_per_ion > 0)
        net2 = np.sum(self.net_A**2, axis=1)
        hop2 = np.sum(self.hop_sum_A**2, axis=1)
        return {
            "ions_moved": int(moved.sum()),
            "ions_moved_with_hops": int(with_hops.sum()),
            "share_moved_with_hops": float(with_hops.sum() / moved.sum()) if moved.any() else 1.0,
            "moved_threshold_A": self.moved_threshold_A,
            "msd_measured_A2": float(net2.mean()) if len(net2) else np.nan,
            "msd_from_hops_A2": float(hop2.mean()) if len(hop2) else np.nan,
            "residual_mean_A": float(self.residual_A.mean()) if len(net2) else np.nan,
            "residual_max_A": float(self.residual_A.max()) if len(net2) else np.nan,
            "residual_median_A": float(np.median(self.residual_A)) if len(net2) else np.nan,
            "vibration_radius_A": float(self.vibration_radius_A),
            "checks_failed": sum(c["passed"] is False for c in self.checks()),
        }


def check(
    positions_A: np.ndarray, hops: Hops, moved_threshold_A: float = 2.0, edge_frames: int | None = None,
    vibration_radii_A: list[np.ndarray] | None = None,
) -> Consistency:
    """Compare each ion's hops with its net displacement.

    Parameters
    ----------
    positions_A : ndarray (T, N, 3)
        Unwrapped positions of the mobile ions, Å.
    edge_frames : int, optional
        Frames averaged at each end to remove the vibration; default T // 20 (>= 1).
    vibration_radii_A : list of ndarray, optional
        Per ion, the vibration radius of each centre (Å; ``HopAnalysis.radius_A``): their
        median is the scale of the residual and MSD checks (:meth:`Consistency.checks`).
    """
    t, n, _ = positions_A.shape
    m = edge_frames or max(1, t // 20)
    net = positions_A[-m:].mean(axis=0) - positions_A[:m].mean(axis=0)
    hop_sum = np.zeros((n, 3))
    np.add.at(hop_sum, hops.ion, hops.target_A - hops.origin_A)
    counts = np.bincount(hops.ion, minlength=n)
    radii = np.concatenate([np.ravel(r) for r in vibration_radii_A]) if vibration_radii_A else np.zeros(0)
    vib = float(np.median(radii)) if len(radii) else math.nan
    return Consistency(net, hop_sum, counts, moved_threshold_A, vib)
