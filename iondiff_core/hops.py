"""Hop events, failed attempts and transit paths (METHOD.md section 3).

A frame *vibrates at centre c* when the ion is within the vibration radius of c;
otherwise it is in transit. A hop is a transit between vibrating at A and vibrating at
B != A: it starts at the first transit frame after A and ends at the last before B. A
transit that returns to A is a failed attempt. A transit still under way at the last
frame is an *unfinished excursion*: B is unknown, so it is listed apart and never
counted as a hop (not in ν, groups or the consistency check). A hop with no transit frame at all (the ion is
at A in one frame and at B in the next: sampling too coarse to time it) is placed on
its arrival frame, lasts one frame, and is flagged ``resolved=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from iondiff_core.centres import Centres, _sqdist


@dataclass
class Hops:
    """All hops of a trajectory, as parallel arrays (one entry per hop), sorted by start.

    Attributes
    ----------
    ion : int array
        Index of the hopping ion among the mobile ions (0-based, file order).
    start, end : int arrays
        First and last transit frame, 0-based, inclusive.
    centre_from, centre_to : int arrays
        Indices into the ion's centres; ``centre_to`` is -1 for an unfinished excursion.
    origin_A, target_A : float arrays (H, 3)
        Unwrapped Cartesian positions (Å) of centres A and B; for an unfinished
        excursion the target is the ion's position at the last frame.
    length_A : float array
        |target - origin| in Å.
    open_ended, resolved : bool arrays
        ``open_ended`` is True only for unfinished excursions (never in ``HopAnalysis.hops``).
    """

    ion: np.ndarray
    start: np.ndarray
    end: np.ndarray
    centre_from: np.ndarray
    centre_to: np.ndarray
    origin_A: np.ndarray
    target_A: np.ndarray
    length_A: np.ndarray
    open_ended: np.ndarray
    resolved: np.ndarray

    def __len__(self) -> int:
        return len(self.ion)

    @property
    def duration_frames(self) -> np.ndarray:
        return self.end - self.start + 1

    @property
    def mid_frame(self) -> np.ndarray:
        return 0.5 * (self.start + self.end)

    def take(self, idx) -> "Hops":
        return Hops(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


@dataclass
class FailedAttempts:
    """Excursions out of a centre that returned to it (frames inclusive)."""

    ion: np.ndarray
    start: np.ndarray
    end: np.ndarray
    centre: np.ndarray

    def __len__(self) -> int:
        return len(self.ion)


@dataclass
class HopAnalysis:
    """Hops, failed attempts, unfinished excursions and the per-frame state of every ion."""

    hops: Hops
    failed: FailedAttempts
    excursions: Hops  # still in transit at the last frame: not hops
    state: np.ndarray  # (T, N) int16: centre index while vibrating, -1 in transit
    radius_A: list[np.ndarray]  # per ion, the vibration radius of each centre (Å)


def cloud_radii(dist: np.ndarray, near: np.ndarray, k: int, quantile: float) -> np.ndarray:
    """The ``quantile`` (method "lower") of the distances (Å) of the frames nearest to each
    of k centres of one ion (its thermal cloud); 0 for a centre no frame is nearest to."""
    out = np.zeros(k)
    for c in range(k):
        dc = dist[near == c]
        if dc.size:
            j = int(np.floor(quantile * (dc.size - 1)))
            out[c] = float(np.partition(dc, j)[j])
    return out


def vibration_radii(cloud: np.ndarray, centres: np.ndarray, r_vib_A: float, rule: str) -> np.ndarray:
    """Vibration radius (Å) of each centre of one ion.

    ``rule="paper"``: r_vib for every centre. ``rule="cloud"``: the larger of r_vib
    and the centre's thermal cloud radius (``cloud``, from :func:`cloud_radii`), capped at
    45 % of the distance to the nearest other centre so a transit between two centres
    always has room.
    """
    k = len(centres)
    radius = np.full(k, float(r_vib_A))
    if rule == "paper":
        return radius
    radius = np.maximum(radius, cloud)
    if k > 1:
        cc = np.sqrt(_sqdist(centres, centres))
        np.fill_diagonal(cc, np.inf)
        radius = np.minimum(radius, 0.45 * cc.min(axis=1))
        radius = np.maximum(radius, min(float(r_vib_A), 0.45 * cc.min()))
    return radius


def nearest_centres(positions_A: np.ndarray, centres: Centres, quantile: float = 0.95):
    """Each frame's nearest centre of each ion, its distance (Å) and each centre's thermal
    cloud radius: (N, T) int16, (N, T) float32 (ion-major: one ion's frames contiguous) and
    a list of (K,) arrays. They depend on the centres only, not on r_vib: a
    vibration-radius move reuses them."""
    n_frames, n_ions, _ = positions_A.shape
    near = np.empty((n_ions, n_frames), np.int16)
    dist = np.empty((n_ions, n_frames), np.float32)
    cloud = []
    for i in range(n_ions):
        d2 = _sqdist(np.ascontiguousarray(positions_A[:, i, :]), centres.centres[i])
        k = np.argmin(d2, axis=1)
        near[i] = k
        dist[i] = np.sqrt(d2[np.arange(n_frames), k])
        cloud.append(cloud_radii(dist[i], k, len(centres.centres[i]), quantile))
    return near, dist, cloud


def find_hops(
    positions_A: np.ndarray, centres: Centres, r_vib_A: float = 0.5, rule: str = "cloud", quantile: float = 0.95,
    nearest: tuple | None = None,
) -> HopAnalysis:
    """Find hops of every mobile ion.

    Parameters
    ----------
    positions_A : ndarray (T, N, 3)
        Unwrapped Cartesian positions of the mobile ions, Å.
    centres : Centres
        Vibration centres per ion (:func:`iondiff_core.centres.select`).
    r_vib_A : float
        Vibration radius, Å (METHOD.md: 0.5).
    rule, quantile
        See :func:`vibration_radii` and :func:`cloud_radii`.
    nearest : (near, dist, cloud), optional
        :func:`nearest_centres` of these positions, centres and quantile, if already known.
    """
    n_frames, n_ions, _ = positions_A.shape
    near_all, dist_all, cloud = nearest if nearest is not None else nearest_centres(positions_A, centres, quantile)
    state = np.full((n_frames, n_ions), -1, dtype=np.int16)
    cols = {f.name: [] for f in fields(Hops)}
    ecols = {f.name: [] for f in fields(Hops)}
    fcols = {f.name: [] for f in fields(FailedAttempts)}
    radii = []
    for i in range(n_ions):
        mu = centres.centres[i]
        near = near_all[i].astype(np.intp)
        dist = dist_all[i].astype(float)
        radius = vibration_radii(cloud[i], mu, r_vib_A, rule)
        radii.append(radius)
        vib = dist < radius[near]
        state[vib, i] = near[vib]
        vf = np.flatnonzero(vib)
        if vf.size == 0:
            continue
        cs = near[vf]
        k = np.arange(len(vf) - 1)
        change = cs[1:] != cs[:-1]
        gap = vf[1:] > vf[:-1] + 1
        # Hops between two centres.
        h = k[change]
        start = vf[h] + 1
        end = vf[h + 1] - 1
        resolved = end >= start
        end = np.where(resolved, end, start)
        a, b = cs[h], cs[h + 1]
        _append(cols, i, start, end, a, b, mu[a], mu[b], np.zeros(len(h), bool), resolved)
        # Excursions that came back.
        f = k[~change & gap]
        fcols["ion"].append(np.full(len(f), i))
        fcols["start"].append(vf[f] + 1)
        fcols["end"].append(vf[f + 1] - 1)
        fcols["centre"].append(cs[f])
        # Still in transit at the last frame.
        if vf[-1] < n_frames - 1:
            a = cs[-1:]
            _append(ecols, i, vf[-1:] + 1, np.array([n_frames - 1]), a, np.array([-1]), mu[a], positions_A[-1:, i, :], np.ones(1, bool), np.ones(1, bool))
    failed = FailedAttempts(**{name: _cat(v, name) for name, v in fcols.items()})
    return HopAnalysis(_assemble(cols), failed, _assemble(ecols), state, radii)


def _assemble(cols) -> Hops:
    hops = Hops(**{name: _cat(v, name) for name, v in cols.items()})
    hops.length_A = np.linalg.norm(hops.target_A - hops.origin_A, axis=1) if len(hops) else np.zeros(0)
    return hops.take(np.lexsort((hops.ion, hops.start)))


def _append(cols, ion, start, end, a, b, origin, target, open_ended, resolved):
    cols["ion"].append(np.full(len(start), ion))
    cols["start"].append(start)
    cols["end"].append(end)
    cols["centre_from"].append(a)
    cols["centre_to"].append(b)
    cols["origin_A"].append(origin)
    cols["target_A"].append(target)
    cols["length_A"].append(np.zeros(len(start)))
    cols["open_ended"].append(open_ended)
    cols["resolved"].append(resolved)


def _cat(chunks, name):
    if chunks:
        return np.concatenate(chunks)
    if name in ("origin_A", "target_A"):
        return np.zeros((0, 3))
    if name in ("open_ended", "resolved"):
        return np.zeros(0, bool)
    if name == "length_A":
        return np.zeros(0)
    return np.zeros(0, int)


def hop_path(positions_A: np.ndarray, hops: Hops, h: int) -> np.ndarray:
    """Unwrapped positions (Å) of hop ``h`` from the last frame at A to the first at B."""
    lo = max(0, int(hops.start[h]) - 1)
    hi = min(positions_A.shape[0], int(hops.end[h]) + 2)
    return positions_A[lo:hi, int(hops.ion[h]), :]


def timeline(hops: Hops, n_frames: int, n_ions: int) -> np.ndarray:
    """Binary hop timeline (ions x frames): 1 while an ion is in a hop's transit (paper Fig. 3a)."""
    t = np.zeros((n_ions, n_frames + 1), dtype=np.int32)
    np.add.at(t, (hops.ion, hops.start), 1)
    np.add.at(t, (hops.ion, hops.end + 1), -1)
    return (np.cumsum(t, axis=1)[:, :n_frames] > 0).astype(np.uint8)
