"""Hops must add up to the ions' transport (METHOD.md section 7).

For each ion, the vector sum of its hops (centre B - centre A; unfinished excursions are
not hops and do not count) is compared with its net displacement (mean position over
the last frames minus over the first frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    """

    net_A: np.ndarray
    hop_sum_A: np.ndarray
    n_hops_per_ion: np.ndarray
    moved_threshold_A: float

    @property
    def residual_A(self) -> np.ndarray:
        return np.linalg.norm(self.net_A - self.hop_sum_A, axis=1)

    @property
    def moved(self) -> np.ndarray:
        return np.linalg.norm(self.net_A, axis=1) > self.moved_threshold_A

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
        }


def check(positions_A: np.ndarray, hops: Hops, moved_threshold_A: float = 2.0, edge_frames: int | None = None) -> Consistency:
    """Compare each ion's hops with its net displacement.

    Parameters
    ----------
    positions_A : ndarray (T, N, 3)
        Unwrapped positions of the mobile ions, Å.
    edge_frames : int, optional
        Frames averaged at each end to remove the vibration; default T // 20 (>= 1).
    """
    t, n, _ = positions_A.shape
    m = edge_frames or max(1, t // 20)
    net = positions_A[-m:].mean(axis=0) - positions_A[:m].mean(axis=0)
    hop_sum = np.zeros((n, 3))
    np.add.at(hop_sum, hops.ion, hops.target_A - hops.origin_A)
    counts = np.bincount(hops.ion, minlength=n)
    return Consistency(net, hop_sum, counts, moved_threshold_A)
