"""Mean squared displacement with the fit window, tracer and full (collective) D with
their 95 % intervals; a D the data cannot support (negative, or an interval through 0)
is said to be undetermined, never drawn as a number."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def _ci(desc: dict, key: str):
    """The engine's 95 % interval [lo, hi] (hi may be None/inf: unbounded above), or None."""
    ci = (desc or {}).get(key)
    if ci is None or len(ci) != 2 or ci[0] is None or not np.isfinite(ci[0]):
        return None
    return float(ci[0]), float("inf") if ci[1] is None else float(ci[1])


def interval(ci) -> str:
    """``[lo, hi]``, ``[lo, ∞)`` when unbounded above."""
    return f"[{ci[0]:.3g}, {ci[1]:.3g}]" if np.isfinite(ci[1]) else f"[{ci[0]:.3g}, ∞)"


def d_label(name: str, D: float, ci) -> str:
    """``D_tracer = 1.2e-05 [0.9e-05, 1.5e-05] cm²/s`` or why it is undetermined."""
    if D is None or not np.isfinite(D):
        return f"D_{name} undetermined"
    if D <= 0:
        return f"D_{name} undetermined (the MSD does not grow over the fit window)"
    if ci is not None and ci[0] <= 0:
        return f"D_{name} undetermined (95 % interval reaches 0: {interval(ci)} cm²/s)"
    return f"D_{name} = {D:.3g}" + (f" {interval(ci)}" if ci else "") + " cm²/s"


def process_data(result, max_points: int = 2000) -> dict:
    tr = result.transport
    if tr is None:
        return {"empty": True, "notes": ["no MSD: the timestep is unknown (give it, or put POTIM and NBLOCK in the INCAR)"]}
    m = tr.msd
    step = max(1, int(np.ceil(len(m.lag_ps) / max_points)))
    out = {"empty": False, "lag_ps": m.lag_ps[::step].astype(np.float32),
           "tracer_A2": m.tracer_A2[::step].astype(np.float32), "collective_A2": m.collective_A2[::step].astype(np.float32),
           "notes": []}
    for name, fit in (("tracer", tr.tracer), ("collective", tr.collective)):
        t = np.array(fit.window_ps)
        ci = _ci(result.descriptors, f"D_{name}_ci95_cm2_s")
        label = d_label(name, fit.D_cm2_s, ci)
        out[f"{name}_fit"] = {"t": t.astype(np.float32), "msd": (6 * fit.D_A2_ps * t + fit.intercept_A2).astype(np.float32),
                              "D_cm2_s": fit.D_cm2_s, "D_A2_ps": fit.D_A2_ps, "reason": fit.reason, "ci": ci, "label": label}
        if fit.reason:
            out["notes"].append(f"{name} fit: {fit.reason}")
        if "undetermined" in label:
            out["notes"].append(label)
    slope = (result.descriptors or {}).get("msd_loglog_slope")
    if slope is not None and np.isfinite(slope) and not 0.8 <= slope <= 1.2:
        out["notes"].append(f"log-log slope of the tracer MSD over the fit window is {slope:.2f}, not 1: "
                            "the motion is not yet diffusive there, D is uncertain")
    return out


def data_table(d: dict) -> dict:
    if d.get("empty"):
        return {"note": d["notes"]}
    return {"lag_ps": d["lag_ps"], "msd_tracer_A2": d["tracer_A2"], "msd_collective_per_ion_A2": d["collective_A2"]}


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
                                 name=f"fit window: {f['label']}"))
    fig.update_layout(title="Mean squared displacement of the mobile ions", height=440,
                      xaxis_title="lag time (ps)", yaxis_title="MSD (Å²)", margin=dict(l=60, r=20, t=50, b=50),
                      legend=dict(x=0.01, y=0.99))
    return fig
