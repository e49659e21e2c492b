"""The pdf of the number n of concerted hops with its exponential fit, and the counts
of the two n = 2 mechanisms (paper Fig. 4)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def process_data(dist, mechanisms: dict | None = None) -> dict:
    """From an :class:`~iondiff_core.distribution.NDistribution` (one run or pooled)."""
    fit = dist.fit
    n_fit = np.linspace(2, dist.n.max(), 200)
    return {
        "n": dist.n.astype(int), "p": dist.p.astype(np.float32), "counts": dist.counts.astype(int),
        "fit_ok": bool(np.isfinite(fit.A)), "n_fit": n_fit.astype(np.float32),
        "p_fit": (fit(n_fit) if np.isfinite(fit.A) else np.full_like(n_fit, np.nan)).astype(np.float32),
        "A": fit.A, "A_err": fit.A_err, "b": fit.b, "b_err": fit.b_err, "fit_note": fit.reason,
        "mean_n": dist.mean_n, "std_n": dist.std_n, "overflow": dist.overflow,
        "mechanisms": mechanisms or {},
    }


def _pm(v, e):
    return f"{v:.3g} ± {e:.2g}" if np.isfinite(e) else f"{v:.3g}"


def fit_label(d: dict) -> str:
    if not d["fit_ok"]:
        return f"no fit ({d['fit_note']})"
    return f"f(n) = A exp(-b n): A = {_pm(d['A'], d['A_err'])}, b = {_pm(d['b'], d['b_err'])}"


def create_figure(d: dict) -> go.Figure:
    mech = d["mechanisms"]
    fig = make_subplots(rows=1, cols=2 if mech else 1, column_widths=[0.72, 0.28] if mech else None,
                        subplot_titles=("pdf of n", "n = 2 mechanisms") if mech else None)
    fig.add_trace(go.Bar(x=d["n"], y=d["p"], name="groups", marker_color="#1f77b4",
                         customdata=d["counts"], hovertemplate="n=%{x}<br>p=%{y:.3f}<br>%{customdata} groups<extra></extra>"), 1, 1)
    if d["fit_ok"]:
        fig.add_trace(go.Scatter(x=d["n_fit"], y=d["p_fit"], mode="lines", name=fit_label(d), line=dict(color="#d62728")), 1, 1)
    fig.update_xaxes(title_text="n (concerted hop events per group)", row=1, col=1)
    fig.update_yaxes(title_text="probability", row=1, col=1)
    if mech:
        fig.add_trace(go.Bar(x=list(mech), y=list(mech.values()), marker_color="#2ca02c", showlegend=False), 1, 2)
        fig.update_yaxes(title_text="pairs", row=1, col=2)
        fig.update_xaxes(title_text="mechanism", row=1, col=2)
    mean = f"<n> (n ≥ 2) = {d['mean_n']:.2f} ± {d['std_n']:.2f}" if d["mean_n"] is not None and np.isfinite(d["mean_n"]) else "no concerted groups"
    over = f"; {d['overflow']} groups beyond n_max" if d["overflow"] else ""
    fig.update_layout(title=mean + over, height=440, legend=dict(x=0.3, y=0.98), margin=dict(l=60, r=20, t=60, b=50))
    return fig
