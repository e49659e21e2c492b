"""Distribution of the number n of concerted hop events and its exponential fit
(METHOD.md section 5; paper Figs. 4 and 5).

Each concerted group counts once, with n = its number of hop events. The histogram over
n = 1..n_max is normalised to sum 1 over that range; groups larger than n_max are
reported apart. f(n) = A exp(-b n) is fitted over n >= 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import warnings

from scipy.optimize import OptimizeWarning, curve_fit


@dataclass
class ExponentialFit:
    """f(n) = A exp(-b n) with standard errors; NaN with a reason if not fittable."""

    A: float
    A_err: float
    b: float
    b_err: float
    n_points: int
    reason: str = ""

    def __call__(self, n):
        return self.A * np.exp(-self.b * np.asarray(n, dtype=float))


@dataclass
class NDistribution:
    """Normalised pdf of n with its fit and moments.

    Attributes
    ----------
    n : ndarray
        1..n_max.
    counts : ndarray
        Groups of each size.
    p : ndarray
        counts / counts.sum().
    overflow : int
        Groups with n > n_max (left out of p).
    mean_n, std_n : float
        Over the concerted groups (n >= 2) within 1..n_max.
    mean_n_all : float
        Over all groups, isolated hops (n = 1) included.
    fit : ExponentialFit
    """

    n: np.ndarray
    counts: np.ndarray
    p: np.ndarray
    overflow: int
    mean_n: float
    std_n: float
    mean_n_all: float
    fit: ExponentialFit


def _exp(n, a, b):
    return a * np.exp(-b * n)


def fit_exponential(n: np.ndarray, p: np.ndarray, counts: np.ndarray | None = None) -> ExponentialFit:
    """Least-squares fit of A exp(-b n) to the points with n >= 2 and p > 0.

    With ``counts`` given, each point is weighted by its Poisson error
    (sigma_p = p / sqrt(count)), so sparse tails do not dominate.
    """
    sel = (n >= 2) & (p > 0)
    k = int(sel.sum())
    if k < 2:
        return ExponentialFit(np.nan, np.nan, np.nan, np.nan, k, "fewer than two sizes n >= 2 observed")
    x, y = n[sel].astype(float), p[sel]
    slope, intercept = np.polyfit(x, np.log(y), 1)
    if k == 2:
        return ExponentialFit(float(np.exp(intercept)), np.nan, float(-slope), np.nan, k, "two sizes n >= 2: exact curve, no error estimate")
    sigma = y / np.sqrt(counts[sel]) if counts is not None else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # flat data: errors reported as NaN
            (a, b), cov = curve_fit(_exp, x, y, p0=(np.exp(intercept), -slope), sigma=sigma, absolute_sigma=False, maxfev=10000)
    except (RuntimeError, ValueError) as exc:
        return ExponentialFit(np.nan, np.nan, np.nan, np.nan, k, f"fit failed: {exc}")
    err = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else (np.nan, np.nan)
    return ExponentialFit(float(a), float(err[0]), float(b), float(err[1]), k)


def n_distribution(sizes: np.ndarray, n_max: int = 20) -> NDistribution:
    """pdf of n from the group sizes of one simulation, or of many pooled together."""
    sizes = np.asarray(sizes, dtype=int)
    n = np.arange(1, n_max + 1)
    counts = np.bincount(sizes[(sizes >= 1) & (sizes <= n_max)], minlength=n_max + 1)[1:]
    total = counts.sum()
    p = counts / total if total else np.zeros(n_max)
    conc = sizes[(sizes >= 2) & (sizes <= n_max)]
    inside = sizes[(sizes >= 1) & (sizes <= n_max)]
    return NDistribution(
        n=n,
        counts=counts,
        p=p,
        overflow=int(np.sum(sizes > n_max)),
        mean_n=float(conc.mean()) if conc.size else np.nan,
        std_n=float(conc.std()) if conc.size else np.nan,
        mean_n_all=float(inside.mean()) if inside.size else np.nan,
        fit=fit_exponential(n, p, counts),
    )
