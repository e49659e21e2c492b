"""Descriptors of ionic transport (METHOD.md section 6).

Two parts:

* per-simulation descriptors (assembled from the pipeline's stages);
* cross-simulation statistics: Spearman correlations between descriptors and D
  (paper Fig. 6a), Arrhenius fits of D(T) per material, tracer and full (paper
  section 3), and the hopping frequency against its dilute-limit estimate (Fig. 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import spearmanr

from iondiff_core.errors import InputError
from iondiff_core import transport
from iondiff_core.trajectory import periodic_images
from iondiff_core.transport import A2_PS_TO_CM2_S, arrhenius, dilute_limit_hop_frequency_THz


# =====================================================================================
# Cross-simulation statistics
# =====================================================================================

#: Fewest finite pairs for a Spearman coefficient.
MIN_SPEARMAN_SAMPLES = 3


@dataclass
class SpearmanResult:
    """Pairwise Spearman rank correlations of descriptors across simulations.

    Attributes
    ----------
    names : list of str, length M
        Descriptor names, in the order of the table.
    rho : ndarray, shape (M, M)
        Spearman rho of each pair, computed on the rows where both are finite
        (nan if fewer than ``MIN_SPEARMAN_SAMPLES`` or one of them is constant there).
        The diagonal is 1 wherever the descriptor itself has a defined rho.
    p : ndarray, shape (M, M)
        Two-sided p-value of each rho (scipy.stats.spearmanr); 0 on a defined diagonal.
    n : ndarray of int, shape (M, M)
        Number of rows used for each pair (finite in both).
    """

    names: list[str]
    rho: np.ndarray
    p: np.ndarray
    n: np.ndarray

    def to_dict(self) -> dict:
        return {"names": list(self.names), "rho": self.rho.tolist(), "p": self.p.tolist(), "n": self.n.tolist()}


@dataclass
class SpearmanAgainst:
    """Spearman rho and p of every descriptor against one target (paper Fig. 6a).

    Attributes
    ----------
    target : str
        The target descriptor (default the tracer D in cm^2/s).
    names : list of str, length M
        The other descriptors, in table order.
    rho, p : ndarray, shape (M,)
        Spearman rho and two-sided p-value against the target (nan if undefined).
    n : ndarray of int, shape (M,)
        Rows where both the descriptor and the target are finite.
    """

    target: str
    names: list[str]
    rho: np.ndarray
    p: np.ndarray
    n: np.ndarray

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "names": list(self.names),
            "rho": self.rho.tolist(),
            "p": self.p.tolist(),
            "n": self.n.tolist(),
        }


def _columns(table: dict) -> tuple[list[str], np.ndarray]:
    """Names and a (rows, M) float matrix; None becomes nan."""
    if not isinstance(table, dict) or not table:
        raise InputError("the descriptor table must be a non-empty dict of name -> values")
    names = [str(k) for k in table]
    cols = []
    length = None
    for name, values in table.items():
        try:
            col = np.array([np.nan if v is None else v for v in np.asarray(values, dtype=object).ravel()], dtype=float)
        except (TypeError, ValueError):
            raise InputError(f"descriptor {name!r} holds non-numeric values") from None
        if length is None:
            length = col.size
        elif col.size != length:
            raise InputError(f"descriptor {name!r} has {col.size} values, the first one {length}")
        cols.append(col)
    return names, np.column_stack(cols)


def _spearman_pair(x: np.ndarray, y: np.ndarray) -> tuple[float, float, int]:
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < MIN_SPEARMAN_SAMPLES:
        return np.nan, np.nan, n
    xs, ys = x[ok], y[ok]
    if np.all(xs == xs[0]) or np.all(ys == ys[0]):
        return np.nan, np.nan, n
    res = spearmanr(xs, ys)
    return float(res.statistic), float(res.pvalue), n


def spearman_matrix(table: dict) -> SpearmanResult:
    """Spearman correlation matrix of descriptors across simulations, NaN-aware.

    Parameters
    ----------
    table : dict of str -> array-like
        One column per descriptor, one row per simulation (equal lengths; None and
        NaN mean "missing" and are ignored pair by pair).

    Returns
    -------
    SpearmanResult
    """
    names, X = _columns(table)
    M = len(names)
    rho = np.full((M, M), np.nan)
    p = np.full((M, M), np.nan)
    n = np.zeros((M, M), dtype=int)
    for i in range(M):  # M is the number of descriptors (tens): a plain pair loop
        r, q, k = _spearman_pair(X[:, i], X[:, i])
        n[i, i] = k
        if np.isfinite(r):
            rho[i, i], p[i, i] = 1.0, 0.0
        for j in range(i + 1, M):
            r, q, k = _spearman_pair(X[:, i], X[:, j])
            rho[i, j] = rho[j, i] = r
            p[i, j] = p[j, i] = q
            n[i, j] = n[j, i] = k
    return SpearmanResult(names, rho, p, n)


def spearman_against(table: dict, target: str = "D_tracer_cm2_s") -> SpearmanAgainst:
    """Spearman rho and p of every descriptor against ``target`` (paper Fig. 6a).

    Parameters
    ----------
    table : dict of str -> array-like
        As for :func:`spearman_matrix`; must contain ``target``.
    target : str
        The column the others are correlated with.

    Returns
    -------
    SpearmanAgainst
    """
    names, X = _columns(table)
    if target not in names:
        raise InputError(f"target {target!r} is not in the table (it has {', '.join(names)})")
    it = names.index(target)
    others = [k for k in range(len(names)) if k != it]
    res = [_spearman_pair(X[:, k], X[:, it]) for k in others]
    return SpearmanAgainst(
        target=target,
        names=[names[k] for k in others],
        rho=np.array([r[0] for r in res], dtype=float),
        p=np.array([r[1] for r in res], dtype=float),
        n=np.array([r[2] for r in res], dtype=int),
    )


def _num(v) -> float:
    try:
        return float(v) if v is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


def arrhenius_by_material(rows: list[dict]) -> dict[str, dict]:
    """Arrhenius fits of the tracer and full D per material (paper section 3, eq 2).

    Parameters
    ----------
    rows : list of dict
        One per simulation, with keys ``material``, ``temperature_K``,
        ``D_tracer_cm2_s`` and ``D_collective_cm2_s`` (missing or None values are
        skipped). Several runs at one temperature all enter the fit.

    Returns
    -------
    dict of material -> dict
        In order of first appearance; JSON-ready values (floats may be nan):
        ``n_temperatures`` (distinct finite temperatures of the material),
        ``n_simulations``, ``temperatures_K`` (sorted distinct),
        ``Ea_tracer_eV``, ``Ea_tracer_err_eV``, ``D0_tracer_cm2_s``, ``r2_tracer``,
        ``n_points_tracer``, ``reason_tracer``, and the same with ``full`` for the
        collective D. An error is nan with 2 points (no residual degrees of freedom);
        ``reason_*`` says why an Ea is nan (fewer than 2 distinct temperatures).
    """
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r.get("material")), []).append(r)
    out: dict[str, dict] = {}
    for material, rs in groups.items():
        T = np.array([_num(r.get("temperature_K")) for r in rs])
        entry: dict = {
            "n_temperatures": int(np.unique(T[np.isfinite(T)]).size),
            "n_simulations": len(rs),
            "temperatures_K": sorted(float(t) for t in np.unique(T[np.isfinite(T)])),
        }
        for label, key in (("tracer", "D_tracer_cm2_s"), ("full", "D_collective_cm2_s")):
            D = np.array([_num(r.get(key)) for r in rs])
            fit = arrhenius(T, D)
            entry[f"Ea_{label}_eV"] = fit.Ea_eV
            entry[f"Ea_{label}_err_eV"] = fit.Ea_err_eV
            entry[f"D0_{label}_cm2_s"] = fit.D0
            entry[f"r2_{label}"] = fit.r2
            entry[f"n_points_{label}"] = fit.n_points
            entry[f"reason_{label}"] = fit.reason
        out[material] = entry
    return out


@dataclass
class NuVsNu0:
    """Hopping frequency against its dilute-limit estimate (paper Fig. 7).

    Attributes
    ----------
    labels : list of str
        ``material`` of each row if given, else the row index.
    nu_THz : ndarray
        Measured hopping frequency nu (hops per mobile ion per ps).
    nu0_THz : ndarray
        Dilute-limit frequency nu0 = 6 D / dr^2.
    ratio : ndarray
        nu0 / nu (nan where undefined).
    coincidence : ndarray of bool
        ``nu <= nu0 <= 10 nu`` (the paper's coincidence region); False where
        either value is missing or not positive.
    valid : ndarray of bool
        Both values finite and positive.
    n_coincident, n_above, n_below : int
        Valid points inside the region, with nu0 > 10 nu, and with nu0 < nu.
    """

    labels: list[str]
    nu_THz: np.ndarray
    nu0_THz: np.ndarray
    ratio: np.ndarray
    coincidence: np.ndarray
    valid: np.ndarray
    n_coincident: int = 0
    n_above: int = 0
    n_below: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "labels": list(self.labels),
            "nu_THz": self.nu_THz.tolist(),
            "nu0_THz": self.nu0_THz.tolist(),
            "ratio": self.ratio.tolist(),
            "coincidence": self.coincidence.tolist(),
            "valid": self.valid.tolist(),
            "n_coincident": self.n_coincident,
            "n_above": self.n_above,
            "n_below": self.n_below,
        }


def nu_vs_nu0(
    rows: list[dict],
    nu_key: str = "nu_THz",
    nu0_key: str = "nu0_THz",
    D_key: str = "D_tracer_cm2_s",
    hop_length_key: str = "hop_length_mean_A",
) -> NuVsNu0:
    """nu and nu0 of each simulation with the paper's coincidence flag (Fig. 7).

    Parameters
    ----------
    rows : list of dict
        One per simulation (or per material). ``nu_key`` gives nu in THz;
        ``nu0_key`` gives nu0 in THz. Where nu0 is missing it is computed as
        ``6 D / dr^2`` from ``D_key`` (cm^2/s) and ``hop_length_key`` (Å).
    nu_key, nu0_key, D_key, hop_length_key : str
        Keys of the rows.

    Returns
    -------
    NuVsNu0
        ``coincidence`` is ``nu <= nu0 <= 10 nu`` (paper: the region between the
        lines nu0 = nu and nu0 = 10 nu).
    """
    nu = np.array([_num(r.get(nu_key)) for r in rows], dtype=float)
    nu0 = np.array([_num(r.get(nu0_key)) for r in rows], dtype=float)
    notes = []
    missing = ~np.isfinite(nu0)
    if missing.any():
        D_A2_ps = np.array([_num(r.get(D_key)) for r in rows])[missing] / A2_PS_TO_CM2_S
        dr = np.array([_num(r.get(hop_length_key)) for r in rows])[missing]
        nu0[missing] = dilute_limit_hop_frequency_THz(D_A2_ps, dr)
        notes.append(f"nu0 computed as 6 D / dr^2 for {int(missing.sum())} row(s)")
    labels = [str(r.get("material", i)) for i, r in enumerate(rows)]
    valid = np.isfinite(nu) & np.isfinite(nu0) & (nu > 0) & (nu0 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(valid, nu0 / np.where(valid, nu, 1.0), np.nan)
    coincidence = valid & (nu <= nu0) & (nu0 <= 10.0 * nu)
    return NuVsNu0(
        labels=labels,
        nu_THz=nu,
        nu0_THz=nu0,
        ratio=ratio,
        coincidence=coincidence,
        valid=valid,
        n_coincident=int(coincidence.sum()),
        n_above=int((valid & (nu0 > 10.0 * nu)).sum()),
        n_below=int((valid & (nu0 < nu)).sum()),
        notes=notes,
    )


# =====================================================================================
# Per-simulation descriptors (assembled by the pipeline; written separately)
# =====================================================================================

#: Charge (e) of common mobile ions, for the Nernst-Einstein conductivity.
ION_CHARGE = {"Li": 1, "Na": 1, "K": 1, "Ag": 1, "Cu": 1, "H": 1, "F": -1, "Cl": -1, "Br": -1, "I": -1, "O": -2}


HALIDES = ("F", "Cl", "Br", "I")


def family_of(species: str) -> str:
    """SSE family of a mobile species as in the paper: Li-, Na-, Ag-, Cu-, O-, Halide-based."""
    return "Halide-based" if species in HALIDES else f"{species}-based"


def reference_sites_A(prep, path: str | None = None) -> np.ndarray:
    """Cartesian sites (Å) of the reference lattice: the mobile ions' first-frame
    positions, or the sites of that species in a POSCAR/structure file."""
    if path:
        import ase.io

        try:
            atoms = ase.io.read(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is bad input
            raise InputError(f"{path}: cannot read the reference structure ({exc})") from exc
        sel = [a.index for a in atoms if a.symbol == prep.species]
        if not sel:
            raise InputError(f"{path}: the reference structure has no {prep.species} sites")
        return atoms.positions[sel]
    traj = prep.trajectory
    return traj.positions_frac[0, prep.atoms] @ traj.cells[0]


def metastable_centres(prep, centres, distance_A: float = 1.0, reference: str | None = None) -> list[np.ndarray]:
    """Per ion, a bool per centre: farther than ``distance_A`` from every reference site."""
    sites = reference_sites_A(prep, reference)
    cell = prep.trajectory.cells[0]
    mu = np.concatenate([np.asarray(m, float).reshape(-1, 3) for m in centres.centres]) if len(centres.centres) else np.zeros((0, 3))
    if len(sites) == 0:
        far = np.ones(len(mu), bool)
    else:
        # Nearest periodic image of any site, for every centre of every ion at once.
        images, _ = periodic_images(sites, cell)
        frac = mu @ np.linalg.inv(cell)
        d, _ = cKDTree(images).query((frac - np.floor(frac)) @ cell, k=1, distance_upper_bound=distance_A)
        far = ~(d <= distance_A)
    return np.split(far, np.cumsum([len(m) for m in centres.centres])[:-1])


def residence_times_frames(hops, metastable: list[np.ndarray]) -> np.ndarray:
    """Frames spent at a metastable centre between two hops of the same ion.

    Only stays bounded by hops on both sides count (the first and last stays of a run
    are cut by its ends).
    """
    if len(hops) < 2:
        return np.zeros(0)
    order = np.lexsort((hops.start, hops.ion))
    ion, start, end, to = hops.ion[order], hops.start[order], hops.end[order], hops.centre_to[order]
    same = (ion[1:] == ion[:-1]) & (to[:-1] >= 0)
    stay = (start[1:] - end[:-1] - 1)[same]
    at = to[:-1][same]
    who = ion[:-1][same]
    meta = np.array([metastable[i][c] for i, c in zip(who, at)], dtype=bool)
    return stay[meta & (stay > 0)].astype(float)


def simulation_descriptors(prep, centres, hop_analysis, transport_result, params, metastable: list[np.ndarray]) -> dict:
    """Descriptors of one simulation (METHOD.md section 6), named with their units.

    ``metastable``: per ion, a bool per centre (:func:`metastable_centres`).
    """
    traj = prep.trajectory
    hops = hop_analysis.hops
    n_ions = len(prep.atoms)
    dt_ps = traj.timestep_ps if traj.timestep_fs else np.nan
    total_ps = (traj.n_frames - 1) * dt_ps
    lengths = hops.length_A
    durations = hops.duration_frames * dt_ps
    stays = residence_times_frames(hops, metastable) * dt_ps

    def stats(x, name, unit):
        return {
            f"{name}_mean_{unit}": float(np.mean(x)) if len(x) else np.nan,
            f"{name}_max_{unit}": float(np.max(x)) if len(x) else np.nan,
            f"{name}_min_{unit}": float(np.min(x)) if len(x) else np.nan,
        }

    d = {
        "mobile_ions": n_ions,
        "temperature_K": traj.temperature_K,
        "simulated_time_ps": total_ps,
        "n_hops": int(len(hops)),
        "n_unfinished_excursions": int(len(hop_analysis.excursions)),
        "n_hops_unresolved": int(np.sum(~hops.resolved)),
        "n_failed_attempts": int(len(hop_analysis.failed)),
        "ions_with_hops": int(len(np.unique(hops.ion))),
        "mean_k": float(np.mean(centres.k)) if n_ions else np.nan,
        **stats(lengths, "hop_length", "A"),
        **stats(durations, "hop_duration", "ps"),
        "nu_THz": len(hops) / (n_ions * total_ps) if n_ions and total_ps > 0 else np.nan,
        "n_metastable_centres": int(sum(int(m.sum()) for m in metastable)),
        "residence_time_metastable_ps": float(np.mean(stays)) if len(stays) else np.nan,
    }
    charge = params.ion_charge if params.ion_charge is not None else ION_CHARGE.get(prep.species, 1)
    if transport_result is not None:
        tr, co = transport_result.tracer, transport_result.collective
        vol = traj.volume_A3
        d.update(
            {
                "D_tracer_A2_ps": tr.D_A2_ps,
                "D_tracer_cm2_s": tr.D_cm2_s,
                "D_tracer_err_cm2_s": tr.D_err_cm2_s,
                "D_collective_A2_ps": co.D_A2_ps,
                "D_collective_cm2_s": co.D_cm2_s,
                "msd_fit_start_ps": tr.window_ps[0],
                "msd_fit_end_ps": tr.window_ps[1],
                "haven_ratio": transport.haven_ratio(tr.D_A2_ps, co.D_A2_ps),
            }
        )
        if traj.temperature_K:
            d["conductivity_tracer_S_cm"] = transport.nernst_einstein_conductivity(tr.D_A2_ps, n_ions, vol, traj.temperature_K, charge)
            d["conductivity_collective_S_cm"] = transport.nernst_einstein_conductivity(co.D_A2_ps, n_ions, vol, traj.temperature_K, charge)
        mean_len = d["hop_length_mean_A"]
        d["nu0_THz"] = dilute_limit_hop_frequency_THz(tr.D_A2_ps, mean_len) if np.isfinite(mean_len) else np.nan
    return d
