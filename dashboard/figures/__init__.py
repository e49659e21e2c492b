"""One module per view: ``process_data`` (engine result -> small arrays),
``create_figure`` (arrays -> plotly figure with labelled axes and units) and
``data_table`` (the numbers behind the figure, for its CSV export)."""

from __future__ import annotations

import numpy as np

#: The figure toolbar: the camera button saves an SVG at print size; PNG at 300 dpi is a
#: separate export button on the page (``export_config``).
GRAPH_CONFIG = {
    "displaylogo": False,
    "toImageButtonOptions": {"format": "svg", "scale": 1, "filename": "iondiff-figure"},
}

#: Categorical colours of concerted groups (Plotly's Dark24); isolated hops are grey.
PALETTE = (
    "#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86", "#EB663B", "#511CFB",
    "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE", "#862A16", "#A777F1", "#620042", "#1616A7",
    "#DA60CA", "#6C4516", "#0D2A63", "#AF0038",
)
SINGLE = "#9a9a9a"
DIMMED = "#dcdcdc"


def group_colours(group_of: np.ndarray, sizes: np.ndarray, selected: int | None = None) -> np.ndarray:
    """A colour per hop: its concerted group's categorical colour, grey for isolated hops;
    with a selection, every other hop is dimmed and the selected group is black."""
    group_of = np.asarray(group_of, int)
    concerted = sizes[group_of] > 1 if len(group_of) else np.zeros(0, bool)
    # Colour index by rank among concerted groups, so neighbours in time differ.
    ranks = np.cumsum(sizes > 1) - 1
    out = np.where(concerted, np.asarray(PALETTE, object)[ranks[group_of] % len(PALETTE)] if len(group_of) else [], SINGLE)
    out = out.astype(object)
    if selected is not None:
        out[:] = DIMMED
        out[group_of == selected] = "#000000"
    return out


def plural(k: int, word: str) -> str:
    """``1 group``, ``2 groups``."""
    return f"{k} {word}" if k == 1 else f"{k} {word}s"
