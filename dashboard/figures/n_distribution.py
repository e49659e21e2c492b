"""The pdf of the number n of concerted hops with its exponential fit, and the counts
of the two n = 2 mechanisms (paper Fig. 4)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def process_data(dist, mechanisms: dict | None = None, conc=None) -> dict:
    """From an :class:`~iondiff_core.distribution.NDistribution` (one run or pooled) and,
    for one run, its :class:`~iondiff_core.correlations.Concertedness` (the null band)."""
    fit = dist.fit
    n_fit = np.linspace(2, dist.n.max(), 200)
    return {
        "n": dist.n.astype(int), "p": dist.p.astype(np.float32), "counts": dist.counts.astype(int),
        "overflow": float(dist.overflow), "overflow_count": int(dist.overflow_count),
        "fit_ok": fit is not None, "n_fit": n_fit.astype(np.float32),
        "p_fit": (fit(n_fit) if fit is not None else np.full_like(n_fit, np.nan)).astype(np.float32),
        "A": fit.A if fit else None, "A_ci95": fit.A_ci95 if fit else None,
        "b": fit.b if fit else None, "b_ci95": fit.b_ci95 if fit else None, "fit_note": dist.fit_note,
        "mean_n": dist.mean_n, "mean_n_ci95": dist.mean_n_ci95, "std_n": dist.std_n,
        "null_p": None if conc is None else np.asarray(conc.null_p, np.float32),
        "null_p_ci95": None if conc is None else np.asarray(conc.null_p_ci95, np.float32),
        "null_overflow": None if conc is None else float(conc.null_overflow),
        "mechanisms": mechanisms or {},
    }


def fit_label(d: dict) -> str:
    if not d["fit_ok"]:
        return f"no fit ({d['fit_note']})"
    (alo, ahi), (blo, bhi) = d["A_ci95"], d["b_ci95"]
    return (f"f(n) = A exp(-b n): A = {d['A']:.3g} [{alo:.3g}, {ahi:.3g}], "
            f"b = {d['b']:.3g} [{blo:.3g}, {bhi:.3g}] (95 %)")


def create_figure(d: dict) -> go.Figure:
    mech = d["mechanisms"]
    fig = make_subplots(rows=1, cols=2 if mech else 1, column_widths=[0.72, 0.28] if mech else None,
                        subplot_titles=("pdf of n", "n = 2 mechanisms") if mech else None)
    n_over = int(d["n"].max()) + 1
    fig.add_trace(go.Bar(x=d["n"], y=d["p"], name="observed", marker_color="#1f77b4",
                         customdata=d["counts"], hovertemplate="n=%{x}<br>p=%{y:.3f}<br>%{customdata} groups<extra></extra>"), 1, 1)
    fig.add_trace(go.Bar(x=[n_over], y=[d["overflow"]], name=f"n > {n_over - 1} (overflow)", marker_color="#8c564b",
                         hovertemplate=f"{d['overflow_count']} groups larger than n_max<extra></extra>"), 1, 1)
    if d.get("null_p") is not None:
        lo, hi = d["null_p_ci95"]
        fig.add_trace(go.Scatter(x=d["n"], y=d["null_p"], mode="markers", name="null model (95 % band)",
                                 marker=dict(color="#7f7f7f", symbol="line-ew-open", size=14),
                                 error_y=dict(type="data", symmetric=False, array=hi - d["null_p"],
                                              arrayminus=d["null_p"] - lo, color="#7f7f7f")), 1, 1)
    if d["fit_ok"]:
        fig.add_trace(go.Scatter(x=d["n_fit"], y=d["p_fit"], mode="lines", name=fit_label(d), line=dict(color="#d62728")), 1, 1)
    fig.update_xaxes(title_text="n (hop events per group; last bar: overflow)", row=1, col=1)
    fig.update_yaxes(title_text="probability", row=1, col=1)
    if mech:
        fig.add_trace(go.Bar(x=list(mech), y=list(mech.values()), marker_color="#2ca02c", showlegend=False), 1, 2)
        fig.update_yaxes(title_text="pairs", row=1, col=2)
        fig.update_xaxes(title_text="mechanism", row=1, col=2)
    ok = d["mean_n"] is not None and np.isfinite(d["mean_n"])
    ci = d.get("mean_n_ci95") or (np.nan, np.nan)
    interval = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ok and np.isfinite(ci[0]) else ""
    mean = f"<n> (n ≥ 2) = {d['mean_n']:.2f}{interval}, std {d['std_n']:.2f}" if ok else "no concerted groups"
    over = f"; {d['overflow_count']} group(s) beyond n_max" if d["overflow_count"] else ""
    fig.update_layout(title=mean + over, height=440, legend=dict(x=0.3, y=0.98), margin=dict(l=60, r=20, t=60, b=50))
    return fig
