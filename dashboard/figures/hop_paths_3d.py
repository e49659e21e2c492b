"""3D hop paths: the cell, the vibration centres, each hop's transit path coloured by ion
or by concerted group, metastable centres marked."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

MAX_POINTS = 100_000


def cell_edges(cell: np.ndarray) -> np.ndarray:
    """The 12 edges of the cell as a polyline with NaN breaks (Å)."""
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float) @ cell
    pairs = [(0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 3), (2, 6), (3, 7), (4, 5), (4, 6), (5, 7), (6, 7)]
    seg = [np.vstack([corners[a], corners[b], [np.nan] * 3]) for a, b in pairs]
    return np.vstack(seg)


def process_data(result, color_by: str = "ion", highlight_group: int | None = None, max_points: int = MAX_POINTS) -> dict:
    """Paths (NaN-separated, float32, decimated to ``max_points``), centres, cell."""
    pos = result.prep.positions_A
    hops = result.hops
    groups = result.correlations.group_of
    lo = np.maximum(hops.start - 1, 0)
    hi = np.minimum(hops.end + 2, pos.shape[0])
    total = int(np.sum(hi - lo))
    step = max(1, int(np.ceil(total / max_points)))
    paths, colors, hl = [], [], []
    for k in range(len(hops)):
        seg = pos[lo[k] : hi[k] : step, hops.ion[k]]
        if len(seg) and (hi[k] - 1 - lo[k]) % step:
            seg = np.vstack([seg, pos[hi[k] - 1, hops.ion[k]]])  # keep the arrival point
        value = groups[k] if color_by == "group" else hops.ion[k]
        block = np.vstack([seg, [np.nan] * 3])
        (hl if highlight_group is not None and groups[k] == highlight_group else paths).append(block)
        if not (highlight_group is not None and groups[k] == highlight_group):
            colors.append(np.full(len(block), value, float))
    centres = np.vstack(result.centres.centres) if result.centres.centres else np.zeros((0, 3))
    meta = np.concatenate(result.metastable) if result.metastable else np.zeros(0, bool)
    return {
        "paths": (np.vstack(paths) if paths else np.zeros((0, 3))).astype(np.float32),
        "path_color": (np.concatenate(colors) if colors else np.zeros(0)).astype(np.float32),
        "highlight": (np.vstack(hl) if hl else np.zeros((0, 3))).astype(np.float32),
        "centres": centres[~meta].astype(np.float32),
        "metastable": centres[meta].astype(np.float32),
        "cell": cell_edges(result.prep.trajectory.cells[0]).astype(np.float32),
        "color_by": color_by,
        "decimation": step,
        "n_hops": len(hops),
    }


def create_figure(d: dict) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Scatter3d(x=d["cell"][:, 0], y=d["cell"][:, 1], z=d["cell"][:, 2], mode="lines",
                               line=dict(color="#888", width=2), name="cell", hoverinfo="skip"))
    fig.add_trace(go.Scatter3d(x=d["centres"][:, 0], y=d["centres"][:, 1], z=d["centres"][:, 2], mode="markers",
                               marker=dict(size=2.5, color="#1f77b4", opacity=0.6), name="vibration centres"))
    if len(d["metastable"]):
        fig.add_trace(go.Scatter3d(x=d["metastable"][:, 0], y=d["metastable"][:, 1], z=d["metastable"][:, 2],
                                   mode="markers", marker=dict(size=4, color="#d62728", symbol="diamond"),
                                   name="metastable centres"))
    p = d["paths"]
    fig.add_trace(go.Scatter3d(
        x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="lines", connectgaps=False,
        line=dict(color=d["path_color"], colorscale="Turbo", width=4,
                  colorbar=dict(title=d["color_by"], thickness=12) if len(p) else None),
        name=f"hop paths (by {d['color_by']})",
    ))
    h = d["highlight"]
    if len(h):
        fig.add_trace(go.Scatter3d(x=h[:, 0], y=h[:, 1], z=h[:, 2], mode="lines", connectgaps=False,
                                   line=dict(color="black", width=9), name="selected group"))
    title = f"{d['n_hops']} hops" + (f" (paths decimated 1:{d['decimation']})" if d["decimation"] > 1 else "")
    fig.update_layout(
        title=title, height=620, margin=dict(l=0, r=0, t=40, b=0), legend=dict(x=0, y=1),
        scene=dict(xaxis_title="x (Å)", yaxis_title="y (Å)", zaxis_title="z (Å)", aspectmode="data"),
        uirevision="3d",
    )
    return fig
