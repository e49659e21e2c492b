"""Many-ion correlations: smoothed hop events, their Pearson matrix, the random
reference, concerted groups, the null model and the n = 2 mechanisms (METHOD.md
sections 4 and 4b, paper section 2.2 and Fig. 3).

Each hop is one event. Event h is a Gaussian over frames, g_h(t) = exp(-(t - m_h)^2 /
2 s_h^2), centred on the hop's mid-frame m_h with FWHM equal to its duration (times
``width_factor``). Every sum over frames is done in closed form on the integer lattice
(Poisson summation), so nothing of size events x frames is ever formed:

- the product of two Gaussians is a Gaussian, so sum_t g_h g_k needs only (m, s) of both;
- two events farther apart than their reach (:func:`reach_frames`) have
  sum_t g_h g_k / T < mean_h mean_k, i.e. a negative Pearson C: they never overlap and
  are never concerted. Only overlapping pairs are enumerated (memory O(pairs)).

The Gaussians are not cut at the ends of the run (a hop at the first frame keeps its
full width); otherwise this is the Pearson correlation of the paper's smoothed series.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.stats import norm

from iondiff_core.distribution import percolates
from iondiff_core.hops import Hops
from iondiff_core.trajectory import minimum_image, periodic_images

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
#: Above this many events the dense matrix (for display only) is not formed.
DENSE_LIMIT = 4000
#: Events (replicas x hops) handled at once by the reference and the null model (memory).
_BATCH_EVENTS = 100_000
#: ... and at most about this many overlapping pairs (each costs ~150 bytes of temporaries):
#: with many hops a batch of 100,000 events holds millions of pairs.
_BATCH_PAIRS = 500_000


def _sub_batches(r: int, sigmas: np.ndarray, n_frames: int) -> list[slice]:
    """Replicas 0..r-1 of one batch in slices of about :data:`_BATCH_PAIRS` expected
    overlapping pairs (events placed uniformly in time: each meets h x mean reach x 2 / T others)."""
    h = len(sigmas)
    per_replica = 0.5 * h * h * 2.0 * float(np.mean(reach_frames(sigmas, n_frames))) / max(n_frames, 1) if h else 0.0
    step = max(1, int(_BATCH_PAIRS // max(per_replica, 1.0)))
    return [slice(a, min(r, a + step)) for a in range(0, r, step)]
#: Events (replicas x hops) the reference and the null model evaluate per call: past
#: ~2,500 hops fewer repetitions are drawn (each already samples > 10^7 pairs), so the
#: cost of a slider move stays O(budget x overlaps per hop), not O(replicas x hops).
EVENT_BUDGET = 500_000
#: The null model never uses fewer replicas than this.
MIN_NULL_REPLICAS = 10


def replicas_for(requested: int, n_hops: int, minimum: int = 1) -> int:
    """Repetitions within :data:`EVENT_BUDGET` for ``n_hops`` events (never above ``requested``)."""
    return int(min(requested, max(minimum, EVENT_BUDGET // max(n_hops, 1))))
#: Up to this many hops, :class:`SpatialPairs` keeps a hops x hops boolean table.
_TABLE_LIMIT = 8000
#: Width rules of the events (see :func:`event_sigmas`).
WIDTH_RULES = ("duration", "padded")


# --------------------------------------------------------------------------- lattice sums
def _lattice_sum(mu: np.ndarray, s: np.ndarray) -> np.ndarray:
    """sum over all integers t of exp(-(t - mu)^2 / (2 s^2)), to ~1e-12 relative.

    Poisson summation, sqrt(2 pi) s (1 + 2 sum_k exp(-2 pi^2 k^2 s^2) cos(2 pi k mu)):
    the correction is below 1e-16 from s = 1.4 on, two terms suffice from s = 0.6,
    and narrower Gaussians are summed directly.
    """
    mu = np.asarray(mu, float)
    s = np.asarray(s, float)
    out = np.sqrt(2 * np.pi) * s
    mid = (s >= 0.6) & (s < 1.4)
    if mid.any():
        sm, mm = s[mid], mu[mid]
        e1 = np.exp(-2.0 * np.pi**2 * sm**2)
        out[mid] *= 1 + 2 * e1 * np.cos(2 * np.pi * mm) + 2 * e1**4 * np.cos(4 * np.pi * mm)
    narrow = s < 0.6
    if narrow.any():
        sn, mn = s[narrow], mu[narrow]
        t = np.floor(mn)[:, None] + np.arange(-5, 7)[None, :]
        out[narrow] = np.exp(-0.5 * ((t - mn[:, None]) / sn[:, None]) ** 2).sum(axis=1)
    return out


@dataclass
class Events:
    """Smoothed hop events: centres and widths (frames) and their moments over T frames."""

    mids: np.ndarray
    sigmas: np.ndarray
    n_frames: int

    def __post_init__(self):
        self.mids = np.asarray(self.mids, float)
        self.sigmas = np.asarray(self.sigmas, float)
        s1 = _lattice_sum(self.mids, self.sigmas)
        s2 = _lattice_sum(self.mids, self.sigmas / np.sqrt(2.0))
        self.mean = s1 / self.n_frames
        self.std = np.sqrt(np.maximum(s2 / self.n_frames - self.mean**2, 1e-300))

    def __len__(self) -> int:
        return len(self.mids)

    def take(self, idx: np.ndarray) -> "Events":
        """The events ``idx`` (moments carried over, not recomputed)."""
        out = object.__new__(Events)
        out.mids, out.sigmas, out.n_frames = self.mids[idx], self.sigmas[idx], self.n_frames
        out.mean, out.std = self.mean[idx], self.std[idx]
        return out

    @property
    def z(self) -> np.ndarray:
        return self.mean / self.std


def reach_frames(sigmas: np.ndarray, n_frames: int) -> np.ndarray:
    """Half-width (frames) beyond which an event cannot overlap another.

    C_hk > 0 needs exp(-d^2 / 2S^2) > sqrt(2 pi) S / T roughly (S^2 = s_h^2 + s_k^2),
    so d < S sqrt(2 ln T) <= reach_h + reach_k with reach = s sqrt(2 ln T) + 1.
    """
    return np.asarray(sigmas, float) * np.sqrt(2.0 * np.log(max(n_frames, 3))) + 1.0


def _partners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """For intervals sorted by ``lo``: how many later intervals each one intersects
    (its partners are the next ``count`` intervals)."""
    stop = np.searchsorted(lo, hi, side="left")
    return np.maximum(stop - np.arange(len(lo)) - 1, 0)


def pearson_matrix(mids: np.ndarray, sigmas: np.ndarray, n_frames: int) -> np.ndarray:
    """Dense Pearson matrix of the events (display and tests; O(events^2) memory)."""
    ev = Events(mids, sigmas, n_frames)
    c = -np.outer(ev.z, ev.z)  # pairs that do not overlap
    order, a, b, v = _sorted_correlations(ev)
    i, j = order[a], order[b]
    c[i, j] = v
    c[j, i] = v
    np.fill_diagonal(c, 1.0)
    return np.clip(c, -1.0, 1.0)


# --------------------------------------------------------------------------- reference
@dataclass
class Reference:
    """Off-diagonal correlations of randomly placed events (the paper's reference).

    ``mean`` is exact over all pairs of all repetitions. Quantiles are exact too:
    pairs that do not overlap have C <= 0, so only the overlapping pairs' positive
    values are kept (``positive``, sorted when a quantile is first asked for);
    ``n_pairs`` counts every pair.
    """

    mean: float
    positive: np.ndarray
    n_pairs: int
    repetitions: int

    def quantile(self, q: float) -> float:
        """Exact q-quantile (inverse CDF) of all off-diagonal correlations; 0.0 when it
        falls among the non-positive ones (never concerted anyway)."""
        if self.n_pairs == 0:
            return 0.0
        if not getattr(self, "_sorted", False):  # sorted on the first quantile asked (the mean needs none)
            self.positive = np.sort(self.positive)
            self._sorted = True
        rank = int(np.ceil(q * self.n_pairs)) - 1  # 0-based rank of the q-quantile
        above = rank - (self.n_pairs - len(self.positive))
        return float(self.positive[above]) if above >= 0 else 0.0

    def level(self, spec: str | float) -> float:
        """The reference level: ``"mean"`` or a quantile in (0, 1)."""
        return self.mean if spec == "mean" else self.quantile(float(spec))


def _stack_replicas(mids: np.ndarray, sigmas: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Lay R rows of event centres end to end, far enough apart never to overlap."""
    r, h = mids.shape
    gap = n_frames + 4 * float(np.max(reach_frames(sigmas, n_frames), initial=1.0))
    gap = np.ceil(gap)  # integer shift keeps each event's moments unchanged
    return (mids + gap * np.arange(r)[:, None]).ravel(), np.tile(sigmas, r)


def random_reference(
    sigmas: np.ndarray, n_frames: int, repetitions: int = 100, seed: int = 0, width: str = "own"
) -> Reference:
    """Correlations of the same events placed uniformly at random (METHOD.md section 4).

    Parameters
    ----------
    sigmas : ndarray
        Gaussian widths (frames) of the real events.
    width : {"own", "mean"}
        Keep each event's own width, or give all the mean width (the paper).
    """
    h = len(sigmas)
    if h < 2:
        return Reference(0.0, np.zeros(0), 0, repetitions)
    rng = np.random.default_rng(seed)
    sig = np.full(h, float(np.mean(sigmas))) if width == "mean" else np.asarray(sigmas, float)
    repetitions = replicas_for(repetitions, h)
    total, positive = 0.0, []
    per_batch = max(1, _BATCH_EVENTS // h)
    for r0 in range(0, repetitions, per_batch):
        all_mids = rng.uniform(0, n_frames - 1, size=(min(per_batch, repetitions - r0), h))
        for part in _sub_batches(len(all_mids), sig, n_frames):  # the same draws, fewer pairs at once
            mids = all_mids[part]
            r = len(mids)
            ev = Events(*_stack_replicas(mids, sig, n_frames), n_frames)
            order, a, b, c = _sorted_correlations(ev)
            z = ev.z.reshape(r, h)
            # Sum over all pairs of C = overlap part - sum_{h<k} z_h z_k (non-overlapping pairs: -z z).
            zz = 0.5 * (z.sum(axis=1) ** 2 - (z * z).sum(axis=1))
            zs = ev.z[order]
            x = c + zs[a] * zs[b]
            total += float(x.sum() - zz.sum())
            positive.append(c[c > 0])
            del order, a, b, c, x, ev
    n_pairs = repetitions * h * (h - 1) // 2
    return Reference(total / n_pairs, np.concatenate(positive), n_pairs, repetitions)


# --------------------------------------------------------------------------- groups
@dataclass
class Correlations:
    """Concerted pairs of hop events and their connected components.

    Attributes
    ----------
    level : float
        Reference level; a pair is concerted when it overlaps (C > 0) and C > level.
    edges : ndarray (E, 2)
        Concerted pairs h < k.
    group_of : ndarray (H,)
        Group label of each event, groups numbered by their first hop's start.
    order : ndarray (H,)
        Events reordered by group (paper Fig. 3b): ``matrix[order][:, order]``.
    events : Events
        The smoothed events; ``matrix`` (display only) is formed from them on demand.
    """

    level: float
    edges: np.ndarray
    group_of: np.ndarray
    order: np.ndarray
    events: Events | None = None  # for the display matrix, formed on first access

    @property
    def matrix(self) -> np.ndarray | None:
        """Dense Pearson matrix (display only; None past ``DENSE_LIMIT`` events)."""
        if not hasattr(self, "_matrix"):
            ev = self.events
            h = len(self.group_of)
            if h == 0:
                self._matrix = np.zeros((0, 0))
            else:
                self._matrix = pearson_matrix(ev.mids, ev.sigmas, ev.n_frames) if ev is not None and h <= DENSE_LIMIT else None
        return self._matrix

    @property
    def groups(self) -> list[np.ndarray]:
        """Hop indices of each group, in group order."""
        if len(self.group_of) == 0:
            return []
        bounds = np.flatnonzero(np.diff(self.group_of[self.order])) + 1
        return np.split(self.order, bounds)

    @property
    def sizes(self) -> np.ndarray:
        """n (number of hop events) of each group."""
        return np.bincount(self.group_of) if len(self.group_of) else np.zeros(0, int)

    def binary(self) -> np.ndarray:
        """The binarised matrix (1 where concerted, 1 on the diagonal)."""
        h = len(self.group_of)
        b = np.eye(h, dtype=np.uint8)
        if len(self.edges):
            b[self.edges[:, 0], self.edges[:, 1]] = 1
            b[self.edges[:, 1], self.edges[:, 0]] = 1
        return b


def event_sigmas(hops: Hops, width_factor: float = 1.0, rule: str = "padded") -> np.ndarray:
    """Gaussian standard deviation (frames) of each event.

    ``rule="padded"`` (default): FWHM = (duration + 2) x ``width_factor``, from the last
    frame at A to the first at B, the whole motion: the transit found outside the
    vibration radius is shorter than the motion, and consecutive hops of a chain then
    fail to overlap (benchmarks/chains.py). ``rule="duration"`` (the paper): FWHM = the
    transit's duration x ``width_factor``.
    """
    frames = np.maximum(hops.duration_frames.astype(float), 1.0)
    if rule == "padded":
        frames = frames + 2.0
    elif rule != "duration":
        raise ValueError(f"width rule must be one of {WIDTH_RULES}")
    return frames * width_factor * FWHM_TO_SIGMA


class SpatialPairs:
    """The hop pairs whose start or end centres lie within ``distance_A`` of one another
    (any of the four combinations, minimum image), found once with a k-d tree over the
    periodic images of the centres, then looked up for any event pairs (events are hops
    modulo ``len(hops)``, so null replicas share the lookup)."""

    def __init__(self, hops: Hops, cell: np.ndarray, distance_A: float):
        self.h = h = max(len(hops), 1)
        ends = np.concatenate([hops.origin_A, hops.target_A])  # point p belongs to hop p % H
        images, owner = periodic_images(ends, cell)
        frac = ends @ np.linalg.inv(np.asarray(cell, float))
        base = cKDTree((frac - np.floor(frac)) @ np.asarray(cell, float))
        m = base.sparse_distance_matrix(cKDTree(images), distance_A, output_type="ndarray")
        a, b = m["i"] % h, owner[m["j"]] % h
        if h <= _TABLE_LIMIT:  # a boolean table (at most 64 MB) is the fastest lookup
            self.table = np.zeros((h, h), bool)
            self.table[a, b] = True
            self.table[b, a] = True
        else:
            self.table = None
            self.keys = np.unique(np.minimum(a, b).astype(np.int64) * h + np.maximum(a, b))

    def close(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """True for the event pairs (i, j) whose hops come within the distance."""
        a, b = i % self.h, j % self.h
        if self.table is not None:
            return self.table[a, b]
        key = np.minimum(a, b).astype(np.int64) * self.h + np.maximum(a, b)
        pos = np.clip(np.searchsorted(self.keys, key), 0, max(len(self.keys) - 1, 0))
        return (self.keys[pos] == key) if len(self.keys) else np.zeros(len(key), bool)


def _sorted_correlations(ev: Events):
    """Every overlapping pair in time order: (order, a, b, C) with a < b indices into
    ``ev.take(order)`` (events sorted by the start of their reach), a non-decreasing.

    Each event's own values are repeated over its partners (a sequential copy, not a
    gather), the partners' values gathered from the sorted arrays (neighbours in memory).
    """
    reach = reach_frames(ev.sigmas, ev.n_frames)
    order = np.argsort(ev.mids - reach, kind="stable")
    mid, sig2 = ev.mids[order], ev.sigmas[order] ** 2
    mean, std = ev.mean[order], ev.std[order]
    count = _partners(mid - reach[order], mid + reach[order])
    a = np.repeat(np.arange(len(mid)), count)
    b = np.arange(len(a)) - np.repeat(np.cumsum(count) - count, count) + a + 1
    mi, a2 = np.repeat(mid, count), np.repeat(sig2, count)
    mj, b2 = mid[b], sig2[b]
    s2 = a2 + b2
    d = mi - mj
    x = np.exp(-0.5 * d * d / s2) * _lattice_sum((mi * b2 + mj * a2) / s2, np.sqrt(a2 * b2 / s2))
    c = (x / ev.n_frames - np.repeat(mean, count) * mean[b]) / (np.repeat(std, count) * std[b])
    return order, a, b, c


def _concerted_sorted(ev: Events, level: float, near: SpatialPairs | None = None):
    """The pairs of :func:`_sorted_correlations` that are concerted: C > max(level, 0)
    and, with ``near``, close in space."""
    order, a, b, c = _sorted_correlations(ev)
    keep = c > max(float(level), 0.0)
    a, b, c = a[keep], b[keep], c[keep]
    if near is not None and len(a):
        keep = near.close(order[a], order[b])
        a, b, c = a[keep], b[keep], c[keep]
    return order, a, b, c


def concerted_pairs(ev: Events, level: float, near: SpatialPairs | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) that overlap and exceed ``level``, with their C; with ``near``, only
    those whose hops also come close in space."""
    order, a, b, c = _concerted_sorted(ev, level, near)
    i, j = order[a], order[b]
    return np.minimum(i, j), np.maximum(i, j), c


def correlate(
    hops: Hops,
    n_frames: int,
    level: float,
    width_factor: float = 1.0,
    cell: np.ndarray | None = None,
    pair_distance_A: float | None = None,
    width_rule: str = "padded",
    near: "SpatialPairs | None" = None,
) -> Correlations:
    """Concerted pairs (overlapping, C > level) and their connected components.

    With ``pair_distance_A`` (and the ``cell``), a correlated pair must also come within
    that distance in space (see :class:`SpatialPairs`; ``near`` passes one already built).
    The dense matrix (display only) is
    formed when first asked for; the groups never depend on it.
    """
    h = len(hops)
    if h == 0:
        z = np.zeros(0, int)
        return Correlations(level, np.zeros((0, 2), int), z, z)
    sig = event_sigmas(hops, width_factor, width_rule)
    ev = Events(hops.mid_frame.astype(float), sig, n_frames)
    if near is None and pair_distance_A is not None:
        near = SpatialPairs(hops, cell, pair_distance_A)
    i, j, _ = concerted_pairs(ev, level, near)
    edges = np.stack([i, j], axis=1)
    group_of, order = _components(edges, hops)
    return Correlations(level, edges, group_of, order, ev)


def _labels(edges_i: np.ndarray, edges_j: np.ndarray, n: int, rows_sorted: bool = False) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes (edges i -> j, either way)."""
    if not rows_sorted:
        order = np.argsort(edges_i, kind="stable")
        edges_i, edges_j = edges_i[order], edges_j[order]
    indptr = np.searchsorted(edges_i, np.arange(n + 1))
    g = sparse.csr_matrix((np.ones(len(edges_i), np.int8), edges_j, indptr), shape=(n, n))
    return connected_components(g, directed=True, connection="weak")[1]


def _components(edges: np.ndarray, hops: Hops) -> tuple[np.ndarray, np.ndarray]:
    """Connected components, renumbered by the start of their first hop."""
    h = len(hops)
    labels = _labels(edges[:, 0], edges[:, 1], h)
    first = np.full(labels.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, labels, hops.start * (h + 1) + np.arange(h))
    rank = np.argsort(np.argsort(first))
    group_of = rank[labels]
    order = np.lexsort((hops.start, group_of))
    return group_of, order


# --------------------------------------------------------------------------- null model
VERDICTS = ("beyond_chance", "chance", "percolated")
#: p-value below which the verdict is "beyond_chance". The test is calibrated (p is uniform
#: for independent walkers, tests/unit/test_correlations.py), so this is the share of
#: independent systems wrongly called concerted.
ALPHA = 0.01


@dataclass
class Concertedness:
    """Observed concertedness against the null model (METHOD.md section 4b).

    Attributes
    ----------
    observed_fraction : float
        Share of hops in groups of n >= 2.
    null_mean, null_ci95 : float, (float, float)
        Mean and 2.5-97.5 % band of that share over the null replicas.
    excess : float
        observed_fraction - null_mean.
    p_value : float
        (1 + replicas with share >= observed) / (1 + replicas); with fewer than 100
        replicas (very many hops, see :func:`replicas_for`) the one-sided normal p-value
        of the observed share against the replicas' mean and standard deviation.
    p_method : {"rank", "normal"}
    replicas : int
    verdict : {"beyond_chance", "chance", "percolated"}
    message : str
        One sentence for a reader, with what to do when the verdict is "percolated".
    null_p, null_p_ci95 : ndarray (n_max,), (2, n_max)
        Mean null pdf of n over n = 1..n_max (normalised over all groups) and its band.
    null_overflow : float
        Mean null share of groups with n > n_max.
    n_hops : int
    null_in_groups : ndarray (R,)
        Hops in groups of n >= 2 in each replica.
    null_counts : ndarray (R, n_max + 1)
        Groups of each size 1..n_max and the overflow, per replica (pooling sums these).
    """

    observed_fraction: float
    null_mean: float
    null_ci95: tuple[float, float]
    excess: float
    p_value: float
    p_method: str
    replicas: int
    verdict: str
    message: str
    null_p: np.ndarray
    null_p_ci95: np.ndarray
    null_overflow: float
    n_hops: int
    null_in_groups: np.ndarray
    null_counts: np.ndarray

    def to_dict(self) -> dict:
        return {
            "observed_fraction": self.observed_fraction, "null_mean": self.null_mean,
            "null_ci95": list(self.null_ci95), "excess": self.excess, "p_value": self.p_value,
            "p_method": self.p_method, "replicas": self.replicas, "verdict": self.verdict, "message": self.message,
            "n_hops": self.n_hops, "null_in_groups": self.null_in_groups, "null_counts": self.null_counts,
        }


def null_replicas(
    hops: Hops,
    sigmas: np.ndarray,
    n_frames: int,
    level: float,
    replicas: int = 200,
    seed: int = 0,
    cell: np.ndarray | None = None,
    pair_distance_A: float | None = None,
    near: "SpatialPairs | None" = None,
) -> np.ndarray:
    """Group sizes of every null replica, as an (R, H + 1) table: entry [r, n] = groups
    of size n in replica r (column 0 unused).

    Each replica shifts every ion's whole hop train circularly in time by its own
    uniform random whole number of frames, which keeps each ion's hop sequence and
    destroys only the timing between ions; then the same level and rules apply.
    All replicas of a batch are one vectorised computation (laid end to end in time).
    Past ~2,500 hops fewer replicas are drawn (:func:`replicas_for`, at least
    :data:`MIN_NULL_REPLICAS`); :func:`judge` then takes a normal p-value.
    """
    h = len(hops)
    replicas = replicas_for(replicas, h, MIN_NULL_REPLICAS)
    rng = np.random.default_rng(seed)
    n_ions = int(hops.ion.max()) + 1 if h else 0
    rows = []
    if near is None and pair_distance_A is not None and h:
        near = SpatialPairs(hops, cell, pair_distance_A)
    per_batch = max(1, _BATCH_EVENTS // max(h, 1))
    for r0 in range(0, replicas, per_batch):
        r = min(per_batch, replicas - r0)
        if h == 0:
            rows.append(np.zeros((r, 1), int))
            continue
        all_shifts = rng.integers(0, n_frames, size=(r, n_ions))
        for part in _sub_batches(r, sigmas, n_frames):  # the same draws, fewer pairs at once
            shift = all_shifts[part]
            r = len(shift)
            mids = np.mod(hops.mid_frame[None, :] + shift[:, hops.ion], n_frames)
            ev = Events(*_stack_replicas(mids, sigmas, n_frames), n_frames)
            order, a, b, _ = _concerted_sorted(ev, level, near)
            labels = np.empty(r * h, int)
            labels[order] = _labels(a, b, r * h, rows_sorted=True)  # components in time order
            sizes = np.bincount(labels)
            replica_of_label = np.zeros(len(sizes), int)
            replica_of_label[labels] = np.arange(r * h) // h
            table = np.zeros((r, h + 1), int)
            np.add.at(table, (replica_of_label, sizes), 1)
            rows.append(table)
            del order, a, b, ev
    return np.concatenate(rows)


def concertedness(observed_sizes: np.ndarray, null_table: np.ndarray, n_max: int = 20) -> Concertedness:
    """Compare the observed group sizes with the null replicas' (:func:`null_replicas`)."""
    sizes = np.asarray(observed_sizes, int)
    n = np.arange(null_table.shape[1])
    in_groups = (null_table * n)[:, 2:].sum(axis=1)
    counts = np.zeros((len(null_table), n_max + 1), int)
    k = min(n_max, null_table.shape[1] - 1)
    counts[:, :k] = null_table[:, 1 : k + 1]
    counts[:, n_max] = null_table[:, n_max + 1 :].sum(axis=1)
    return judge(int(sizes[sizes >= 2].sum()), int(sizes.sum()), in_groups, counts,
                 percolates(sizes), int(sizes.max(initial=0)))


def judge(
    observed_in_groups: int, n_hops: int, null_in_groups: np.ndarray, null_counts: np.ndarray,
    percolated: bool, biggest: int, alpha: float = ALPHA,
) -> Concertedness:
    """The verdict from hop counts in groups of n >= 2, observed and per null replica
    (also for counts pooled over simulations: sum them replica by replica)."""
    null_in_groups = np.asarray(null_in_groups)
    null_counts = np.asarray(null_counts)
    r = len(null_in_groups)
    h = max(n_hops, 1)
    obs = observed_in_groups / h
    share = null_in_groups / h
    null_mean = float(share.mean()) if r else float("nan")
    lo, hi = (float(v) for v in np.quantile(share, [0.025, 0.975])) if r else (np.nan, np.nan)
    p_method = "rank" if r >= 100 else "normal"
    if p_method == "rank":
        p = float((1 + np.sum(null_in_groups >= observed_in_groups)) / (1 + r))
    else:
        sd = float(share.std(ddof=1)) if r > 1 else 0.0
        p = float(norm.sf((obs - null_mean) / sd)) if sd > 0 else float(obs <= null_mean)
    if percolated:
        verdict = "percolated"
        message = (
            f"one group holds {biggest} of {n_hops} hops: transits overlap so densely that timing alone "
            "links almost everything and n cannot be judged. Apply the spatial criterion (pair distance, e.g. 4 Å) "
            "and a stricter reference level (quantile 0.99), or use finer frames."
        )
    elif p < alpha:
        verdict = "beyond_chance"
        message = (
            f"{100 * obs:.0f} % of hops are in concerted groups against {100 * null_mean:.0f} % "
            f"(95 % band {100 * lo:.0f}-{100 * hi:.0f} %) when the ions' hop trains are shifted at random: "
            f"concerted beyond chance (p = {p:.2g}, {r} replicas)."
        )
    else:
        verdict = "chance"
        message = (
            f"{100 * obs:.0f} % of hops are in concerted groups, within what independent ions give by chance "
            f"({100 * null_mean:.0f} %, 95 % band {100 * lo:.0f}-{100 * hi:.0f} %; p = {p:.2g}, {r} replicas): "
            "not distinguishable from chance."
        )
    groups = np.maximum(null_counts.sum(axis=1, keepdims=True), 1)
    pdfs = null_counts / groups  # (R, n_max + 1), last column the overflow
    q = np.quantile(pdfs[:, :-1], [0.025, 0.975], axis=0) if r else np.full((2, null_counts.shape[1] - 1), np.nan)
    return Concertedness(
        obs, null_mean, (lo, hi), obs - null_mean, p, p_method, r, verdict, message,
        pdfs[:, :-1].mean(axis=0) if r else np.full(null_counts.shape[1] - 1, np.nan), q,
        float(pdfs[:, -1].mean()) if r else float("nan"), int(n_hops), null_in_groups, null_counts,
    )


# --------------------------------------------------------------------------- mechanisms
@dataclass
class Mechanisms:
    """Classification of the concerted pairs (groups of exactly two hops; Fig. 4c,d)."""

    groups: np.ndarray  # group index of each pair
    kind: np.ndarray  # str: vacancy_following, knock_out, exchange, same_ion, other

    def counts(self) -> dict[str, int]:
        kinds = ["vacancy_following", "knock_out", "exchange", "same_ion", "other"]
        return {k: int(np.sum(self.kind == k)) for k in kinds}


def classify_pairs(hops: Hops, corr: Correlations, cell: np.ndarray, distance_A: float = 1.0) -> Mechanisms:
    """Vacancy following: the later hop ends within ``distance_A`` of where the earlier
    started. Knock-out: the earlier hop ends within ``distance_A`` of the later ion's
    starting centre. Both: exchange. Distances use the minimum image in ``cell``."""
    pairs = [g for g in corr.groups if len(g) == 2]
    if not pairs:
        return Mechanisms(np.zeros(0, int), np.zeros(0, dtype="<U17"))
    p = np.array([g[np.argsort(hops.start[g], kind="stable")] for g in pairs])
    early, late = p[:, 0], p[:, 1]
    vf = np.linalg.norm(minimum_image(hops.target_A[late] - hops.origin_A[early], cell), axis=1) < distance_A
    ko = np.linalg.norm(minimum_image(hops.target_A[early] - hops.origin_A[late], cell), axis=1) < distance_A
    kind = np.where(vf & ko, "exchange", np.where(vf, "vacancy_following", np.where(ko, "knock_out", "other")))
    kind = np.where(hops.ion[early] == hops.ion[late], "same_ion", kind)
    return Mechanisms(corr.group_of[early], kind.astype("<U17"))
