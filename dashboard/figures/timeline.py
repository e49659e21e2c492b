"""The binary hop timeline: mobile ions x time, 1 while in transit (paper Fig. 3a)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from iondiff_core.hops import timeline

MAX_BINS = 2000


def process_data(result, highlight_group: int | None = None, max_bins: int = MAX_BINS) -> dict:
    """Timeline max-pooled to at most ``max_bins`` time bins (uint8), with times in ps."""
    traj = result.prep.trajectory
    t = traj.n_frames
    n = len(result.prep.atoms)
    tl = timeline(result.hops, t, n)
    width = max(1, int(np.ceil(t / max_bins)))
    bins = int(np.ceil(t / width))
    pad = np.zeros((n, bins * width), np.uint8)
    pad[:, :t] = tl
    pooled = pad.reshape(n, bins, width).max(axis=2)
    dt = traj.timestep_ps if traj.timestep_fs else None
    x = (np.arange(bins) * width + 0.5 * (width - 1)) * (dt or 1.0)
    sel = np.zeros((0, 2))
    if highlight_group is not None:
        h = result.hops
        k = np.flatnonzero(result.correlations.group_of == highlight_group)
        sel = np.stack([0.5 * (h.start[k] + h.end[k]) * (dt or 1.0), h.ion[k]], axis=1)
    return {"z": pooled, "x": x.astype(np.float32), "time_unit": "ps" if dt else "frame",
            "bin_frames": width, "selected": sel.astype(np.float32)}


def create_figure(d: dict) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=d["z"], x=d["x"], colorscale=[[0, "#f7f7f7"], [1, "#d62728"]], showscale=False,
                               hovertemplate="t=%{x}<br>ion %{y}<br>in transit: %{z}<extra></extra>"))
    if len(d["selected"]):
        fig.add_trace(go.Scatter(x=d["selected"][:, 0], y=d["selected"][:, 1], mode="markers",
                                 marker=dict(symbol="circle-open", size=12, color="black", line=dict(width=2)),
                                 name="selected group"))
    note = f" (bins of {d['bin_frames']} frames)" if d["bin_frames"] > 1 else ""
    fig.update_layout(title="Hop timeline: 1 while in transit" + note, height=480, margin=dict(l=60, r=10, t=40, b=50),
                      xaxis_title=f"time ({d['time_unit']})", yaxis_title="mobile ion index", uirevision="timeline")
    return fig
