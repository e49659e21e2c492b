"""Results as plain data: the JSON document of the command line, and CSV tables."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np

from iondiff_core import provenance

HOP_COLUMNS = ("ion", "atom", "start", "end", "length_A", "duration_ps", "open_ended", "resolved", "group")


def _clean(x):
    """JSON-safe values: numpy scalars to Python, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def hop_records(result, excursions: bool = False) -> list[dict]:
    """One dict per hop (see README: the ``hops`` list); with ``excursions``, one per
    unfinished excursion (same fields, ``group`` -1)."""
    h = result.excursions if excursions else result.hops
    atoms = result.prep.file_atoms  # file order, also for a mobile-only read
    dt_ps = result.prep.trajectory.timestep_ps if result.prep.trajectory.timestep_fs else np.nan
    group = np.full(len(h), -1) if excursions else result.correlations.group_of
    return [
        {
            "ion": int(h.ion[k]),
            "atom": int(atoms[h.ion[k]]),
            "start": int(h.start[k]),
            "end": int(h.end[k]),
            "length_A": float(h.length_A[k]),
            "duration_ps": float(h.duration_frames[k] * dt_ps),
            "open_ended": bool(h.open_ended[k]),
            "resolved": bool(h.resolved[k]),
            "centre_from": int(h.centre_from[k]),
            "centre_to": int(h.centre_to[k]),
            "origin_A": h.origin_A[k].round(4).tolist(),
            "target_A": h.target_A[k].round(4).tolist(),
            "group": int(group[k]),
        }
        for k in range(len(h))
    ]


def result_to_dict(result) -> dict:
    traj = result.prep.trajectory
    h = result.hops
    dist = result.distribution
    conc = result.concertedness
    pdf = dist.to_dict()
    fit = dist.fit
    half = (lambda ci: (ci[1] - ci[0]) / (2 * 1.96)) if fit else None
    pdf.update({
        # flat copies of the fit, kept for older readers; *_err = 95 % half-width / 1.96
        "A": fit.A if fit else None, "b": fit.b if fit else None,
        "A_err": half(fit.A_ci95) if fit else None, "b_err": half(fit.b_ci95) if fit else None,
        "null_p": conc.null_p, "null_p_ci95": conc.null_p_ci95, "null_overflow": conc.null_overflow,
    })
    groups = [
        {"hops": g.tolist(), "ions": sorted(set(h.ion[g].tolist())), "n": int(len(g))} for g in result.correlations.groups
    ]
    doc = {
        "input": {
            "source": traj.source,
            "frames": traj.n_frames,
            "atoms": traj.file_n_atoms,  # the file's, also when only the mobile ions were read
            "species": traj.file_composition,
            "mobile_species": result.prep.species,
            "mobile_ions": int(len(result.prep.atoms)),
            "timestep_fs": traj.timestep_fs,
            "temperature_K": traj.temperature_K,
            "variable_cell": traj.variable_cell,
            "sha256": result.prep.digest,
        },
        "parameters": result.params.to_dict(),
        "hops": hop_records(result),
        "failed_attempts": len(result.hop_analysis.failed),
        "groups": groups,
        "reference_level": result.reference_level,
        "mechanisms_n2": result.mechanisms.counts(),
        "excursions": hop_records(result, excursions=True),
        "concertedness": conc.to_dict(),
        "pdf": pdf,
        "centres": {
            "k": result.centres.k,
            "best_silhouette": result.centres.best_silhouette,
        },
        "consistency": result.consistency.summary(),
        "descriptors": result.descriptors,
        "warnings": result.warnings,
    }
    return _clean(doc)


def with_provenance(doc: dict, result) -> dict:
    """``doc`` with its reproducibility record (``provenance``: input file hashes, every
    parameter, seeds, software versions)."""
    rec = provenance.record(doc, result.params, {"sha256": result.prep.digest, "files": _input_files(result.prep.trajectory.source)})
    return {**doc, "provenance": _clean(rec)}


def _input_files(source: str) -> list[dict]:
    """Name, size and SHA-256 of the input file and the INCAR beside it, when on disk."""
    from pathlib import Path

    try:
        p = Path(source) if source else None
        if p is None or not p.is_file():
            return []
        files = provenance.input_files(p)
        incar = p.parent / "INCAR"
        return files + (provenance.input_files(incar) if incar.is_file() else [])
    except OSError:
        return []


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=1)


def hops_csv(result) -> str:
    """The hops as CSV text (one row per hop)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HOP_COLUMNS)
    for r in hop_records(result):
        w.writerow([r[c] for c in HOP_COLUMNS])
    return buf.getvalue()
