"""Batches of simulations: one simulation analysed into its JSON and summary row
(:func:`analyse_one`, what every executor runs, local processes or the dashboard's
workers), and the cross-simulation outputs: the summary table, the Spearman matrix of
the descriptors and the Arrhenius fits (paper Figs. 6 and 7, section 3).

Engine only: nothing here imports the dashboard.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np

from iondiff_core import correlations, descriptors, distribution
from iondiff_core.errors import InputError
from iondiff_core.parameters import Parameters

TARGET = "D_tracer_cm2_s"


def simulation_name(path: Path, root: Path) -> str:
    """A simulation's name in a batch: its path below ``root``, made file-name safe."""
    rel = path.relative_to(root) if path != root else Path(path.name)
    return re.sub(r"[^\w.+-]+", "_", str(rel.with_suffix("") if path.is_file() else rel)).strip("_") or path.name


def material_of(name: str) -> str:
    """Material label from a simulation name: temperature and run tokens removed."""
    m = re.sub(r"(^|[_-])\d+(\.\d+)?K(?=$|[_-])", r"\1", name)
    m = re.sub(r"[_-]run\d+$", "", m)
    return re.sub(r"[_-]+", "_", m).strip("_") or name


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def analyse_one(path: str, out_json: str, params: dict, cache_dir, timestep_fs, temperature, type_map=None,
                allow_truncated: bool = False, mobile_only: bool = True, limits=None) -> dict:
    """Analyse one simulation and write its JSON; returns its summary row (or an error row).

    Parameters are plain (paths as str, ``params`` as :meth:`Parameters.to_dict`), so a
    process pool or a task queue can carry them. ``temperature`` in K, ``timestep_fs`` in fs;
    ``limits``: :class:`iondiff_core.io.ReadLimits` of the read.
    """
    from iondiff_core import pipeline, report

    try:
        result = pipeline.analyze(
            path, Parameters.from_dict(params), cache_dir, None, timestep_fs, temperature, type_map=type_map,
            allow_truncated=allow_truncated, mobile_only=mobile_only, limits=limits,
        )
        doc = report.with_provenance(result.to_dict(), result)
        write_atomic(Path(out_json), report.dumps(doc))
        row = {"path": path, "error": "", **summary_row(doc)}
    except InputError as exc:
        row = {"path": path, "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a batch must survive one bad simulation
        row = {"path": path, "error": f"{type(exc).__name__}: {exc}"}
    return row


def summary_row(doc: dict) -> dict:
    """The summary-table row of one analysis document (``report.with_provenance`` output)."""
    i = doc["input"]
    row = {
        "mobile_species": i["mobile_species"],
        "temperature_K": i["temperature_K"],
        "frames": i["frames"],
        "n_hops": len(doc["hops"]),
        "mean_n": doc["pdf"]["mean_n"],
        "std_n": doc["pdf"]["std_n"],
        "pdf_A": doc["pdf"]["A"],
        "pdf_b": doc["pdf"]["b"],
        "pdf_overflow": doc["pdf"]["overflow"],
    }
    c = doc.get("concertedness") or {}
    if c:
        row.update({
            "concerted_fraction": c["observed_fraction"], "null_fraction": c["null_mean"],
            "concerted_excess": c["excess"], "concerted_p_value": c["p_value"], "verdict": c["verdict"],
        })
    row.update({k: v for k, v in doc["descriptors"].items() if isinstance(v, (int, float)) or v is None})
    return row


_TEXT = {"name", "path", "error", "material", "mobile_species", "verdict"}


def _numeric_columns(rows: list[dict]) -> dict[str, np.ndarray]:
    table = {}
    for k in dict.fromkeys(k for r in rows for k in r):
        vals = [r.get(k) for r in rows]
        if k not in _TEXT and all(v is None or isinstance(v, (int, float)) for v in vals):
            table[k] = np.array([np.nan if v is None else float(v) for v in vals])
    return table


def pooled_distributions(docs: list[dict], n_max: int = 20) -> dict:
    """pdf of n pooled over simulations, all together and per family (paper Figs. 4, 5),
    with the same rules as one run (overflow bin, fit only where meaningful, bootstrap
    intervals), and the pooled null model: replica r of the pool is the sum of replica r
    of every simulation (each ion's hop train shifted independently in each)."""
    fams: dict[str, list[dict]] = {}
    for d in docs:
        fams.setdefault("all", []).append(d)
        fams.setdefault(descriptors.family_of(d["input"]["mobile_species"]), []).append(d)
    out = {}
    for fam, group in fams.items():
        sizes = np.array([g["n"] for d in group for g in d["groups"]], dtype=int)
        nd = distribution.n_distribution(sizes, n_max)
        entry = nd.to_dict()
        fit = nd.fit
        entry.update({
            "A": fit.A if fit else None, "b": fit.b if fit else None,
            "A_err": (fit.A_ci95[1] - fit.A_ci95[0]) / 3.92 if fit else None,
            "b_err": (fit.b_ci95[1] - fit.b_ci95[0]) / 3.92 if fit else None,
            "simulations": len(group),
            "percolated_runs": [d["input"]["source"] for d in group
                                if d.get("concertedness", {}).get("verdict") == "percolated"],
        })
        entry["concertedness"] = _pooled_concertedness(group, sizes, n_max)
        out[fam] = entry
    return out


def _pooled_concertedness(docs: list[dict], sizes: np.ndarray, n_max: int) -> dict | None:
    conc = [d.get("concertedness") or {} for d in docs]
    if not conc or any("null_in_groups" not in c or "null_counts" not in c for c in conc):
        return None  # documents written before the null model
    r = min(len(c["null_in_groups"]) for c in conc)
    in_groups = sum(np.asarray(c["null_in_groups"][:r], float) for c in conc)
    counts = sum(_counts_at(np.asarray(c["null_counts"][:r], float), n_max) for c in conc)
    hops = int(sum(c.get("n_hops", 0) for c in conc))
    j = correlations.judge(int(sizes[sizes >= 2].sum()), hops, in_groups, counts,
                           distribution.percolates(sizes), int(sizes.max(initial=0)))
    return {**j.to_dict(), "null_p": j.null_p, "null_p_ci95": j.null_p_ci95, "null_overflow": j.null_overflow,
            "null_in_groups": None, "null_counts": None}


def _counts_at(counts: np.ndarray, n_max: int) -> np.ndarray:
    """Per-replica group counts re-binned to 1..n_max and an overflow column."""
    sizes = counts[:, :-1]
    out = np.zeros((len(counts), n_max + 1))
    k = min(n_max, sizes.shape[1])
    out[:, :k] = sizes[:, :k]
    out[:, n_max] = sizes[:, k:].sum(axis=1) + counts[:, -1]
    return out


def write_summary(rows: list[dict], out: Path, docs: list[dict] | None = None) -> dict:
    """Write summary.csv, spearman.csv and cross_simulation.json into ``out``.

    ``docs``: the per-simulation JSON documents, for the pooled pdf of n.
    """
    out = Path(out)
    ok = [r for r in rows if not r.get("error")]
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    doc: dict = {"simulations": len(rows), "analysed": len(ok)}
    table = {k: v for k, v in _numeric_columns(ok).items() if np.sum(np.isfinite(v)) >= 3 and np.nanstd(v) > 0}
    if len(ok) >= 3 and table:
        sp = descriptors.spearman_matrix(table)
        with open(out / "spearman.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["descriptor", *[f"rho:{n}" for n in sp.names], *[f"p:{n}" for n in sp.names]])
            for i, n in enumerate(sp.names):
                w.writerow([n, *sp.rho[i], *sp.p[i]])
        doc["spearman"] = {"names": sp.names, "rho": sp.rho.tolist(), "p": sp.p.tolist(), "n": sp.n.tolist()}
    arr = descriptors.arrhenius_by_material(
        [
            {
                "material": r["material"],
                "temperature_K": r.get("temperature_K"),
                "D_tracer_cm2_s": r.get("D_tracer_cm2_s"),
                "D_collective_cm2_s": r.get("D_collective_cm2_s"),
            }
            for r in ok
        ]
    )
    doc["arrhenius"] = arr
    if docs:
        doc["pdf_pooled"] = pooled_distributions(docs, docs[0]["parameters"]["n_max"])
    from iondiff_core.report import _clean

    (out / "cross_simulation.json").write_text(json.dumps(_clean(doc), indent=1))
    return doc
