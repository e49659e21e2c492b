"""Cross-simulation views of the library (paper Figs. 4 to 7): the Spearman matrix of
the descriptors, the pooled pdf of n per family, the Arrhenius plot with Ea, and ν
against ν0."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from iondiff_core import descriptors as desc
from iondiff_core.batch import pooled_distributions
from iondiff_core.transport import KB_EV_PER_K

#: Descriptors of the paper's Fig. 6a, against the tracer D.
SPEARMAN_KEYS = (
    "D_tracer_cm2_s", "hop_length_mean_A", "hop_length_max_A", "hop_length_min_A",
    "hop_duration_mean_ps", "hop_duration_max_ps", "hop_duration_min_ps",
    "nu_THz", "residence_time_metastable_ps", "mean_n", "haven_ratio", "temperature_K",
)


def process_data(entries: list[dict]) -> dict:
    """``entries``: dicts with ``name``, ``material``, ``family``, ``temperature_K``,
    ``descriptors`` and ``groups`` (the group sizes n of the simulation)."""
    rows = [{**e["descriptors"], "material": e["material"], "temperature_K": e["temperature_K"]} for e in entries]
    out: dict = {"n": len(entries), "names": [e["name"] for e in entries]}
    table = {}
    for k in SPEARMAN_KEYS:
        vals = np.array([np.nan if r.get(k) is None else float(r.get(k)) for r in rows])
        if np.sum(np.isfinite(vals)) >= 3 and np.nanstd(vals) > 0:
            table[k] = vals
    if len(table) >= 2:
        sp = desc.spearman_matrix(table)
        out["spearman"] = {"names": list(sp.names), "rho": sp.rho.astype(np.float32), "p": sp.p.astype(np.float32)}
    docs = [{"groups": [{"n": n} for n in e["groups"]], "input": {"mobile_species": e["species"]}} for e in entries]
    out["pooled"] = pooled_distributions(docs) if docs else {}
    arr = desc.arrhenius_by_material(rows)
    points = {}
    for e in entries:
        T, D = e["temperature_K"], e["descriptors"].get("D_tracer_cm2_s")
        if T and D and D > 0:
            points.setdefault(e["material"], []).append((1000.0 / T, D, e["descriptors"].get("D_collective_cm2_s")))
    out["arrhenius"] = {m: {"points": points.get(m, []), **fit} for m, fit in arr.items() if m in points}
    nv = desc.nu_vs_nu0(rows)
    out["nu"] = {"labels": [e["name"] for e in entries], "nu": nv.nu_THz.astype(np.float32), "nu0": nv.nu0_THz.astype(np.float32)}
    return out


def spearman_figure(d: dict) -> go.Figure:
    fig = go.Figure()
    sp = d.get("spearman")
    if not sp:
        fig.update_layout(title="Spearman matrix: select at least three simulations with varying descriptors", height=300)
        return fig
    text = [[f"ρ={r:.2f}<br>p={p:.2g}" for r, p in zip(rr, pp)] for rr, pp in zip(sp["rho"], sp["p"])]
    fig.add_trace(go.Heatmap(z=sp["rho"], x=sp["names"], y=sp["names"], zmin=-1, zmax=1, colorscale="RdBu_r",
                             text=text, hovertemplate="%{y} vs %{x}<br>%{text}<extra></extra>", colorbar=dict(title="ρ")))
    fig.update_layout(title=f"Spearman correlation of the descriptors ({d['n']} simulations)", height=560,
                      xaxis_title="descriptor", yaxis_title="descriptor", margin=dict(l=160, r=20, t=50, b=140))
    return fig


def pooled_pdf_figure(d: dict) -> go.Figure:
    fig = go.Figure()
    for fam, p in d["pooled"].items():
        fig.add_trace(go.Scatter(x=p["n"], y=p["p"], mode="markers+lines" if fam == "all" else "markers", name=f"{fam}"))
        if p["A"] is not None and np.isfinite(p["A"] if p["A"] is not None else np.nan):
            n = np.linspace(2, max(p["n"]), 100)
            fig.add_trace(go.Scatter(x=n, y=p["A"] * np.exp(-p["b"] * n), mode="lines", line=dict(dash="dash"),
                                     name=f"{fam}: {p['A']:.3g} exp(-{p['b']:.3g} n)"))
    fig.update_layout(title="pdf of n pooled over the selected simulations", height=440,
                      xaxis_title="n (concerted hop events per group)", yaxis_title="probability", margin=dict(l=60, r=20, t=50, b=50))
    return fig


def arrhenius_figure(d: dict) -> go.Figure:
    fig = go.Figure()
    for m, a in d["arrhenius"].items():
        pts = np.array(a["points"], dtype=float)
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", name=f"{m} tracer"))
        if a.get("Ea_tracer_eV") is not None and np.isfinite(a["Ea_tracer_eV"]):
            x = np.linspace(pts[:, 0].min(), pts[:, 0].max(), 50)
            y = a["D0_tracer_cm2_s"] * np.exp(-a["Ea_tracer_eV"] / (KB_EV_PER_K * 1000.0 / x))
            label = f"{m}: Ea = {a['Ea_tracer_eV']:.3f} eV (tracer)"
            if a.get("Ea_full_eV") is not None and np.isfinite(a["Ea_full_eV"]):
                label += f", {a['Ea_full_eV']:.3f} eV (full)"
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=label))
    fig.update_layout(title="Arrhenius plot of the tracer D", height=440, xaxis_title="1000 / T (1/K)",
                      yaxis_title="D (cm²/s)", yaxis_type="log", margin=dict(l=60, r=20, t=50, b=50))
    return fig


def nu_figure(d: dict) -> go.Figure:
    nu, nu0 = np.asarray(d["nu"]["nu"], float), np.asarray(d["nu"]["nu0"], float)
    fig = go.Figure(go.Scatter(x=nu, y=nu0, mode="markers", text=d["nu"]["labels"], name="simulations",
                               hovertemplate="%{text}<br>ν=%{x:.3g} THz<br>ν0=%{y:.3g} THz<extra></extra>"))
    ok = np.isfinite(nu) & np.isfinite(nu0) & (nu > 0) & (nu0 > 0)
    if ok.any():
        lo, hi = min(nu[ok].min(), nu0[ok].min()) / 2, max(nu[ok].max(), nu0[ok].max()) * 2
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="red"), name="ν0 = ν"))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[10 * lo, 10 * hi], mode="lines", line=dict(color="blue"), name="ν0 = 10 ν"))
    fig.update_layout(title="Hopping frequency ν against the dilute-limit ν0 = 6 D / Δr²", height=440,
                      xaxis_title="ν (THz)", yaxis_title="ν0 (THz)", xaxis_type="log", yaxis_type="log",
                      margin=dict(l=60, r=20, t=50, b=50))
    return fig
