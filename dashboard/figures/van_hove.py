"""van Hove self and distinct correlation functions of the mobile ions (paper Fig. 1c,d)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def process_data(result) -> dict:
    tr = result.transport
    if tr is None or tr.van_hove is None:
        return {"empty": True}
    vh = tr.van_hove
    return {"empty": False, "r_A": vh.r_A.astype(np.float32), "t_ps": vh.t_ps.astype(np.float32),
            "self": vh.self.astype(np.float32), "distinct": vh.distinct.astype(np.float32)}


def data_table(d: dict) -> dict:
    """G_s and G_d as long columns over (t, r)."""
    if d.get("empty"):
        return {"note": ["van Hove functions need the timestep"]}
    t, r = np.meshgrid(d["t_ps"], d["r_A"], indexing="ij")
    return {"t_ps": t.ravel(), "r_A": r.ravel(), "G_self_per_A": d["self"].ravel(), "G_distinct": d["distinct"].ravel()}


def create_figure(d: dict) -> go.Figure:
    if d.get("empty"):
        fig = go.Figure()
        fig.update_layout(title="van Hove functions need the timestep", height=300)
        return fig
    fig = make_subplots(rows=1, cols=2, subplot_titles=("self part G_s(r, t) (1/Å)", "distinct part G_d(r, t) (g(r)-like)"),
                        horizontal_spacing=0.12)
    s = np.where(d["self"] > 0, d["self"], np.nan)
    fig.add_trace(go.Heatmap(x=d["r_A"], y=d["t_ps"], z=np.log10(s), colorscale="Viridis",
                             colorbar=dict(x=0.44, title="log10 G_s")), 1, 1)
    fig.add_trace(go.Heatmap(x=d["r_A"], y=d["t_ps"], z=d["distinct"], colorscale="Viridis", colorbar=dict(title="G_d")), 1, 2)
    for c in (1, 2):
        fig.update_xaxes(title_text="r (Å)", row=1, col=c)
        fig.update_yaxes(title_text="t (ps)", row=1, col=c)
    fig.update_layout(height=440, margin=dict(l=60, r=20, t=50, b=50))
    return fig
