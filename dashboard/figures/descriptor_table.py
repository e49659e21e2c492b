"""The descriptor table of one simulation: names with units split out, the 95 % interval
where the engine gives one, what each descriptor means, and "undetermined" (with the
reason) for a value the data cannot support."""

from __future__ import annotations

import math
import re

UNITS = {"_A2_ps": "Å²/ps", "_A2": "Å²", "_cm2_s": "cm²/s", "_S_cm": "S/cm", "_THz": "THz", "_ps": "ps", "_fs": "fs",
         "_K": "K", "_A": "Å"}

#: What each descriptor means (shown as the row's tooltip; METHOD.md section 6).
HELP = {
    "mobile_ions": "number of ions of the mobile species analysed",
    "temperature_K": "simulation temperature (TEBEG of the INCAR, or as given)",
    "simulated_time_ps": "length of the trajectory: (frames - 1) x timestep",
    "n_hops": "completed hops: an ion left one vibration centre and settled at another",
    "n_hops_open_ended": "hops still in transit at the last frame (unfinished excursions)",
    "n_hops_unresolved": "hops faster than one frame: the sampling is too coarse to time them",
    "n_failed_attempts": "failed attempts: an ion left its centre and came back to the same one without settling elsewhere",
    "ions_with_hops": "mobile ions with at least one hop",
    "mean_k": "mean K: average number of vibration centres (k-means clusters) per mobile ion",
    "hop_length": "distance between the centres a hop leaves and reaches",
    "hop_duration": "time spent in transit between the two centres",
    "nu_THz": "ν: hop frequency, hops per ion per unit time",
    "nu0_THz": "ν0: hop frequency of the dilute (uncorrelated) limit, 6 D_tracer / <hop length>²; ν ≠ ν0 shows correlation",
    "n_metastable_centres": "vibration centres farther than the metastable distance from every reference-lattice site",
    "residence_time_metastable_ps": "mean time spent at a metastable centre",
    "D_tracer": "tracer diffusion coefficient from the slope of the mean MSD of single ions (MSD = 6 D t)",
    "D_tracer_err_cm2_s": "standard error of the tracer D from the fit",
    "D_collective": "collective (full) diffusion coefficient from the MSD of the ions' centre of mass times N",
    "msd_fit_start_ps": "start of the MSD fit window",
    "msd_fit_end_ps": "end of the MSD fit window",
    "msd_loglog_slope": "slope of log MSD against log t in the fit window: 1 for diffusion, < 1 when not yet diffusive",
    "haven_ratio": "Haven ratio H = D_tracer / D_collective; undetermined when the collective D is not positive beyond noise",
    "conductivity_tracer": "Nernst-Einstein ionic conductivity from the tracer D",
    "conductivity_collective": "Nernst-Einstein ionic conductivity from the collective D",
    "ions_moved": "ions whose net displacement exceeds the threshold",
    "ions_moved_with_hops": "of those, ions the analysis found hops for",
    "share_moved_with_hops": "share of the moved ions that have hops (1 = every displacement explained by hops)",
    "moved_threshold_A": "net displacement above which an ion counts as moved",
    "msd_measured_A2": "mean squared net displacement of the ions over the run",
    "msd_from_hops_A2": "mean squared sum of each ion's hop vectors: should account for most of the measured MSD",
    "residual_mean_A": "mean distance between an ion's net displacement and the sum of its hops",
    "residual_max_A": "largest such distance",
}

#: Quantities that are positive by nature: a value <= 0 is noise, not a measurement.
POSITIVE = ("D_tracer_A2_ps", "D_tracer_cm2_s", "D_collective_A2_ps", "D_collective_cm2_s", "haven_ratio",
            "conductivity_tracer_S_cm", "conductivity_collective_S_cm", "nu0_THz")


def split_unit(name: str) -> tuple[str, str]:
    for suffix, unit in UNITS.items():
        if name.endswith(suffix):
            return name[: -len(suffix)].replace("_", " "), unit
    return name.replace("_", " "), ""


def help_of(key: str) -> str:
    if key in HELP:
        return HELP[key]
    base = re.sub(r"_(mean|max|min)?_?(A2_ps|cm2_s|S_cm|THz|ps|fs|K|A)$", "", key)
    for k in (base, re.sub(r"_(mean|max|min)$", "", base)):
        if k in HELP:
            stat = re.search(r"_(mean|max|min)_", key)
            return HELP[k] + (f" ({stat.group(1)} over hops)" if stat else "")
    return ""


def fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def undetermined(key: str, value, descriptors: dict) -> str | None:
    """Why ``value`` of ``key`` cannot be shown as a number, or None when it can."""
    if key not in POSITIVE:
        return None
    if value is None or not _finite(value):
        return "undetermined"
    if value <= 0:
        return "undetermined (negative: the MSD does not grow beyond noise)"
    family = "collective" if "collective" in key or key == "haven_ratio" else "tracer"
    ci = descriptors.get(f"D_{family}_ci95_cm2_s")
    if ci is not None and len(ci) == 2 and ci[0] is not None and _finite(ci[0]) and ci[0] <= 0:
        return f"undetermined (the {family} D's 95 % interval reaches 0)"
    if key.startswith("D_collective") or key in ("haven_ratio", "conductivity_collective_S_cm"):
        dc = descriptors.get("D_collective_cm2_s")
        if dc is not None and _finite(dc) and dc <= 0:
            return "undetermined (the collective D is not positive)"
    if key == "haven_ratio" and ci is None and value > 3:
        return f"undetermined ({value:.3g} is far outside the physical range 0 to ~1: the collective D is noise)"
    return None


def _interval(ci) -> str:
    """``[lo, hi]`` of an engine interval; ``[lo, ∞)`` when unbounded above; "" when absent."""
    if ci is None or len(ci) != 2 or not _finite(ci[0]):
        return ""
    return f"[{fmt(float(ci[0]))}, {fmt(float(ci[1]))}]" if _finite(ci[1]) else f"[{fmt(float(ci[0]))}, ∞)"


def _unitless(key: str) -> str:
    return "count" if key.startswith(("n_", "ions_", "mobile_")) else "dimensionless"


def process_data(descriptors: dict, consistency: dict | None = None) -> list[dict]:
    """Rows {descriptor, value, interval, unit, key, help} for a table."""
    rows = []
    for k, v in descriptors.items():
        if k.endswith("_ci95_cm2_s"):
            continue  # shown as the interval of its descriptor
        name, unit = split_unit(k)
        why = undetermined(k, v, descriptors)
        ci = descriptors.get(k.replace("_cm2_s", "_ci95_cm2_s")) if k.endswith("_cm2_s") else None
        interval = _interval(ci) if why is None else ""
        rows.append({"descriptor": name, "value": why or fmt(v), "interval": interval, "unit": unit or _unitless(k), "key": k,
                     "help": help_of(k)})
    for k, v in (consistency or {}).items():
        name, unit = split_unit(k)
        rows.append({"descriptor": "consistency: " + re.sub(r"\s+", " ", name), "value": fmt(v), "interval": "", "unit": unit or _unitless(k),
                     "key": k, "help": help_of(k)})
    return rows


def data_table(rows: list[dict]) -> dict:
    """The table's columns for its CSV download (cells safe for a spreadsheet)."""
    from dashboard.csv_safe import cell

    return {c: [cell(r[c]) for r in rows] for c in ("key", "descriptor", "value", "interval", "unit", "help")}
