"""Correlation heatmaps of the hop events: raw Pearson C, one random reference
realisation, the binarised matrix, and the binarised matrix reordered by concerted
group (the paper's Fig. 3b) with each concerted group's block outlined and the selected
group in red. Clicking the reordered panel selects a group."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iondiff_core.correlations import event_sigmas, pearson_matrix

MAX_SIZE = 300
#: At most this many group outlines are drawn (the largest groups first).
MAX_OUTLINES = 200


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


def process_data(result, max_size: int = MAX_SIZE, seed: int = 0, selected: int | None = None) -> dict:
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
        "blocks": group_blocks(corr.group_of[order], f),
        "selected": selected,
    }
    return out


def group_blocks(group_at: np.ndarray, factor: int = 1) -> list[tuple[int, float, float]]:
    """(group, first, last) of each concerted group's block in the reordered panel, in
    the panel's (pooled) coordinates; the largest groups first."""
    if not len(group_at):
        return []
    starts = np.r_[0, np.flatnonzero(np.diff(group_at)) + 1]
    ends = np.r_[starts[1:], len(group_at)] - 1
    keep = ends > starts
    blocks = [(int(group_at[a]), a / factor - 0.5, (b + 1) / factor - 0.5) for a, b in zip(starts[keep], ends[keep])]
    return sorted(blocks, key=lambda b: b[1] - b[2])


def group_from_click(result, click: dict | None, max_size: int = MAX_SIZE) -> int | None:
    """The group of the event clicked in the reordered panel (or None)."""
    if not click or not click.get("points"):
        return None
    pt = click["points"][0]
    corr = result.correlations
    h = len(corr.group_of)
    if pt.get("curveNumber") != 3 or h == 0:
        return None
    f = max(1, int(np.ceil(h / max_size)))
    pos = int(pt["x"]) * f
    return int(corr.group_of[corr.order[min(pos, h - 1)]])


def data_table(d: dict) -> dict:
    """The reordered binarised matrix's row/column groups and the panels as long columns."""
    if d.get("empty"):
        return {"n_events": [d["n_events"]]}
    m = len(d["raw"])
    i, j = np.divmod(np.arange(m * m), m)
    return {"row": i, "col": j, "pearson_C": d["raw"].ravel(), "random_reference_C": d["random"].ravel(),
            "binarised": d["binary"].ravel(), "reordered_binarised": d["reordered"].ravel(),
            "reordered_row_group": np.asarray(d["group_at"])[np.minimum(i * d["factor"], d["n_events"] - 1)]}


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
    sel = [blk for blk in d["blocks"] if blk[0] == d.get("selected")]
    # One layout update for every outline (add_shape validates each one: slow for hundreds).
    fig.update_layout(shapes=[
        dict(type="rect", x0=a, x1=b, y0=a, y1=b, xref="x4", yref="y4", line=dict(color=colour, width=width))
        for blocks, colour, width in ((d["blocks"][:MAX_OUTLINES], "#2E91E5", 1.5), (sel, "#d62728", 4))
        for _, a, b in blocks
    ])
    shown = min(len(d["blocks"]), MAX_OUTLINES)
    note = f"{shown} concerted group{'' if shown == 1 else 's'} outlined" + (
        f" (the {MAX_OUTLINES} largest of {len(d['blocks'])})" if len(d["blocks"]) > MAX_OUTLINES else "")
    if d.get("selected") is not None:
        note += f"; group {d['selected']} selected (red)" if sel else f"; group {d['selected']} is an isolated hop"
    fig.add_annotation(text=note, xref="paper", yref="paper", x=1, y=-0.07, showarrow=False, font=dict(size=11))
    for r in (1, 2):
        for c in (1, 2):
            fig.update_xaxes(title_text=unit, row=r, col=c)
            fig.update_yaxes(title_text=unit, autorange="reversed", row=r, col=c)
    fig.update_layout(height=820, margin=dict(l=60, r=20, t=60, b=50), uirevision="heatmaps")
    return fig
