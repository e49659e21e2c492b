"""Distribution of the number n of concerted hop events and its exponential fit
(METHOD.md section 5; paper Figs. 4 and 5).

Each group counts once, with n = its number of hop events. The histogram over
n = 1..n_max is normalised over *all* groups: groups larger than n_max go into an
overflow bin that is reported, never dropped. f(n) = A exp(-b n) is fitted over n >= 2
only where it means something (at least three sizes n >= 2 observed, no group over
half of the hops or larger than n_max), with 95 % intervals from a bootstrap over groups.

The fit is the Poisson maximum likelihood over 2 <= n <= n_max (a least-squares fit of
ln p is biased by the sparse tail), vectorised over the bootstrap resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Bootstrap resamples of the groups for the 95 % intervals.
BOOTSTRAP = 400
#: Fewer sizes n >= 2 than this: no fit.
MIN_FIT_SIZES = 3


def percolates(sizes: np.ndarray) -> bool:
    """Groups percolate when the largest holds over half of the hops (judged from 10 hops on)."""
    sizes = np.asarray(sizes)
    total = int(sizes.sum())
    return total >= 10 and int(sizes.max(initial=0)) > 0.5 * total


@dataclass
class ExponentialFit:
    """f(n) = A exp(-b n) with 95 % intervals (bootstrap over groups)."""

    A: float
    b: float
    A_ci95: tuple[float, float]
    b_ci95: tuple[float, float]
    n_points: int

    def __call__(self, n):
        return self.A * np.exp(-self.b * np.asarray(n, dtype=float))

    def to_dict(self) -> dict:
        return {"A": self.A, "b": self.b, "A_ci95": list(self.A_ci95), "b_ci95": list(self.b_ci95), "n_points": self.n_points}


@dataclass
class NDistribution:
    """Normalised pdf of n with its overflow bin, fit and moments.

    Attributes
    ----------
    n : ndarray
        1..n_max.
    counts : ndarray
        Groups of each size n = 1..n_max.
    p : ndarray
        counts / all groups (the overflow bin included in the denominator).
    overflow : float
        Share of groups with n > n_max; ``overflow_count`` of them.
    n_groups : int
    mean_n, std_n : float
        Over the concerted groups (n >= 2, overflow included); NaN if none.
    mean_n_ci95 : (float, float)
        95 % bootstrap interval of ``mean_n``.
    mean_n_all : float
        Over all groups, isolated hops (n = 1) included.
    percolated : bool
        See :func:`percolates`. No fit either when the largest group exceeds n_max.
    fit : ExponentialFit or None
        None where a fit would not mean anything; ``fit_note`` says why.
    """

    n: np.ndarray
    counts: np.ndarray
    p: np.ndarray
    overflow: float
    overflow_count: int
    n_groups: int
    mean_n: float
    std_n: float
    mean_n_ci95: tuple[float, float]
    mean_n_all: float
    percolated: bool
    fit: ExponentialFit | None
    fit_note: str

    def to_dict(self) -> dict:
        return {
            "n": self.n, "p": self.p, "counts": self.counts, "overflow": self.overflow,
            "overflow_count": self.overflow_count, "n_groups": self.n_groups,
            "fit": self.fit.to_dict() if self.fit else None, "fit_note": self.fit_note,
            "mean_n": self.mean_n, "mean_n_ci95": list(self.mean_n_ci95), "std_n": self.std_n,
            "mean_n_all": self.mean_n_all, "percolated": self.percolated,
        }


def _poisson_ml_fit(n: np.ndarray, counts: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood A exp(-b n) over 2 <= n <= n_max for Poisson counts; rows are resamples.

    The likelihood of b depends on the counts only through their mean n over that
    range, which must equal the mean of the truncated exponential: solved by bisection
    (that mean falls monotonically with b). Then A normalises the model to the share of
    groups in the range. Unlike a least-squares fit of ln p, it has no bias from sparse tails.
    Returns (A, b) per row; NaN where fewer than two sizes are populated.
    """
    c = np.atleast_2d(counts).astype(float)[:, 1:]  # n = 2..n_max
    x = n[1:].astype(float)
    inside = c.sum(1)
    ok = ((c > 0).sum(1) >= 2) & (inside > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        target = (c * x).sum(1) / inside
    lo, hi = np.full(len(c), -3.0), np.full(len(c), 20.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        w = np.exp(-mid[:, None] * (x - x[0]))
        m = (w * x).sum(1) / w.sum(1)
        too_flat = m > target  # model mean too large: b must grow
        lo, hi = np.where(too_flat, mid, lo), np.where(too_flat, hi, mid)
    b = 0.5 * (lo + hi)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = inside / np.atleast_1d(total).astype(float) / np.exp(-b[:, None] * x).sum(1)
    return np.where(ok, a, np.nan), np.where(ok, b, np.nan)


def _ci(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if len(v) < 0.9 * len(values) or not len(v):
        return (np.nan, np.nan)
    lo, hi = np.quantile(v, [0.025, 0.975])
    return float(lo), float(hi)


def n_distribution(sizes: np.ndarray, n_max: int = 20, seed: int = 0, bootstrap: int = BOOTSTRAP) -> NDistribution:
    """pdf of n from the group sizes of one simulation, or of many pooled together."""
    sizes = np.asarray(sizes, dtype=int)
    sizes = sizes[sizes >= 1]
    n = np.arange(1, n_max + 1)
    g = len(sizes)
    capped = np.minimum(sizes, n_max + 1)  # n_max + 1 is the overflow bin
    full = np.bincount(capped, minlength=n_max + 2)[1:]
    counts, over = full[:n_max], int(full[n_max])
    p = counts / g if g else np.zeros(n_max)
    conc = sizes[sizes >= 2]
    rng = np.random.default_rng(seed)
    boot = rng.integers(0, g, size=(bootstrap, g)) if g else np.zeros((bootstrap, 0), int)
    mean_ci = (np.nan, np.nan)
    if len(conc) >= 2:
        bc = rng.integers(0, len(conc), size=(bootstrap, len(conc)))
        mean_ci = _ci(conc[bc].mean(axis=1))
    perc = percolates(sizes)
    sizes_ge2 = int(np.sum(counts[1:] > 0))
    fit, note = None, ""
    if g == 0:
        note = "no hops"
    elif perc:
        note = (f"the groups percolate (largest {sizes.max()} of {sizes.sum()} hops): "
                "an exponential fit of n would not mean anything")
    elif over:
        note = (f"{over} group(s) larger than n_max = {n_max} (largest {sizes.max()}): the groups approach "
                "percolation, an exponential fit of n would not mean anything")
    elif sizes_ge2 < MIN_FIT_SIZES:
        note = f"{sizes_ge2} size(s) n >= 2 observed: a fit needs at least {MIN_FIT_SIZES}"
    else:
        a, b = _poisson_ml_fit(n, counts, np.array([g]))
        width = n_max + 2
        flat = (capped[boot] + width * np.arange(bootstrap)[:, None]).ravel()
        rc = np.bincount(flat, minlength=bootstrap * width).reshape(bootstrap, width)[:, 1 : n_max + 1]
        ab, bb = _poisson_ml_fit(n, rc, np.full(bootstrap, g))
        fit = ExponentialFit(float(a[0]), float(b[0]), _ci(ab), _ci(bb), sizes_ge2)
        if not np.isfinite(fit.b_ci95[0]):
            # A curve without an interval is a number the data cannot support.
            fit, note = None, f"{int(np.sum(counts[1:]))} concerted groups: too few for a fit with an interval"
    return NDistribution(
        n=n, counts=counts, p=p, overflow=over / g if g else 0.0, overflow_count=over, n_groups=g,
        mean_n=float(conc.mean()) if len(conc) else np.nan, std_n=float(conc.std()) if len(conc) else np.nan,
        mean_n_ci95=mean_ci, mean_n_all=float(sizes.mean()) if g else np.nan, percolated=perc, fit=fit, fit_note=note,
    )
