"""Transport from an unwrapped trajectory: MSD, tracer and full D, Haven ratio,
Nernst-Einstein conductivity, van Hove functions and Arrhenius fits (METHOD.md section 6;
paper eqs 1-6 and section 5.2).

Everything here is a pure function of numpy arrays. Units are in the names: Å, ps, K,
eV, S/cm; diffusion coefficients are given both in Å^2/ps and cm^2/s
(1 Å^2/ps = 1e-4 cm^2/s).

Conventions
-----------
MSD (paper eq 3)
    Time-origin averaged over every origin: ``MSD(m) = < |r(t0 + m dt) - r(t0)|^2 >``
    over all ``T - m`` origins, computed with the FFT algorithm (O(T log T) per
    coordinate; Calandrini et al. / nMOLDYN, the ``fft`` mode of MDAnalysis'
    ``EinsteinMSD``). Lags run 0..floor(max_lag_fraction (T - 1)); the paper uses 1/2.
Tracer and full (collective) MSD
    ``tracer_A2`` is averaged over the N mobile ions. ``collective_A2`` is the MSD of
    the summed displacement of all N ions divided by N, i.e. it includes the i-j cross
    terms of eq 3 (paper ref 21); for uncorrelated ions its expectation equals the
    tracer MSD, for ions that all move together it is N times the tracer MSD.
Diffusion coefficient (eq 4) and its 95 % interval
    ``MSD = 2 dim D t + c`` over a window of lags given as fractions of the longest lag
    (default 0.2..1.0; the paper fits the last 25 ps of 50 ps of lags, i.e. 0.5..1.0).
    MSD points at neighbouring lags share almost all their time origins, so they are
    strongly correlated and an ordinary least-squares error is 10-40x too small.
    :func:`diffusion_fits` therefore fits by generalised least squares (GLS) with the
    covariance of the MSD points, the approach of kinisi (McCluskey et al., JCTC 2024)
    and Bullerjahn et al. (J. Chem. Phys. 2020):

    * each axis of each path is modelled as a Gaussian random walk seen through Gaussian
      vibration noise (Bullerjahn's "localisation noise"): ``MSD = 2 dim D t + c``, with the
      noise variance ``c / (2 dim)`` taken from the fitted offset c. The covariance of the
      all-origins MSD points of such a path is exact, in closed form
      (:func:`random_walk_msd_covariance`; without noise, the average over T frames is worth
      ``1.5 T / m`` independent squared displacements at lag ``m << T``);
    * it is divided by the paths averaged: N ions for the tracer MSD (taken as
      independent, as kinisi does), 1 for the collective one;
    * and scaled lag by lag by ``kappa`` >= 1, how much the measured squared displacements
      (over ions and time origins) scatter beyond this Gaussian model (ions that hop: few
      carry the MSD), smoothed as a power law in the lag;
    * where the MSD is not a straight line over the window, the covariance is scaled up by
      the reduced chi-square of the fit (Birge ratio): the slope then depends on how the
      lags are weighted, and the interval says so;
    * and where the MSD's log-log slope is below 0.8 (not yet diffusive), the interval is
      widened to the slopes of the window's two halves: a systematic error the statistical
      interval does not carry.

    The 95 % interval holds the D not rejected at 5 % with the covariance at that D (the
    variance grows with D: one centre-of-mass path gets an asymmetric interval, unbounded
    above when it cannot bound D); it is ``D +- 1.96 sd`` when the data are many. A lower
    bound <= 0 means D is not distinguished from 0. It is checked by coverage on random walks of
    known D (tests) and against kinisi 2.1 on real runs (benchmarks/validate_real.py).
    kinisi itself is not a dependency (only of the validation benchmark): it samples the
    posterior by MCMC (seconds per run, where this refits in milliseconds on every slider
    move), pulls in scipp, emcee, dynesty and statsmodels, and its data-driven covariance
    needs reconditioning (it is not positive definite on real runs); docs/VALIDATION.md
    compares the two.
    Without the trajectory's statistics (bare arrays to :func:`fit_diffusion`), the fit is
    ordinary least squares and has no interval.
Conductivity
    ``sigma = n q^2 D / (V k_B T)``; with the full D this is the correlated
    conductivity, with the tracer D the Nernst-Einstein estimate (paper eq 1).
van Hove (eqs 5-6)
    ``self``: a probability density in r, ``sum(self[k]) * dr = 1`` minus the share of
    displacements beyond ``r_max_A``. ``distinct``: normalised by the ideal-gas count,
    so it tends to 1 at large r and equals g(r) at t = 0.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.fft
from threadpoolctl import threadpool_limits

from iondiff_core.errors import InputError

# --------------------------------------------------------------------------- constants
#: Boltzmann constant in eV/K (CODATA 2018, exact in SI).
KB_EV_PER_K = 8.617333262e-5
#: Boltzmann constant in J/K (exact).
KB_J_PER_K = 1.380649e-23
#: Elementary charge in C (exact).
E_CHARGE_C = 1.602176634e-19
#: Length conversions.
A_TO_M = 1e-10
A_TO_CM = 1e-8
A3_TO_M3 = 1e-30
A3_TO_CM3 = 1e-24
#: Time conversions.
PS_TO_S = 1e-12
FS_TO_PS = 1e-3
#: Diffusion coefficient conversions: 1 Å^2/ps = 1e-4 cm^2/s = 1e-8 m^2/s.
A2_PS_TO_CM2_S = A_TO_CM**2 / PS_TO_S
A2_PS_TO_M2_S = A_TO_M**2 / PS_TO_S
#: Conductivity conversion: 1 S/m = 0.01 S/cm.
S_M_TO_S_CM = 1e-2
#: 1 / ps = 1 THz.
PER_PS_TO_THZ = 1.0

# Elements per FFT block (bounds memory of the MSD to ~ 16 bytes x this).
_FFT_BLOCK_ELEMENTS = 1 << 20
# Elements per block of pair (distinct) or self displacement vectors in the van Hove part.
_PAIR_BLOCK_ELEMENTS = 1 << 19
#: Most lags (evenly spaced over 1..max lag) entering the GLS fit of D; MSD points this
#: close are nearly perfectly correlated, so more would add cost, not information.
FIT_LAGS = 128
# Variance of squared displacements: origins every max(1, lag // this) frames ...
_VAR_ORIGIN_DIVISOR = 8
# ... and at most this many (origin, ion) samples per lag.
_VAR_SAMPLES = 1 << 19
#: Two-sided 95 % quantile of the standard normal.
Z95 = 1.959963984540054
#: MSD log-log slope below which the motion is not yet diffusive (METHOD.md section 6).
DIFFUSIVE_SLOPE_MIN = 0.8


# --------------------------------------------------------------------------- MSD
@dataclass
class MSDResult:
    """Time-origin averaged mean squared displacements (paper eq 3).

    Attributes
    ----------
    lag_ps : ndarray, shape (L,)
        Lag times in ps, ``arange(L) * timestep_ps`` (starts at 0).
    tracer_A2 : ndarray, shape (L,)
        MSD averaged over time origins and over the ions, Å^2.
    collective_A2 : ndarray, shape (L,)
        MSD of the summed displacement of all ions divided by ``n_ions``, Å^2
        (full / collective MSD, including the i-j cross terms).
    n_ions : int
        Number of ions N.
    n_frames : int
        Number of frames T of the trajectory.
    timestep_ps : float
        Time between frames in ps.
    tracer_sq_var_A4, collective_sq_var_A4 : ndarray, shape (L,)
        Variance of one squared displacement ``|r(t0 + m dt) - r(t0)|^2`` (Å^4) over
        time origins and ions (tracer) or over time origins of the summed displacement,
        divided by N as the collective MSD is; measured at up to :data:`FIT_LAGS` evenly
        spaced lags and nan elsewhere (the GLS fit of D uses those lags).
    """

    lag_ps: np.ndarray
    tracer_A2: np.ndarray
    collective_A2: np.ndarray
    n_ions: int
    n_frames: int
    timestep_ps: float
    tracer_sq_var_A4: np.ndarray | None = None
    collective_sq_var_A4: np.ndarray | None = None

    @property
    def lag_frames(self) -> np.ndarray:
        return np.arange(self.lag_ps.size)


def _msd_sum_fft(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Sum over columns of the origin-averaged MSD of each column of ``x`` (T, C).

    ``MSD(m) = [S1(m) - 2 S2(m)] / (T - m)`` with
    ``S1(m) = sum_{k<T-m} (x_k^2 + x_{k+m}^2)`` (prefix sums) and
    ``S2(m) = sum_{k<T-m} x_k x_{k+m}`` (autocorrelation by zero-padded FFT).
    """
    T, C = x.shape
    nfft = scipy.fft.next_fast_len(T + max_lag, real=True)
    # At least ~8 column blocks, so the FFT's temporaries stay well below the input's size.
    block = max(1, min(_FFT_BLOCK_ELEMENTS // nfft, -(-C // 8)))
    sq = np.zeros(T)
    power = np.zeros(nfft // 2 + 1)
    for c0 in range(0, C, block):  # loop over column blocks only (bounded memory)
        xb = np.asarray(x[:, c0 : c0 + block], dtype=np.float64)
        xb = xb - xb.mean(axis=0)  # MSD is shift invariant; centring limits round-off
        sq += np.einsum("tc,tc->t", xb, xb)
        f = scipy.fft.rfft(xb, n=nfft, axis=0)
        power += (f.real**2 + f.imag**2).sum(axis=1)
    acf = scipy.fft.irfft(power, n=nfft)[: max_lag + 1]
    m = np.arange(max_lag + 1)
    cs = np.concatenate([[0.0], np.cumsum(sq)])
    s1 = cs[T - m] + (cs[T] - cs[m])
    out = (s1 - 2.0 * acf) / (T - m)
    out[0] = 0.0
    return np.maximum(out, 0.0)


def fit_lags(max_lag: int) -> np.ndarray:
    """The lags (frames) at which the GLS fit of D evaluates the MSD: up to :data:`FIT_LAGS`
    evenly spaced over ``1..max_lag``, both ends included."""
    return np.unique(np.round(np.linspace(1, max_lag, min(max_lag, FIT_LAGS))).astype(int))


def _sq_disp_variance(x: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Variance of ``|x[t0 + m] - x[t0]|^2`` over origins t0 and paths, for each lag m.

    ``x``: (T, P, 3). Origins every ``max(1, m // 8)`` frames (more are nearly duplicates)
    and at most :data:`_VAR_SAMPLES` (origin, path) samples per lag bound the cost to
    O(len(lags) x _VAR_SAMPLES), whatever the run's length.
    """
    T, P, _ = x.shape
    out = np.full(lags.size, np.nan)
    for k, m in enumerate(lags):  # loop over <= FIT_LAGS lags, vectorised over origins and paths
        n0 = T - m
        stride = max(1, m // _VAR_ORIGIN_DIVISOR, -(-n0 * P // _VAR_SAMPLES))
        d = np.asarray(x[m::stride] - x[:n0:stride], dtype=np.float64)
        s = np.einsum("tpk,tpk->tp", d, d)
        if s.size > 1:
            out[k] = s.var(ddof=1)
    return out


def msd(positions_A: np.ndarray, timestep_ps: float, max_lag_fraction: float = 0.5) -> MSDResult:
    """Tracer and collective MSD of unwrapped positions (paper eq 3), by FFT.

    Parameters
    ----------
    positions_A : array, shape (T, N, 3)
        Unwrapped Cartesian positions of the mobile ions in Å (see
        :func:`iondiff_core.trajectory.unwrap`).
    timestep_ps : float
        Time between frames in ps.
    max_lag_fraction : float
        Longest lag as a fraction of the run: lags are 0..floor(max_lag_fraction (T-1))
        frames (paper: 1/2).

    Returns
    -------
    MSDResult

    Notes
    -----
    Cost O(N T log T), memory bounded by column blocks. Every lag is averaged over
    all ``T - m`` time origins, exactly as the O(T^2) double sum.
    """
    pos = np.asarray(positions_A)
    if pos.ndim != 3 or pos.shape[2] != 3:
        raise InputError(f"positions must have shape (frames, ions, 3), got {pos.shape}")
    T, N, _ = pos.shape
    if T < 2 or N < 1:
        raise InputError(f"need at least 2 frames and 1 ion for an MSD, got {T} frames and {N} ions")
    if not (timestep_ps > 0 and np.isfinite(timestep_ps)):
        raise InputError(f"timestep must be a positive number of ps, got {timestep_ps}")
    if not 0 < max_lag_fraction <= 1:
        raise InputError(f"max_lag_fraction must be in (0, 1], got {max_lag_fraction}")
    total = pos.sum(axis=1, dtype=np.float64)  # (T, 3) summed position of all ions
    if not np.all(np.isfinite(total)):  # a NaN or inf anywhere reaches the sum (no (T, N, 3) mask)
        raise InputError("positions contain NaN or infinite values")
    max_lag = max(1, int(np.floor(max_lag_fraction * (T - 1))))
    tracer = _msd_sum_fft(pos.reshape(T, N * 3), max_lag) / N
    collective = _msd_sum_fft(total, max_lag) / N
    lag = np.arange(max_lag + 1) * float(timestep_ps)
    grid = fit_lags(max_lag)
    var_t = np.full(max_lag + 1, np.nan)
    var_c = np.full(max_lag + 1, np.nan)
    var_t[grid] = _sq_disp_variance(pos, grid)
    var_c[grid] = _sq_disp_variance(total[:, None, :], grid) / N**2
    return MSDResult(lag, tracer, collective, int(N), int(T), float(timestep_ps), var_t, var_c)


# --------------------------------------------------------------------------- D
@dataclass
class DiffusionFit:
    """Einstein-relation fit ``MSD = 2 dim D t + c`` (paper eq 4) with its 95 % interval.

    Attributes
    ----------
    D_A2_ps, D_err_A2_ps : float
        Diffusion coefficient and its standard error in Å^2/ps (nan if no fit). With
        ``method == "gls"`` the error accounts for the correlation between MSD points
        (module docstring); with ``"ols"`` it is the ordinary least-squares one, which
        does not.
    D_cm2_s, D_err_cm2_s : float
        The same in cm^2/s.
    intercept_A2 : float
        Fitted intercept c in Å^2 (vibrational / ballistic offset).
    t_start_ps, t_end_ps : float
        First and last lag actually used in the fit, ps.
    r2 : float
        Coefficient of determination of an ordinary least-squares line over the same lags
        (how straight the MSD is there).
    n_points : int
        Number of MSD points in the fit.
    dim : int
        Dimensionality used (D = slope / (2 dim)).
    widened : bool
        True if the requested window held fewer than 3 points and all lags > 0 were used.
    reason : str
        Why D is nan, why the window was widened, or why there is no interval; empty otherwise.
    ci95_A2_ps : tuple of float
        95 % interval (lo, hi) of D in Å^2/ps; (nan, nan) without one (see ``reason``).
    loglog_slope : float
        Least-squares slope of log MSD against log t over the fit window's lags:
        1 for diffusion, < 1 while the motion is still caged or sub-diffusive
        (nan if fewer than 2 positive MSD points).
    method : str
        ``"gls"`` (covariance-aware, with an interval) or ``"ols"``.
    n_paths : int
        Independent paths the MSD averages (N ions for the tracer, 1 for the collective
        MSD); 0 with ``"ols"``.
    """

    D_A2_ps: float
    D_err_A2_ps: float
    D_cm2_s: float
    D_err_cm2_s: float
    intercept_A2: float
    t_start_ps: float
    t_end_ps: float
    r2: float
    n_points: int
    dim: int = 3
    widened: bool = False
    reason: str = ""
    ci95_A2_ps: tuple[float, float] = (float("nan"), float("nan"))
    loglog_slope: float = float("nan")
    method: str = "ols"
    n_paths: int = 0

    @property
    def window_ps(self) -> tuple[float, float]:
        """The fit window ``(t_start_ps, t_end_ps)``."""
        return (self.t_start_ps, self.t_end_ps)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.D_A2_ps))

    @property
    def ci95_cm2_s(self) -> tuple[float, float]:
        """95 % interval of D in cm^2/s."""
        return (self.ci95_A2_ps[0] * A2_PS_TO_CM2_S, self.ci95_A2_ps[1] * A2_PS_TO_CM2_S)

    @property
    def excludes_zero(self) -> bool:
        """True if the 95 % interval lies above 0 (D is distinguished from 0)."""
        return bool(np.isfinite(self.ci95_A2_ps[0]) and self.ci95_A2_ps[0] > 0)


def _nan_fit(dim: int, reason: str, n: int = 0) -> DiffusionFit:
    nan = float("nan")
    return DiffusionFit(nan, nan, nan, nan, nan, nan, nan, nan, n, dim, False, reason)


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, float]:
    """Slope, intercept, slope SE, intercept SE, r^2 of y = a x + b (SEs nan with 2 points)."""
    n = x.size
    xm, ym = x.mean(), y.mean()
    dx, dy = x - xm, y - ym
    sxx = float(dx @ dx)
    slope = float(dx @ dy) / sxx
    intercept = float(ym - slope * xm)
    resid = y - (slope * x + intercept)
    ssr = float(resid @ resid)
    sst = float(dy @ dy)
    r2 = 1.0 - ssr / sst if sst > 0 else float("nan")
    if n > 2:
        s2 = ssr / (n - 2)
        se_slope = float(np.sqrt(s2 / sxx))
        se_int = float(np.sqrt(s2 * (1.0 / n + xm**2 / sxx)))
    else:
        se_slope = se_int = float("nan")
    return slope, intercept, se_slope, se_int, r2


def _msd_covariance_terms(lags_frames, n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three terms of :func:`random_walk_msd_covariance`: walk-walk, walk-noise, noise-noise."""
    lag = np.asarray(lags_frames, dtype=float)
    T = float(n_frames)

    def p2(n):
        return n * (n + 1) * (2 * n + 1) / 6.0

    def p3(n):
        return (n * (n + 1) / 2.0) ** 2

    a = np.minimum(lag[:, None], lag[None, :])
    b = np.maximum(lag[:, None], lag[None, :])
    ka, kb = T - a, T - b
    w0 = np.maximum(1.0, a + b - T + 1.0)
    hi = a - 1.0
    s1 = np.where(w0 <= hi, (T - a - b) * (p2(hi) - p2(w0 - 1)) + p3(hi) - p3(w0 - 1), 0.0)
    s2 = (b - a + 1.0) * a * a * kb
    walk = 2.0 * (2.0 * s1 + s2) / (ka * kb)
    cross = 8.0 * a / ka
    same = a == b
    e2 = np.where(same, 4.0 * kb + 2.0 * np.maximum(0.0, kb - a),
                  2.0 * kb + np.maximum(0.0, kb - a) + np.maximum(0.0, T - a - b))
    noise = 2.0 * e2 / (ka * kb)
    return walk, cross, noise


def random_walk_msd_covariance(lags_frames, n_frames: int, noise_ratio: float = 0.0) -> np.ndarray:
    """Exact covariance of the all-origins MSD of a 1-D Gaussian random walk seen through
    independent Gaussian noise (vibration about the path; "localisation noise" in
    Bullerjahn et al., J. Chem. Phys. 153, 024116, 2020).

    Positions ``x_t = w_t + e_t``: w a walk with unit step variance, e independent with
    variance ``noise_ratio`` at every frame (so ``MSD(m) = m + 2 noise_ratio``).
    ``MSD(m) = 1/(T-m) sum_{t<T-m} (x_{t+m} - x_t)^2`` over T frames. For lags a <= b,
    ``Cov = 2 / ((T-a)(T-b)) sum_{t,s} c(t, s)^2`` (Isserlis: Cov(X^2, Y^2) = 2 Cov(X, Y)^2),
    where two displacements covary by the steps they share plus +-1 noise variances where
    their end frames coincide. Summed by the origin offset u = s - t:

    * walk: ``2 S1 + S2``, ``S1 = sum_{w=w0}^{a-1} w^2 (T - a - b + w)``,
      ``w0 = max(1, a + b - T + 1)`` (partial overlaps), ``S2 = (b - a + 1) a^2 (T - b)``
      (b's window covering a's), in closed form;
    * walk x noise: ``2 x 2 a (T - b)``;
    * noise: ``2 (T - b) + (T - b - a)_+ + (T - a - b)_+`` for a < b, ``4 (T - a) + 2 (T - 2a)_+``
      for a = b.

    Checked against Monte Carlo estimates in the tests.

    Parameters
    ----------
    lags_frames : array of int, shape (K,)
        Lags in frames, 1 <= m <= T - 1.
    n_frames : int
        Frames T of the path.
    noise_ratio : float
        Noise variance per frame over the walk's step variance.

    Returns
    -------
    ndarray, shape (K, K)
        The covariance for unit step variance (multiply by ``sigma_step^4`` per axis).
    """
    walk, cross, noise = _msd_covariance_terms(lags_frames, n_frames)
    return walk + noise_ratio * cross + noise_ratio**2 * noise


@functools.lru_cache(maxsize=32)
def _covariance_terms_cached(lag_bytes: bytes, n_frames: int):
    """:func:`_msd_covariance_terms`, cached: a slider move refits over the same lags."""
    out = _msd_covariance_terms(np.frombuffer(lag_bytes, dtype=np.int64), n_frames)
    for x in out:
        x.flags.writeable = False
    return out


def _inverse(cov: np.ndarray) -> np.ndarray:
    """Inverse of a covariance matrix whose eigenvalues below 1e-12 of the largest are raised
    to that floor (kinisi's minimum eigenvalue method: evenly spaced MSD points are nearly
    collinear)."""
    w, v = np.linalg.eigh(cov)
    w = np.maximum(w, w[-1] * 1e-12)
    return (v / w) @ v.T


def _slope_interval(b: float, q0: float, q1: float, q2: float, z: float = Z95) -> tuple[float, float]:
    """Hull of the slopes s not rejected at level z: ``(b - s)^2 <= z^2 Var(s)``, where
    ``Var(s) = q0 + q1 s + q2 s^2`` for s >= 0 and ``q0`` for s < 0. The upper end is inf
    when the data cannot bound the slope (``z^2 q2 >= 1``)."""
    lows, highs = [], []
    half = z * np.sqrt(max(q0, 0.0))
    if b - half < 0:  # slopes <= 0, where the variance stays at its value for 0
        lows.append(b - half)
        highs.append(min(0.0, b + half))
    a2, a1, a0 = 1.0 - z * z * q2, -2.0 * b - z * z * q1, b * b - z * z * q0
    # {s >= 0 : a2 s^2 + a1 s + a0 <= 0}
    if a2 == 0.0:
        roots = np.array([-a0 / a1]) if a1 != 0 else np.array([])
    else:
        disc = a1 * a1 - 4.0 * a2 * a0
        roots = np.sort((-a1 + np.array([-1.0, 1.0]) * np.sqrt(disc)) / (2.0 * a2)) if disc >= 0 else np.array([])
    pts = np.concatenate([[0.0], roots[roots >= 0], [np.inf]])
    for s0, s1 in zip(pts[:-1], pts[1:]):  # <= 3 pieces; test each one's midpoint
        mid = s0 + 1.0 if np.isinf(s1) else 0.5 * (s0 + s1)
        if a2 * mid * mid + a1 * mid + a0 <= 0:
            lows.append(s0)
            highs.append(s1)
    if not lows:  # cannot happen (b itself is accepted); guard against round-off
        return b, b
    return float(min(lows)), float(max(highs))


def _excess_scatter(lag: np.ndarray, var_s: np.ndarray, gauss: np.ndarray) -> np.ndarray:
    """Scatter of the squared displacements beyond a Gaussian's, smoothed over the lags.

    ``var(s) / gauss`` lag by lag is noisy; a power law in the lag (a line in log-log,
    least squares) keeps its trend (ions that hop scatter most at short lags) without the
    noise. Floored at 1: a Gaussian is the least scatter the model allows.
    """
    ok = (gauss > 0) & (var_s > 0)
    if ok.sum() < 2:
        return np.ones(lag.size)
    x, r = np.log(lag[ok].astype(float)), np.log(var_s[ok] / gauss[ok])
    if np.ptp(x) == 0:
        return np.full(lag.size, max(1.0, float(np.exp(r.mean()))))
    b, a = np.polyfit(x, r, 1)
    return np.maximum(1.0, np.exp(a + b * np.log(lag.astype(float))))


def _gls_interval(t, y, lag, var_s, n_frames, n_paths, dim, slope, intercept):
    """GLS slope, intercept, slope SE and 95 % interval of the slope (module docstring).

    Model: each axis of each path is a Gaussian walk seen through Gaussian vibration noise,
    ``MSD = s t + c`` with step variance ``s dt / dim`` and noise variance ``c / (2 dim)``
    per frame (c > 0 is the vibrational offset); the covariance of the MSD points is then
    exact (:func:`random_walk_msd_covariance`), divided by the paths averaged, and scaled
    lag by lag by ``kappa``, how much the measured squared displacements scatter beyond
    that Gaussian model (ions that hop: few carry the MSD), smoothed as a power law in the
    lag (:func:`_excess_scatter`). Smooth rather than lag by lag: GLS with nearly collinear
    points turns lag-to-lag noise in the weights into a bias and a too narrow interval.
    Where the MSD is not a straight line (not yet diffusive), the residuals exceed this
    covariance and it is scaled up by the reduced chi-square (Birge ratio; never down).
    The interval inverts the test of each slope s with the covariance at that s (the
    variance grows with D, so a single path gets an asymmetric interval, unbounded above
    when it cannot bound D). None if the MSD does not vary.
    """
    walk, cross, noise = _covariance_terms_cached(np.ascontiguousarray(lag, dtype=np.int64).tobytes(), int(n_frames))
    dt = float(t[0] / lag[0])
    X = np.column_stack([t, np.ones_like(t)])
    beta = np.array([slope, intercept])
    for it in range(3):  # the covariance follows the fitted line; three passes settle it
        line = np.maximum(X @ beta, 0.0)
        if not np.any(line > 0):
            if it == 0:
                return None
            break  # a flat MSD whose refit line went below 0: keep the last pass's fit
        s_w = max(float(beta[0]), 0.0) * dt / dim  # walk step variance per axis, Å^2
        s_e = max(float(beta[1]), 0.0) / (2.0 * dim)  # noise variance per axis, Å^2
        kappa = _excess_scatter(lag, var_s, 2.0 * line**2 / dim)
        scale = (dim / n_paths) * np.sqrt(np.outer(kappa, kappa))
        cov = scale * (s_w * s_w * walk + s_w * s_e * cross + s_e * s_e * noise)
        inv = _inverse(cov)
        cov_beta = np.linalg.inv(X.T @ inv @ X)
        beta = cov_beta @ (X.T @ (inv @ y))
    resid = y - X @ beta
    birge = max(1.0, float(resid @ inv @ resid) / (t.size - 2)) if t.size > 2 else 1.0
    # The slope estimator is h @ y (weights fixed at the fit); its variance at slope s is
    # q2 s^2 + q1 s + q0, from the three terms of the covariance.
    h = (cov_beta @ (X.T @ inv))[0]
    g = dt / dim
    q2 = birge * g * g * float(h @ (scale * walk) @ h)
    q1 = birge * g * s_e * float(h @ (scale * cross) @ h)
    q0 = birge * s_e * s_e * float(h @ (scale * noise) @ h)
    lo, hi = _slope_interval(float(beta[0]), q0, q1, q2)
    return float(beta[0]), float(beta[1]), float(np.sqrt(birge * cov_beta[0, 0])), lo, hi


def _loglog_slope(t: np.ndarray, y: np.ndarray) -> float:
    ok = (t > 0) & (y > 0)
    if ok.sum() < 2 or np.ptp(t[ok]) == 0:
        return float("nan")
    return _ols(np.log(t[ok]), np.log(y[ok]))[0]


def fit_diffusion(
    lag_ps: np.ndarray,
    msd_A2: np.ndarray,
    fit_start: float = 0.2,
    fit_end: float = 1.0,
    dim: int = 3,
    *,
    sq_var_A4: np.ndarray | None = None,
    n_frames: int | None = None,
    n_paths: int = 1,
) -> DiffusionFit:
    """Diffusion coefficient from a linear fit of the MSD (Einstein relation, eq 4).

    Parameters
    ----------
    lag_ps : array, shape (L,)
        Lag times in ps, ``arange(L) * timestep`` when ``sq_var_A4`` is given.
    msd_A2 : array, shape (L,)
        MSD in Å^2 (tracer or collective).
    fit_start, fit_end : float
        Fit window as fractions of the longest lag: lags with
        ``fit_start * t_max <= t <= fit_end * t_max`` and ``t > 0`` are used.
        The paper's choice is (0.5, 1.0).
    dim : int
        Dimensionality: ``MSD = 2 dim D t + c``.
    sq_var_A4 : array, shape (L,), optional
        Variance of one path's squared displacement at each lag (Å^4; nan where not
        measured), as :func:`msd` gives. With ``n_frames``, D is fitted by GLS over the
        lags where it is finite and gets a 95 % interval (module docstring); without,
        by ordinary least squares over every lag of the window, with no interval.
    n_frames : int, optional
        Frames T of the trajectory the MSD was averaged over.
    n_paths : int
        Independent paths averaged: N ions (tracer) or 1 (collective).

    Returns
    -------
    DiffusionFit
        If the window holds fewer than 3 points, all lags > 0 are used
        (``widened=True``); with fewer than 2 usable points D is nan and ``reason``
        says why. Non-finite MSD points are ignored.
    """
    t = np.asarray(lag_ps, dtype=float).ravel()
    y = np.asarray(msd_A2, dtype=float).ravel()
    if t.shape != y.shape:
        raise InputError(f"lag_ps and msd_A2 differ in length ({t.size} and {y.size})")
    if not 0 <= fit_start < fit_end <= 1:
        raise InputError(f"fit window must satisfy 0 <= fit_start < fit_end <= 1, got ({fit_start}, {fit_end})")
    if dim not in (1, 2, 3):
        raise InputError(f"dim must be 1, 2 or 3, got {dim}")
    gls = sq_var_A4 is not None and n_frames is not None
    good = np.isfinite(t) & np.isfinite(y) & (t > 0)
    if gls:
        v = np.asarray(sq_var_A4, dtype=float).ravel()
        if v.shape != y.shape:
            raise InputError(f"sq_var_A4 and msd_A2 differ in length ({v.size} and {y.size})")
        if n_paths < 1:
            raise InputError(f"n_paths must be at least 1, got {n_paths}")
        step = t[1] - t[0] if t.size > 1 else 0.0
        if not (step > 0 and np.allclose(t, np.arange(t.size) * step, rtol=1e-9, atol=1e-12 * step)):
            raise InputError("with sq_var_A4, lag_ps must be 0, dt, 2 dt, ... (every lag from 0)")
        if n_frames < t.size:
            raise InputError(f"n_frames ({n_frames}) must exceed the longest lag ({t.size - 1} frames)")
        good &= np.isfinite(v)
    if not good.any():
        return _nan_fit(dim, "no MSD point with a lag > 0")
    t_max = float(t[good].max())
    in_window = good & (t >= fit_start * t_max - 1e-12 * t_max) & (t <= fit_end * t_max + 1e-12 * t_max)
    sel = in_window
    widened, reason = False, ""
    if sel.sum() < 3:
        sel = good
        widened = True
        reason = f"fit window {fit_start:g}-{fit_end:g} of the longest lag held fewer than 3 points; used all {int(sel.sum())} lags > 0"
    if sel.sum() < 2:
        return _nan_fit(dim, f"only {int(sel.sum())} MSD point with a lag > 0: the run is too short to fit D", int(sel.sum()))
    slope, intercept, se, _, r2 = _ols(t[sel], y[sel])
    # The log-log slope over every lag of the window (not only the GLS lags).
    all_lags = np.isfinite(t) & np.isfinite(y) & (t >= t[sel].min()) & (t <= t[sel].max())
    loglog = _loglog_slope(t[all_lags], y[all_lags])
    ci = (float("nan"), float("nan"))
    method = "ols"
    if gls and sel.sum() >= 3:
        lag = np.rint(t[sel] / step).astype(int)
        with threadpool_limits(1):  # matrices of <= FIT_LAGS rows: BLAS threads only contend
            g = _gls_interval(t[sel], y[sel], lag, v[sel], n_frames, n_paths, dim, slope, intercept)
        if g is None:
            reason = (reason + "; " if reason else "") + "the MSD does not vary over the window: no interval"
        else:
            slope, intercept, se, lo, hi = g
            ci = (lo / (2 * dim), hi / (2 * dim))
            method = "gls"
    elif gls:
        reason = (reason + "; " if reason else "") + "fewer than 3 MSD points: no interval"
    if method == "gls" and np.isfinite(loglog) and loglog < DIFFUSIVE_SLOPE_MIN:
        # Not yet diffusive: the MSD bends over the window, so the slope depends on where
        # it is read. The interval is widened to the slopes of the window's two halves
        # (a systematic error the statistical interval does not carry).
        idx = np.flatnonzero(all_lags)
        halves = [idx[: len(idx) // 2 + 1], idx[len(idx) // 2 :]]
        local = [_ols(t[h], y[h])[0] / (2 * dim) for h in halves if len(h) >= 2]
        ci = (min([ci[0], *local]), max([ci[1], *local]))
        reason = (reason + "; " if reason else "") + "interval widened to the slopes of the window's halves (MSD not linear)"
    D = slope / (2 * dim)
    D_err = se / (2 * dim)
    return DiffusionFit(
        D_A2_ps=D,
        D_err_A2_ps=D_err,
        D_cm2_s=D * A2_PS_TO_CM2_S,
        D_err_cm2_s=D_err * A2_PS_TO_CM2_S,
        intercept_A2=intercept,
        t_start_ps=float(t[sel].min()),
        t_end_ps=float(t[sel].max()),
        r2=r2,
        n_points=int(sel.sum()),
        dim=dim,
        widened=widened,
        reason=reason,
        ci95_A2_ps=(float(ci[0]), float(ci[1])),
        loglog_slope=float(loglog),
        method=method,
        n_paths=int(n_paths) if method == "gls" else 0,
    )


def diffusion_fits(
    m: MSDResult, fit_start: float = 0.2, fit_end: float = 1.0, dim: int = 3
) -> tuple[DiffusionFit, DiffusionFit]:
    """Tracer and collective D of an :class:`MSDResult`, each with its 95 % interval.

    The tracer MSD averages N ion paths, the collective one a single centre-of-mass path
    (its interval is correspondingly wide). See :func:`fit_diffusion`.
    """
    if m.tracer_sq_var_A4 is None or m.collective_sq_var_A4 is None:
        raise InputError("the MSD has no squared-displacement variances: compute it with transport.msd")
    tracer = fit_diffusion(m.lag_ps, m.tracer_A2, fit_start, fit_end, dim,
                           sq_var_A4=m.tracer_sq_var_A4, n_frames=m.n_frames, n_paths=m.n_ions)
    collective = fit_diffusion(m.lag_ps, m.collective_A2, fit_start, fit_end, dim,
                               sq_var_A4=m.collective_sq_var_A4, n_frames=m.n_frames, n_paths=1)
    return tracer, collective


def not_diffusive_warning(fit: DiffusionFit, label: str = "tracer") -> str:
    """The METHOD.md section 6 warning when the MSD's log-log slope is below 0.8 ('' otherwise)."""
    if fit.ok and np.isfinite(fit.loglog_slope) and fit.loglog_slope < DIFFUSIVE_SLOPE_MIN:
        return (f"the {label} MSD's log-log slope is {fit.loglog_slope:.2f} over the fit window "
                f"{fit.t_start_ps:.3g}-{fit.t_end_ps:.3g} ps (below {DIFFUSIVE_SLOPE_MIN}): not yet diffusive: "
                "D is an upper bound at best")
    return ""


def collective_undetermined_reason(collective: DiffusionFit) -> str:
    """Why the Haven ratio and the collective conductivity cannot be given ('' if they can).

    They need a collective D whose 95 % interval excludes 0 (METHOD.md section 6) and is
    bounded above (else the Haven ratio could be anything down to 0).
    """
    if not collective.ok:
        return (f"collective D undetermined ({collective.reason or 'no fit'}): "
                "Haven ratio and collective conductivity undetermined")
    lo, hi = collective.ci95_cm2_s
    if not np.isfinite(lo):
        return "collective D has no 95 % interval: Haven ratio and collective conductivity undetermined"
    if lo <= 0:
        return (f"the collective D's 95 % interval [{lo:.2g}, {hi:.2g}] cm²/s includes 0 (one centre-of-mass path): "
                "Haven ratio and collective conductivity undetermined")
    if not np.isfinite(hi):
        return (f"the collective D's 95 % interval [{lo:.2g} cm²/s, no upper bound] is not bounded above by one "
                "centre-of-mass path: Haven ratio and collective conductivity undetermined")
    return ""


def transport_warnings(tracer: DiffusionFit, collective: DiffusionFit) -> list[str]:
    """Warnings about D for the result: not yet diffusive; Haven ratio / collective conductivity undetermined."""
    out = [not_diffusive_warning(tracer, "tracer")]
    if tracer.ok and np.isfinite(tracer.ci95_A2_ps[0]) and not tracer.excludes_zero:
        lo, hi = tracer.ci95_cm2_s
        out.append(f"the tracer D's 95 % interval [{lo:.2g}, {hi:.2g}] cm²/s includes 0: "
                   "D is not distinguished from 0")
    out.append(collective_undetermined_reason(collective))
    return [w for w in out if w]


def haven_ratio(D_tracer, D_collective):
    """Haven ratio ``H_R = D_tracer / D_collective`` (nan-safe).

    Parameters
    ----------
    D_tracer, D_collective : float or array
        Diffusion coefficients in the same units.

    Returns
    -------
    float or ndarray
        nan where either value is not finite or ``D_collective <= 0``.
    """
    a = np.asarray(D_tracer, dtype=float)
    b = np.asarray(D_collective, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b) & (b > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, a / np.where(ok, b, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def dilute_limit_hop_frequency_THz(D_A2_ps, hop_length_A):
    """Dilute-limit hopping frequency ``nu0 = 6 D / dr^2`` in THz (METHOD.md section 6, paper eq 2).

    Parameters
    ----------
    D_A2_ps : float or array
        Tracer diffusion coefficient in Å^2/ps.
    hop_length_A : float or array
        Mean hop length in Å.

    Returns
    -------
    float or ndarray
        nu0 in THz (1/ps); nan where the hop length is not positive or not finite.
    """
    d = np.asarray(D_A2_ps, dtype=float)
    a = np.asarray(hop_length_A, dtype=float)
    ok = np.isfinite(a) & (a > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, 6.0 * d / np.where(ok, a, 1.0) ** 2, np.nan) * PER_PS_TO_THZ
    return float(out) if out.ndim == 0 else out


def nernst_einstein_conductivity(
    D_A2_ps: float, n_ions: int, volume_A3: float, temperature_K: float, charge_e: float = 1.0
) -> float:
    """Ionic conductivity in S/cm from a diffusion coefficient (paper eq 1).

    ``sigma = (n / V) (z e)^2 D / (k_B T)``, evaluated in SI:
    ``n / V`` in m^-3 (V in Å^3 x 1e-30), ``z e`` in C, D in m^2/s (Å^2/ps x 1e-8),
    ``k_B`` in J/K, giving S/m, then x 1e-2 for S/cm.

    Parameters
    ----------
    D_A2_ps : float
        Diffusion coefficient in Å^2/ps. With the tracer D this is the Nernst-Einstein
        (uncorrelated) estimate; with the full (collective) D of :func:`msd`
        (MSD of the summed displacement / N) it is the correlated conductivity of
        the mobile species, since then ``N D_full = <|sum_i dr_i|^2> / (6 t)``.
    n_ions : int
        Number of mobile ions in the cell.
    volume_A3 : float
        Cell volume in Å^3.
    temperature_K : float
        Temperature in K.
    charge_e : float
        Ion charge z in units of e (Li+: 1).

    Returns
    -------
    float
        Conductivity in S/cm (nan if D is nan).
    """
    if not (n_ions >= 1):
        raise InputError(f"n_ions must be at least 1, got {n_ions}")
    if not (volume_A3 > 0 and np.isfinite(volume_A3)):
        raise InputError(f"volume must be a positive number of Å^3, got {volume_A3}")
    if not (temperature_K > 0 and np.isfinite(temperature_K)):
        raise InputError(f"temperature must be a positive number of K, got {temperature_K}")
    density_m3 = n_ions / (volume_A3 * A3_TO_M3)
    q_C = charge_e * E_CHARGE_C
    D_m2_s = float(D_A2_ps) * A2_PS_TO_M2_S
    sigma_S_m = density_m3 * q_C**2 * D_m2_s / (KB_J_PER_K * temperature_K)
    return float(sigma_S_m * S_M_TO_S_CM)


# --------------------------------------------------------------------------- van Hove
@dataclass
class VanHove:
    """Self and distinct van Hove functions of the mobile ions (paper eqs 5-6).

    Attributes
    ----------
    r_A : ndarray, shape (n_bins,)
        Bin centres in Å; bins are ``[k dr, (k+1) dr)`` from 0 to ``r_max_A``.
    t_ps : ndarray, shape (n_t,)
        Lag times in ps.
    lags_frames : ndarray of int, shape (n_t,)
        Lag times in frames.
    self : ndarray, shape (n_t, n_bins)
        G_s(r, t) as a probability density of the displacement length in 1/Å:
        ``self[k].sum() * dr_A == 1 - self_beyond_r_max[k]``. At t = 0 it is a delta
        in the first bin (``1 / dr_A``).
    distinct : ndarray, shape (n_t, n_bins)
        G_d(r, t): counts of minimum-image distances ``|r_i(t0 + t) - r_j(t0)|``,
        i != j (j among ``n_reference_ions`` m reference ions per origin), divided by
        the ideal-gas count ``N_origins m (N - 1) / V * V_shell`` with the exact shell
        volume ``4/3 pi (r_hi^3 - r_lo^3)``. It tends to 1 at
        large r and equals g(r) at t = 0. nan in bins reaching beyond half the
        smallest cell width (where minimum-image distances are incomplete), and
        everywhere if N < 2.
    self_beyond_r_max : ndarray, shape (n_t,)
        Share of self displacements longer than ``r_max_A``.
    n_origins_self, n_origins_distinct : ndarray of int, shape (n_t,)
        Time origins averaged for each lag.
    n_reference_ions : ndarray of int, shape (n_t,)
        Reference ions j per distinct-part origin (all N unless the pair budget
        ``max_pairs`` made it fewer; see :func:`van_hove`).
    distinct_err : ndarray, shape (n_t, n_bins)
        Standard error of ``distinct`` from the pair count of each bin (Poisson,
        ``sqrt(count) / ideal``), nan where ``distinct`` is.
    dr_A, r_max_A : float
        Bin width and range in Å.
    n_ions : int
        Number of mobile ions N.
    """

    r_A: np.ndarray
    t_ps: np.ndarray
    lags_frames: np.ndarray
    self: np.ndarray
    distinct: np.ndarray
    self_beyond_r_max: np.ndarray
    n_origins_self: np.ndarray
    n_origins_distinct: np.ndarray
    dr_A: float
    r_max_A: float
    n_ions: int
    n_reference_ions: np.ndarray | None = None
    distinct_err: np.ndarray | None = None


def half_min_width_A(cell: np.ndarray) -> float:
    """Half the smallest perpendicular width of a cell (rows are lattice vectors, Å).

    Any distance shorter than this is found exactly by fractional rounding.
    """
    inv = np.linalg.inv(np.asarray(cell, dtype=float))
    return float(0.5 / np.linalg.norm(inv, axis=0).max())


def _origins(n_frames: int, lag: int, max_origins: int) -> np.ndarray:
    last = n_frames - 1 - lag
    k = min(max_origins, last + 1)
    return np.unique(np.round(np.linspace(0, last, k)).astype(int))


def van_hove(
    positions_A: np.ndarray,
    cells: np.ndarray,
    timestep_ps: float,
    lags_frames,
    r_max_A: float | None = None,
    n_bins: int = 100,
    max_origins: int = 50,
    max_origins_self: int = 1000,
    max_pairs: int = 5_000_000,
) -> VanHove:
    """Self and distinct van Hove correlation functions (paper eqs 5-6).

    Parameters
    ----------
    positions_A : array, shape (T, N, 3)
        Unwrapped Cartesian positions of the mobile ions in Å.
    cells : array, shape (3, 3) or (T, 3, 3)
        Lattice vectors as rows, Å. For the distinct part, the pair vector
        ``r_i(t0 + t) - r_j(t0)`` is reduced to its minimum image in the cell of frame
        ``t0 + t`` by fractional rounding, which is exact for distances below half the
        smallest cell width (any cell shape).
    timestep_ps : float
        Time between frames in ps.
    lags_frames : sequence of int
        Lag times in frames (0 <= lag < T).
    r_max_A : float, optional
        Histogram range in Å; default half the smallest perpendicular cell width
        (the minimum-image radius). A larger range serves the self part; the distinct
        part is nan beyond the minimum-image radius.
    n_bins : int
        Number of r bins.
    max_origins : int
        At most this many evenly spaced time origins per lag for the distinct part
        (cost O(max_origins N^2) per lag).
    max_origins_self : int
        At most this many evenly spaced time origins per lag for the self part
        (cost O(max_origins_self N) per lag).
    max_pairs : int
        Pair distances per lag for the distinct part. When ``n_origins N (N - 1)``
        exceeds it, each origin pairs all N ions at ``t0 + t`` with
        ``m = max(1, max_pairs // (n_origins N))`` reference ions at ``t0``, taken in
        turn from a fixed permutation so that the origins together cover all ions.
        Every pair is still an unbiased sample of the same G_d, so this only widens
        its statistical error (``distinct_err``); the cost per lag is
        ``O(max(max_pairs, n_origins N))``, linear in N instead of quadratic. With
        ``m = N`` the result is the full all-pairs average, unchanged.

    Returns
    -------
    VanHove
    """
    pos = np.asarray(positions_A)  # float32 stays so: only the sampled frames become float64, below
    if pos.ndim != 3 or pos.shape[2] != 3:
        raise InputError(f"positions must have shape (frames, ions, 3), got {pos.shape}")
    T, N, _ = pos.shape
    cells = np.asarray(cells, dtype=float)
    if cells.shape == (3, 3):
        cells = np.broadcast_to(cells, (T, 3, 3))
    if cells.shape != (T, 3, 3):
        raise InputError(f"cells must have shape (3, 3) or ({T}, 3, 3), got {cells.shape}")
    if not (timestep_ps > 0):
        raise InputError(f"timestep must be a positive number of ps, got {timestep_ps}")
    lags = np.atleast_1d(np.asarray(lags_frames)).astype(int)
    if lags.size == 0 or lags.min() < 0 or lags.max() >= T:
        raise InputError(f"lags must lie in 0..{T - 1} frames, got {lags.tolist()}")
    if n_bins < 1 or max_origins < 1 or max_origins_self < 1:
        raise InputError("n_bins, max_origins and max_origins_self must be positive")
    fixed = cells.strides[0] == 0 or bool(np.allclose(cells, cells[0]))
    sample = cells[:1] if fixed else cells[:: max(1, T // 1000)]
    r_mi = min(half_min_width_A(c) for c in sample)  # minimum-image radius
    if r_max_A is None:
        r_max_A = r_mi
    if not (r_max_A > 0):
        raise InputError(f"r_max must be positive, got {r_max_A}")
    dr = r_max_A / n_bins
    edges = np.arange(n_bins + 1) * dr
    r_c = 0.5 * (edges[1:] + edges[:-1])
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    valid_r = edges[1:] <= r_mi * (1 + 1e-12)

    G_s = np.zeros((lags.size, n_bins))
    G_d = np.full((lags.size, n_bins), np.nan)
    beyond = np.zeros(lags.size)
    n_self = np.zeros(lags.size, dtype=int)
    n_dist = np.zeros(lags.size, dtype=int)
    inv0 = np.linalg.inv(cells[0])
    n_ref = np.zeros(lags.size, dtype=int)
    G_d_err = np.full((lags.size, n_bins), np.nan)
    perm = np.random.default_rng(0).permutation(N)  # fixed: the result is reproducible

    def hist(r):
        k = np.floor(r / dr).astype(np.int64)
        inside = k < n_bins
        return np.bincount(k[inside], minlength=n_bins)[:n_bins].astype(float), int((~inside).sum())

    for li, lag in enumerate(lags):  # loop over the requested lags only (a handful)
        # ---- self part: all ions, up to max_origins_self origins
        t0 = _origins(T, lag, max_origins_self)
        counts, n_out = np.zeros(n_bins), 0
        step = max(1, _PAIR_BLOCK_ELEMENTS // (3 * N))
        for b0 in range(0, t0.size, step):  # bounded-memory blocks of origins
            tb = t0[b0 : b0 + step]
            d = pos[tb + lag].astype(np.float64) - pos[tb]
            c, o = hist(np.sqrt(np.einsum("onk,onk->on", d, d)).ravel())
            counts += c
            n_out += o
        G_s[li] = counts / (t0.size * N * dr)
        beyond[li] = n_out / (t0.size * N)
        n_self[li] = t0.size
        # ---- distinct part: pairs i != j, up to max_origins origins
        if N < 2:
            continue
        t0 = _origins(T, lag, max_origins)
        n_dist[li] = t0.size
        m = int(min(N, max(1, max_pairs // (t0.size * N))))
        n_ref[li] = m
        acc = np.zeros(n_bins)
        block = max(1, _PAIR_BLOCK_ELEMENTS // (3 * N * m))
        vol = 0.0
        n_pairs = 0
        for b0 in range(0, t0.size, block):  # bounded-memory blocks of origins
            tb = t0[b0 : b0 + block]
            a = pos[tb + lag].astype(np.float64)  # (b, N, 3) ions i at t0 + t
            if m == N:
                ref = np.broadcast_to(np.arange(N), (tb.size, N))
            else:  # origin k takes the k-th run of m ions of the permutation, cyclically
                k = np.arange(b0, b0 + tb.size)[:, None] * m + np.arange(m)
                ref = perm[k % N]
            c = pos[tb[:, None], ref].astype(np.float64)  # (b, m, 3) reference ions j at t0
            v = a[:, :, None, :] - c[:, None, :, :]  # (b, N, m, 3)
            if fixed:
                f = v @ inv0
                f -= np.round(f)
                v = f @ cells[0]
                vol += tb.size * abs(np.linalg.det(cells[0]))
            else:
                cb = cells[tb + lag]
                f = v @ np.linalg.inv(cb)[:, None]
                f -= np.round(f)
                v = f @ cb[:, None]
                vol += float(np.abs(np.linalg.det(cb)).sum())
            r = np.sqrt(np.einsum("bijk,bijk->bij", v, v))
            acc += hist(r[np.arange(N)[None, :, None] != ref[:, None, :]])[0]  # i == j is no pair
            n_pairs += tb.size * m * (N - 1)
        volume = vol / t0.size
        ideal = n_pairs / volume * shell
        G_d[li] = np.where(valid_r, acc / ideal, np.nan)
        G_d_err[li] = np.where(valid_r, np.sqrt(acc) / ideal, np.nan)
    return VanHove(
        r_A=r_c,
        t_ps=lags * float(timestep_ps),
        lags_frames=lags,
        self=G_s,
        distinct=G_d,
        self_beyond_r_max=beyond,
        n_origins_self=n_self,
        n_origins_distinct=n_dist,
        dr_A=float(dr),
        r_max_A=float(r_max_A),
        n_ions=int(N),
        n_reference_ions=n_ref,
        distinct_err=G_d_err,
    )


# --------------------------------------------------------------------------- Arrhenius
@dataclass
class ArrheniusFit:
    """Fit of ``ln D = ln D0 - Ea / (k_B T)`` (paper eq 2).

    Attributes
    ----------
    Ea_eV, Ea_err_eV : float
        Activation energy and its standard error in eV.
    D0, D0_err : float
        Prefactor in the units of the D given, and its standard error (propagated
        from ln D0: ``D0 * se(ln D0)``).
    ln_D0, ln_D0_err : float
        Natural log of the prefactor and its standard error.
    r2 : float
        Coefficient of determination of the fit in (1/(k_B T), ln D).
    n_points : int
        Points used (finite, positive D and T).
    n_temperatures : int
        Distinct temperatures among them.
    weighted : bool
        True if errors of D were given and used as weights.
    reason : str
        Why the fit is nan, or which points were dropped; empty otherwise.
    """

    Ea_eV: float
    Ea_err_eV: float
    D0: float
    D0_err: float
    ln_D0: float
    ln_D0_err: float
    r2: float
    n_points: int
    n_temperatures: int
    weighted: bool = False
    reason: str = ""

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.Ea_eV))

    def predict(self, temperature_K):
        """D at the given temperatures from the fit (units of the D given)."""
        T = np.asarray(temperature_K, dtype=float)
        return np.exp(self.ln_D0 - self.Ea_eV / (KB_EV_PER_K * T))


def arrhenius(temperatures_K, D, D_err=None) -> ArrheniusFit:
    """Arrhenius fit ``D = D0 exp(-Ea / (k_B T))`` by least squares on ln D.

    Parameters
    ----------
    temperatures_K : array, shape (M,)
        Temperatures in K (repeats allowed, e.g. several runs at one T).
    D : array, shape (M,)
        Diffusion coefficients (any one unit; D0 comes back in it).
    D_err : array, shape (M,), optional
        Standard errors of D. If given, each point is weighted by
        ``1 / se(ln D)^2 = (D / D_err)^2`` and the parameter errors are the absolute
        (weights-as-variances) ones; otherwise ordinary least squares with errors
        from the residuals (nan with only 2 points).

    Returns
    -------
    ArrheniusFit
        nan with a ``reason`` if fewer than 2 distinct temperatures remain after
        dropping non-finite or non-positive D and T (and, when weighted, non-finite
        or non-positive D_err).
    """
    T = np.asarray(temperatures_K, dtype=float).ravel()
    y = np.asarray(D, dtype=float).ravel()
    if T.shape != y.shape:
        raise InputError(f"temperatures and D differ in length ({T.size} and {y.size})")
    good = np.isfinite(T) & (T > 0) & np.isfinite(y) & (y > 0)
    w = None
    if D_err is not None:
        e = np.asarray(D_err, dtype=float).ravel()
        if e.shape != y.shape:
            raise InputError(f"D_err and D differ in length ({e.size} and {y.size})")
        good &= np.isfinite(e) & (e > 0)
    dropped = int((~good).sum())
    reason = f"{dropped} point(s) with non-finite or non-positive values dropped" if dropped else ""
    T, y = T[good], y[good]
    n_T = int(np.unique(T).size)
    nan = float("nan")
    if n_T < 2:
        why = f"needs at least 2 distinct temperatures, got {n_T}"
        return ArrheniusFit(nan, nan, nan, nan, nan, nan, nan, int(T.size), n_T, D_err is not None,
                            why + (f"; {reason}" if reason else ""))
    x = 1.0 / (KB_EV_PER_K * T)  # 1/eV
    ly = np.log(y)
    if D_err is None:
        slope, intercept, se_s, se_i, r2 = _ols(x, ly)
    else:
        sig = e[good] / y  # se of ln D
        w = 1.0 / sig**2
        A = np.column_stack([x, np.ones_like(x)])
        Aw = A * np.sqrt(w)[:, None]
        cov = np.linalg.inv(Aw.T @ Aw)
        slope, intercept = cov @ (A.T @ (w * ly))
        se_s, se_i = np.sqrt(np.diag(cov))
        fit = A @ np.array([slope, intercept])
        ym = np.average(ly, weights=w)
        sst = float(np.sum(w * (ly - ym) ** 2))
        r2 = 1.0 - float(np.sum(w * (ly - fit) ** 2)) / sst if sst > 0 else nan
    D0 = float(np.exp(intercept))
    return ArrheniusFit(
        Ea_eV=float(-slope),
        Ea_err_eV=float(se_s),
        D0=D0,
        D0_err=float(D0 * se_i),
        ln_D0=float(intercept),
        ln_D0_err=float(se_i),
        r2=float(r2),
        n_points=int(T.size),
        n_temperatures=n_T,
        weighted=D_err is not None,
        reason=reason,
    )
