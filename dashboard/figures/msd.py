"""Mean squared displacement with the fit window, tracer and full (collective) D."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def process_data(result, max_points: int = 2000) -> dict:
    tr = result.transport
    if tr is None:
        return {"empty": True}
    m = tr.msd
    step = max(1, int(np.ceil(len(m.lag_ps) / max_points)))
    out = {"empty": False, "lag_ps": m.lag_ps[::step].astype(np.float32),
           "tracer_A2": m.tracer_A2[::step].astype(np.float32), "collective_A2": m.collective_A2[::step].astype(np.float32)}
    for name, fit in (("tracer", tr.tracer), ("collective", tr.collective)):
        t = np.array(fit.window_ps)
        out[f"{name}_fit"] = {"t": t.astype(np.float32), "msd": (6 * fit.D_A2_ps * t + fit.intercept_A2).astype(np.float32),
                              "D_cm2_s": fit.D_cm2_s, "D_A2_ps": fit.D_A2_ps, "reason": fit.reason}
    return out


def create_figure(d: dict) -> go.Figure:
    fig = go.Figure()
    if d.get("empty"):
        fig.update_layout(title="MSD needs the timestep (give it, or put POTIM and NBLOCK in the INCAR)", height=300)
        return fig
    fig.add_trace(go.Scatter(x=d["lag_ps"], y=d["tracer_A2"], name="tracer MSD", line=dict(color="#1f77b4")))
    fig.add_trace(go.Scatter(x=d["lag_ps"], y=d["collective_A2"], name="full (collective) MSD / N", line=dict(color="#ff7f0e")))
    for name, color in (("tracer", "#1f77b4"), ("collective", "#ff7f0e")):
        f = d[f"{name}_fit"]
        fig.add_trace(go.Scatter(x=f["t"], y=f["msd"], mode="lines", line=dict(color=color, dash="dash", width=3),
                                 name=f"fit window, D_{name} = {f['D_cm2_s']:.3g} cm²/s"))
    fig.update_layout(title="Mean squared displacement of the mobile ions", height=440,
                      xaxis_title="lag time (ps)", yaxis_title="MSD (Å²)", margin=dict(l=60, r=20, t=50, b=50))
    return fig
