"""3D hop paths: the cell, the vibration centres, each hop's transit path coloured by
concerted group (categorical; isolated hops grey) or by ion, metastable centres marked.
A selected group is drawn black and thick, every other path dimmed; clicking a path
selects its group."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from dashboard.figures import DIMMED, PALETTE, group_colours, plural

MAX_POINTS = 100_000


def cell_edges(cell: np.ndarray) -> np.ndarray:
    """The 12 edges of the cell as a polyline with NaN breaks (Å)."""
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float) @ cell
    pairs = [(0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 3), (2, 6), (3, 7), (4, 5), (4, 6), (5, 7), (6, 7)]
    seg = [np.vstack([corners[a], corners[b], [np.nan] * 3]) for a, b in pairs]
    return np.vstack(seg)


def process_data(result, color_by: str = "group", highlight_group: int | None = None, max_points: int = MAX_POINTS) -> dict:
    """Paths (NaN-separated, float32, decimated to ``max_points``) with a colour and a
    group per vertex, centres, cell."""
    pos = result.prep.positions_A
    hops = result.hops
    groups = np.asarray(result.correlations.group_of, int)
    sizes = result.correlations.sizes
    lo = np.maximum(hops.start - 1, 0)
    hi = np.minimum(hops.end + 2, pos.shape[0])
    total = int(np.sum(hi - lo))
    step = max(1, int(np.ceil(total / max_points)))
    if color_by == "group":
        colours = group_colours(groups, sizes, highlight_group)
    else:
        colours = np.asarray(PALETTE, object)[np.asarray(hops.ion, int) % len(PALETTE)]
        if highlight_group is not None:
            colours = np.where(groups == highlight_group, "#000000", DIMMED).astype(object)
    blocks, vcol, vgroup, hl = [], [], [], []
    for k in range(len(hops)):
        seg = pos[lo[k] : hi[k] : step, hops.ion[k]]
        if len(seg) and (hi[k] - 1 - lo[k]) % step:
            seg = np.vstack([seg, pos[hi[k] - 1, hops.ion[k]]])  # keep the arrival point
        block = np.vstack([seg, [np.nan] * 3])
        if highlight_group is not None and groups[k] == highlight_group:
            hl.append(block)
            continue
        blocks.append(block)
        vcol.extend([colours[k]] * len(block))
        vgroup.append(np.full(len(block), groups[k], np.int32))
    centres = np.vstack(result.centres.centres) if result.centres.centres else np.zeros((0, 3))
    meta = np.concatenate(result.metastable) if result.metastable else np.zeros(0, bool)
    sel = int(highlight_group) if highlight_group is not None else None
    return {
        "paths": (np.vstack(blocks) if blocks else np.zeros((0, 3))).astype(np.float32),
        "path_color": list(vcol),
        "path_group": (np.concatenate(vgroup) if vgroup else np.zeros(0, np.int32)),
        "highlight": (np.vstack(hl) if hl else np.zeros((0, 3))).astype(np.float32),
        "selected": sel,
        "selected_n": int(sizes[sel]) if sel is not None and sel < len(sizes) else 0,
        "centres": centres[~meta].astype(np.float32),
        "metastable": centres[meta].astype(np.float32),
        "cell": cell_edges(result.prep.trajectory.cells[0]).astype(np.float32),
        "color_by": color_by,
        "decimation": step,
        "n_hops": len(hops),
        "n_concerted_groups": int(np.sum(sizes > 1)),
    }


def data_table(d: dict) -> dict:
    """Every vertex of the drawn paths (Å) with its group; NaN rows separate the hops."""
    p = np.vstack([d["paths"], d["highlight"]])
    g = np.concatenate([d["path_group"], np.full(len(d["highlight"]), -1 if d["selected"] is None else d["selected"])])
    return {"x_A": p[:, 0], "y_A": p[:, 1], "z_A": p[:, 2], "group": g}


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
    label = ("hop paths: colour = concerted group, grey = isolated hop" if d["color_by"] == "group"
             else "hop paths: colour = ion")
    fig.add_trace(go.Scatter3d(
        x=p[:, 0], y=p[:, 1], z=p[:, 2], mode="lines", connectgaps=False, customdata=d["path_group"].tolist(),
        line=dict(color=d["path_color"] or "#888", width=4), name=label,
        hovertemplate="group %{customdata}<br>(%{x:.2f}, %{y:.2f}, %{z:.2f}) Å<extra>click: select the group</extra>",
    ))
    h = d["highlight"]
    if len(h):
        fig.add_trace(go.Scatter3d(x=h[:, 0], y=h[:, 1], z=h[:, 2], mode="lines", connectgaps=False,
                                   customdata=[d["selected"]] * len(h), line=dict(color="black", width=9),
                                   name=f"selected group {d['selected']} (n = {d['selected_n']})"))
    title = f"{plural(d['n_hops'], 'hop')}, {plural(d['n_concerted_groups'], 'concerted group')}"
    title += f" (paths decimated 1:{d['decimation']})" if d["decimation"] > 1 else ""
    fig.update_layout(
        title=title, height=620, margin=dict(l=0, r=0, t=40, b=0), legend=dict(x=0, y=1),
        scene=dict(xaxis_title="x (Å)", yaxis_title="y (Å)", zaxis_title="z (Å)", aspectmode="data"),
        uirevision="3d",
    )
    return fig
