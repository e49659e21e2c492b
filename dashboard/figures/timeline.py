"""The binary hop timeline: mobile ions x time, 1 while in transit (paper Fig. 3a), with
each hop's midpoint marked in its concerted group's colour. Clicking a hop selects its
group; a selected group is circled and every other hop dimmed."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from dashboard.figures import group_colours
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
    h = result.hops
    groups = np.asarray(result.correlations.group_of, int)
    mid = 0.5 * (h.start + h.end) * (dt or 1.0)
    sel = np.zeros((0, 2))
    if highlight_group is not None:
        k = np.flatnonzero(groups == highlight_group)
        sel = np.stack([mid[k], h.ion[k]], axis=1)
    return {"z": pooled, "x": x.astype(np.float32), "time_unit": "ps" if dt else "frame",
            "bin_frames": width, "selected": sel.astype(np.float32),
            "hop_t": mid.astype(np.float32), "hop_ion": np.asarray(h.ion, int), "hop_group": groups,
            "hop_color": list(group_colours(groups, result.correlations.sizes, highlight_group))}


def data_table(d: dict) -> dict:
    """One row per hop: midpoint time, ion, group (the pooled image is not exported)."""
    return {f"mid_time_{d['time_unit']}": d["hop_t"], "ion": d["hop_ion"], "group": d["hop_group"]}


def group_from_click(result, click: dict | None) -> int | None:
    """The group of a clicked hop marker, or of the hop of the clicked ion nearest in time."""
    if not click or not click.get("points"):
        return None
    pt = click["points"][0]
    if pt.get("customdata") is not None and not isinstance(pt.get("customdata"), list):
        return int(pt["customdata"])
    h = result.hops
    if "y" not in pt or "x" not in pt or not len(h):
        return None
    traj = result.prep.trajectory
    frame = float(pt["x"]) / (traj.timestep_ps if traj.timestep_fs else 1.0)
    mine = np.flatnonzero(h.ion == int(round(float(pt["y"]))))
    if not len(mine):
        return None
    gap = np.maximum(h.start[mine] - frame, 0) + np.maximum(frame - h.end[mine], 0)
    return int(result.correlations.group_of[mine[np.argmin(gap)]])


def create_figure(d: dict) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=d["z"], x=d["x"], colorscale=[[0, "#f7f7f7"], [1, "#f2a0a0"]], showscale=False,
                               name="in transit",
                               hovertemplate="t=%{x}<br>ion %{y}<br>in transit: %{z}<extra>click: select the hop's group</extra>"))
    fig.add_trace(go.Scatter(x=d["hop_t"], y=d["hop_ion"], mode="markers", customdata=d["hop_group"].tolist(), name="hops (colour = group)",
                             marker=dict(color=d["hop_color"], size=7, line=dict(width=0)),
                             hovertemplate="hop of ion %{y} at %{x}<br>group %{customdata}<extra></extra>"))
    if len(d["selected"]):
        fig.add_trace(go.Scatter(x=d["selected"][:, 0], y=d["selected"][:, 1], mode="markers",
                                 marker=dict(symbol="circle-open", size=14, color="black", line=dict(width=2)),
                                 name="selected group", hoverinfo="skip"))
    note = f" (bins of {d['bin_frames']} frames)" if d["bin_frames"] > 1 else ""
    fig.update_layout(title="Hop timeline: shaded while in transit" + note, height=480, margin=dict(l=60, r=10, t=40, b=50),
                      xaxis_title=f"time ({d['time_unit']})", yaxis_title="mobile ion index", uirevision="timeline",
                      legend=dict(orientation="h", y=1.02, x=0, xanchor="left", yanchor="bottom"))
    return fig
