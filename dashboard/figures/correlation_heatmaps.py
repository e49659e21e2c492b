"""Correlation heatmaps of the hop events: raw Pearson C, one random reference
realisation, the binarised matrix, and the binarised matrix reordered by concerted
group (the paper's Fig. 3b). Clicking the reordered panel selects a group."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iondiff_core.correlations import event_sigmas, pearson_matrix

MAX_SIZE = 300


def _pool(m: np.ndarray, size: int, how) -> tuple[np.ndarray, int]:
    """Block-reduce a square matrix to at most ``size`` rows (for display only)."""
    h = len(m)
    f = max(1, int(np.ceil(h / size)))
    if f == 1:
        return m, 1
    n = int(np.ceil(h / f))
    pad = np.full((n * f, n * f), np.nan)
    pad[:h, :h] = m
    return how(pad.reshape(n, f, n, f), axis=(1, 3)), f


def process_data(result, max_size: int = MAX_SIZE, seed: int = 0) -> dict:
    corr = result.correlations
    h = len(corr.group_of)
    t = result.prep.trajectory.n_frames
    if h == 0 or corr.matrix is None:
        return {"n_events": h, "empty": True}
    rng = np.random.default_rng(seed)
    sig = event_sigmas(result.hops, result.params.width_factor, result.params.width_rule)
    if result.params.random_width == "mean":
        sig = np.full(h, sig.mean())
    rand = pearson_matrix(rng.uniform(0, t - 1, h), sig, t)
    binary = corr.binary().astype(float)
    order = corr.order
    raw, f = _pool(corr.matrix, max_size, np.nanmean)
    out = {
        "n_events": h,
        "empty": False,
        "factor": f,
        "level": float(corr.level),
        "raw": raw.astype(np.float32),
        "random": _pool(rand, max_size, np.nanmean)[0].astype(np.float32),
        "binary": _pool(binary, max_size, np.nanmax)[0].astype(np.float32),
        "reordered": _pool(binary[np.ix_(order, order)], max_size, np.nanmax)[0].astype(np.float32),
        # Group of the event at each reordered position (for clicks).
        "group_at": corr.group_of[order].astype(int).tolist(),
    }
    return out


def group_from_click(d: dict, click: dict | None) -> int | None:
    """The group of the event clicked in the reordered panel (or None)."""
    if not click or d.get("empty"):
        return None
    pt = click["points"][0]
    if pt.get("curveNumber") != 3:
        return None
    pos = int(pt["x"]) * d["factor"]
    return d["group_at"][min(pos, len(d["group_at"]) - 1)]


def create_figure(d: dict) -> go.Figure:
    if d.get("empty"):
        fig = go.Figure()
        fig.update_layout(title=f"{d['n_events']} hop events: no correlation matrix", height=300)
        return fig
    unit = "hop event" + (f" (blocks of {d['factor']})" if d["factor"] > 1 else "")
    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.1, vertical_spacing=0.12, subplot_titles=(
        "Pearson correlation C", "random reference (one realisation)",
        f"binarised: C > {d['level']:.3g}", "binarised, reordered by group (click a group)"))
    kw = dict(colorscale="RdBu_r", zmid=0, zmin=-1, zmax=1)
    fig.add_trace(go.Heatmap(z=d["raw"], colorbar=dict(x=0.45, len=0.42, y=0.79, title="C"), **kw), 1, 1)
    fig.add_trace(go.Heatmap(z=d["random"], showscale=False, **kw), 1, 2)
    bw = dict(colorscale=[[0, "white"], [1, "black"]], zmin=0, zmax=1, showscale=False)
    fig.add_trace(go.Heatmap(z=d["binary"], **bw), 2, 1)
    fig.add_trace(go.Heatmap(z=d["reordered"], hovertemplate="event %{x}<br>event %{y}<extra></extra>", **bw), 2, 2)
    for r in (1, 2):
        for c in (1, 2):
            fig.update_xaxes(title_text=unit, row=r, col=c)
            fig.update_yaxes(title_text=unit, autorange="reversed", row=r, col=c)
    fig.update_layout(height=820, margin=dict(l=60, r=20, t=60, b=50), uirevision="heatmaps")
    return fig
