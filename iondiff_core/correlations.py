"""Many-ion correlations: smoothed hop events, their Pearson matrix, the random
reference, concerted groups and the n = 2 mechanisms (METHOD.md section 4, paper
section 2.2 and Fig. 3).

Each hop is one event. Event h becomes a Gaussian over frames centred on the hop's
mid-frame with FWHM equal to its duration (times ``width_factor``). The Pearson
correlation of two such series needs only their overlap: every series is stored sparse
(truncated at ``TRUNCATE`` standard deviations, where it is below 1e-7 of its peak), so
the products cost O(events x width), not O(events^2 x frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from iondiff_core.hops import Hops
from iondiff_core.trajectory import minimum_image

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
TRUNCATE = 5.7  # exp(-5.7**2 / 2) < 1e-7
#: Above this many events, the dense matrix is not formed (memory); see :func:`correlate`.
DENSE_LIMIT = 6000
_HIST_EDGES = np.linspace(-1.0, 1.0, 40001)


@dataclass
class Series:
    """Smoothed event series as a sparse (events x frames) matrix and its moments."""

    matrix: sparse.csr_matrix
    mean: np.ndarray  # per event, mean over frames
    std: np.ndarray  # per event, population standard deviation over frames


@dataclass
class Reference:
    """Off-diagonal correlations of randomly placed events (the paper's reference).

    ``mean`` is exact over all repetitions; quantiles come from a histogram of the
    pooled values (bin 5e-5 wide).
    """

    mean: float
    histogram: np.ndarray
    repetitions: int

    def level(self, spec: str | float) -> float:
        """The reference level: ``"mean"`` or a quantile in (0, 1)."""
        if spec == "mean":
            return self.mean
        cdf = np.cumsum(self.histogram) / max(1, self.histogram.sum())
        i = int(np.searchsorted(cdf, float(spec)))
        return float(_HIST_EDGES[min(i + 1, len(_HIST_EDGES) - 1)])


@dataclass
class Correlations:
    """Correlation matrix of the hop events, its binarisation and the concerted groups.

    Attributes
    ----------
    matrix : ndarray (H, H) or None
        Pearson correlations between events (None past ``DENSE_LIMIT`` events).
    level : float
        Reference level; C_hk > level means concerted.
    edges : ndarray (E, 2)
        Concerted pairs h < k.
    group_of : ndarray (H,)
        Group label of each event, groups numbered by their first hop's start.
    order : ndarray (H,)
        Events reordered by group (paper Fig. 3b): ``matrix[order][:, order]``.
    """

    matrix: np.ndarray | None
    level: float
    edges: np.ndarray
    group_of: np.ndarray
    order: np.ndarray

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


def event_sigmas(hops: Hops, width_factor: float = 1.0) -> np.ndarray:
    """Gaussian standard deviation (frames) of each event: FWHM = duration x factor."""
    fwhm = np.maximum(hops.duration_frames.astype(float), 1.0) * width_factor
    return fwhm * FWHM_TO_SIGMA


def smooth(mids: np.ndarray, sigmas: np.ndarray, n_frames: int) -> Series:
    """Gaussian event series, sparse, with exact per-event mean and std over frames."""
    half = np.ceil(TRUNCATE * sigmas).astype(int) + 1
    lo = np.clip(np.floor(mids).astype(int) - half, 0, n_frames - 1)
    hi = np.clip(np.ceil(mids).astype(int) + half, 0, n_frames - 1)
    lengths = hi - lo + 1
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    row = np.repeat(np.arange(len(mids)), lengths)
    cols = np.arange(indptr[-1]) - np.repeat(indptr[:-1], lengths) + np.repeat(lo, lengths)
    vals = np.exp(-0.5 * ((cols - mids[row]) / sigmas[row]) ** 2)
    m = sparse.csr_matrix((vals, cols, indptr), shape=(len(mids), n_frames))
    s1 = np.bincount(row, weights=vals, minlength=len(mids))
    s2 = np.bincount(row, weights=vals * vals, minlength=len(mids))
    mean = s1 / n_frames
    var = np.maximum(s2 / n_frames - mean**2, 1e-300)
    return Series(m, mean, np.sqrt(var))


def _pair_products(series: Series) -> sparse.csr_matrix:
    """Sum over frames of g_h g_k for the overlapping pairs (sparse, H x H)."""
    return (series.matrix @ series.matrix.T).tocsr()


def pearson(series: Series, n_frames: int) -> np.ndarray:
    """Dense Pearson correlation matrix between the event series."""
    x = _pair_products(series).toarray() / n_frames
    z = series.mean / series.std
    c = x / np.outer(series.std, series.std) - np.outer(z, z)
    np.fill_diagonal(c, 1.0)
    return np.clip(c, -1.0, 1.0)


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
    hist = np.zeros(len(_HIST_EDGES) - 1, dtype=np.int64)
    if h < 2:
        return Reference(0.0, hist, repetitions)
    rng = np.random.default_rng(seed)
    sig = np.full(h, sigmas.mean()) if width == "mean" else sigmas
    total, count = 0.0, 0
    # The dense matrix only serves the quantile histogram: a subset of events suffices.
    sub = min(h, 1500)
    for _ in range(repetitions):
        mids = rng.uniform(0, n_frames - 1, size=h)
        s = smooth(mids, sig, n_frames)
        x = _pair_products(s)
        z = s.mean / s.std
        inv = 1.0 / s.std
        # Exact sum of all off-diagonal correlations from the sparse overlaps.
        coo = x.tocoo()
        sum_all = np.sum(coo.data * inv[coo.row] * inv[coo.col]) / n_frames - z.sum() ** 2
        total += sum_all - h  # the diagonal holds ones
        count += h * (h - 1)
        pick = rng.choice(h, sub, replace=False) if sub < h else np.arange(h)
        c = x[pick][:, pick].toarray() / n_frames * np.outer(inv[pick], inv[pick]) - np.outer(z[pick], z[pick])
        off = c[~np.eye(sub, dtype=bool)]
        bins = ((np.clip(off, -1, 1) + 1.0) * (0.5 * (len(_HIST_EDGES) - 1))).astype(np.int64)
        hist += np.bincount(np.minimum(bins, len(hist) - 1), minlength=len(hist))
    return Reference(total / count, hist, repetitions)


def correlate(
    hops: Hops,
    n_frames: int,
    level: float,
    width_factor: float = 1.0,
    cell: np.ndarray | None = None,
    pair_distance_A: float | None = None,
) -> Correlations:
    """Correlation matrix, concerted pairs (C > level) and their connected components.

    With ``pair_distance_A`` (and the ``cell``), a correlated pair must also come within
    that distance in space (see :func:`close_pairs`).
    """
    h = len(hops)
    if h == 0:
        z = np.zeros(0, int)
        return Correlations(np.zeros((0, 0)), level, np.zeros((0, 2), int), z, z)
    sig = event_sigmas(hops, width_factor)
    s = smooth(hops.mid_frame.astype(float), sig, n_frames)
    if h <= DENSE_LIMIT:
        c = pearson(s, n_frames)
        iu = np.triu_indices(h, 1)
        mask = c[iu] > level
        edges = np.stack([iu[0][mask], iu[1][mask]], axis=1)
    else:
        # Non-overlapping pairs have C = -z_h z_k < 0; with level >= 0 only overlaps count.
        c = None
        x = sparse.triu(_pair_products(s), 1).tocoo()
        z = s.mean / s.std
        vals = x.data / n_frames / (s.std[x.row] * s.std[x.col]) - z[x.row] * z[x.col]
        mask = vals > level
        edges = np.stack([x.row[mask], x.col[mask]], axis=1)
    if pair_distance_A is not None and len(edges):
        edges = edges[close_pairs(hops, edges, cell, pair_distance_A)]
    group_of, order = _components(edges, hops)
    return Correlations(c, level, edges, group_of, order)


def close_pairs(hops: Hops, pairs: np.ndarray, cell: np.ndarray, distance_A: float) -> np.ndarray:
    """True for the pairs (h, k) whose start or end centres lie within ``distance_A``
    of one another (any of the four combinations, minimum image)."""
    ends = np.stack([hops.origin_A, hops.target_A], axis=1)  # (H, 2, 3)
    a, b = ends[pairs[:, 0]], ends[pairs[:, 1]]
    d = np.linalg.norm(minimum_image(a[:, :, None, :] - b[:, None, :, :], cell), axis=-1)
    return d.reshape(len(pairs), -1).min(axis=1) < distance_A


def _components(edges: np.ndarray, hops: Hops) -> tuple[np.ndarray, np.ndarray]:
    """Connected components, renumbered by the start of their first hop."""
    h = len(hops)
    g = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(h, h)) if len(edges) else sparse.coo_matrix((h, h))
    _, labels = connected_components(g, directed=False)
    first = np.full(labels.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, labels, hops.start * (h + 1) + np.arange(h))
    rank = np.argsort(np.argsort(first))
    group_of = rank[labels]
    order = np.lexsort((hops.start, group_of))
    return group_of, order


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
