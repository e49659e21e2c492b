"""Cross-simulation outputs of ``batch``: the summary table, the Spearman matrix of
the descriptors and the Arrhenius fits (paper Figs. 6 and 7, section 3)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from iondiff_core import descriptors, distribution

TARGET = "D_tracer_cm2_s"


_TEXT = {"name", "path", "error", "material", "mobile_species"}


def _numeric_columns(rows: list[dict]) -> dict[str, np.ndarray]:
    table = {}
    for k in dict.fromkeys(k for r in rows for k in r):
        vals = [r.get(k) for r in rows]
        if k not in _TEXT and all(v is None or isinstance(v, (int, float)) for v in vals):
            table[k] = np.array([np.nan if v is None else float(v) for v in vals])
    return table


def pooled_distributions(docs: list[dict], n_max: int = 20) -> dict:
    """pdf of n pooled over simulations: all together and per family (paper Figs. 4, 5)."""
    by_family: dict[str, list[int]] = {}
    for d in docs:
        sizes = [g["n"] for g in d["groups"]]
        by_family.setdefault("all", []).extend(sizes)
        by_family.setdefault(descriptors.family_of(d["input"]["mobile_species"]), []).extend(sizes)
    out = {}
    for fam, sizes in by_family.items():
        nd = distribution.n_distribution(np.array(sizes, dtype=int), n_max)
        out[fam] = {
            "n": nd.n, "p": nd.p, "counts": nd.counts, "overflow": nd.overflow,
            "A": nd.fit.A, "A_err": nd.fit.A_err, "b": nd.fit.b, "b_err": nd.fit.b_err,
            "mean_n": nd.mean_n, "std_n": nd.std_n, "simulations": sum(1 for _ in docs),
        }
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
