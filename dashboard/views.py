"""What the analyse page draws, view by view (8Knot style: each view is a pure
``process_data`` + ``create_figure`` + ``data_table`` in ``dashboard/figures``).

Each view declares the slider parameters it depends on, so the page gives it its own
callback that a slider move triggers only when it changes that view: n_max redraws the
pdf and the summary, never the 3D paths; no slider redraws the MSD or van Hove. All views
of one slider position share one engine Result (``analysis.result_for`` memoises it).
Pure of Dash callbacks: ``dashboard/pages/analyse.py`` wires them, ``benchmarks/bench_sliders.py``
times them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np

from dashboard import analysis
from dashboard.config import Config
from dashboard.figures import (
    correlation_heatmaps,
    descriptor_table,
    hop_paths_3d,
    msd,
    n_distribution,
    plural,
    timeline,
    van_hove,
)
from dashboard.storage import Library
from iondiff_core.errors import InputError

HOP_FIELDS = ("silhouette_threshold", "r_vib_A")
GROUP_FIELDS = HOP_FIELDS + ("reference_level", "width_factor", "pair_distance_A")
ALL_FIELDS = GROUP_FIELDS + ("n_max",)


@dataclass(frozen=True)
class View:
    """One figure of the page: the slider parameters it depends on, whether it follows the
    group selection, and its pure functions."""

    fields: tuple[str, ...]
    follows_group: bool
    process: Callable  # (result, group, color_by) -> data
    figure: Callable  # data -> go.Figure
    table: Callable  # data -> {column: values}


VIEWS: dict[str, View] = {
    "3d": View(GROUP_FIELDS, True, lambda r, g, c: hop_paths_3d.process_data(r, c, g),
               hop_paths_3d.create_figure, hop_paths_3d.data_table),
    "timeline": View(GROUP_FIELDS, True, lambda r, g, c: timeline.process_data(r, g),
                     timeline.create_figure, timeline.data_table),
    "heatmaps": View(GROUP_FIELDS, True, lambda r, g, c: correlation_heatmaps.process_data(r, selected=g),
                     correlation_heatmaps.create_figure, correlation_heatmaps.data_table),
    "pdf": View(ALL_FIELDS, False,
                lambda r, g, c: n_distribution.process_data(r.distribution, r.mechanisms.counts(), getattr(r, "concertedness", None)),
                n_distribution.create_figure, n_distribution.data_table),
    "msd": View((), False, lambda r, g, c: msd.process_data(r), msd.create_figure, msd.data_table),
    "vanhove": View((), False, lambda r, g, c: van_hove.process_data(r), van_hove.create_figure, van_hove.data_table),
}

# Which engine warnings belong next to which view (the rest go to the summary).
_WARNING_VIEWS = (
    ("pdf of n:", ("pdf",)),
    ("unfinished excursion", ("timeline",)),
    ("took less than one frame", ("timeline",)),
    ("one concerted group holds", ("heatmaps", "pdf")),
    ("correlation matrix is not formed", ("heatmaps",)),
)


def route_warnings(warnings: list[str]) -> dict[str, list[str]]:
    """Engine warnings by the view they concern; ``"summary"`` for the general ones."""
    out: dict[str, list[str]] = {"summary": []}
    for w in warnings:
        views = next((v for key, v in _WARNING_VIEWS if key in w), ("summary",))
        for v in views:
            out.setdefault(v, []).append(w)
    return out


def entry_of(cfg: Config, entry_id: str):
    entry = Library(cfg.library_db).get(entry_id)
    if entry is None:
        raise InputError("this result is no longer in the library")
    return entry


def result_of(cfg: Config, entry_id: str, sliders: dict):
    return analysis.result_for(cfg, entry_of(cfg, entry_id), sliders)


def view_data(cfg: Config, name: str, entry_id: str, sliders: dict, group=None, color_by: str = "group"):
    """``process_data`` of one view and the notes to show beside it."""
    result = result_of(cfg, entry_id, sliders)
    view = VIEWS[name]
    data = view.process(result, group if view.follows_group else None, color_by)
    notes = list(route_warnings(result.warnings).get(name, []))
    if isinstance(data, dict):  # the view's own notes, unless an engine warning already says it
        notes += [n for n in data.get("notes", []) if not any(n.split(": ", 1)[-1] in w for w in notes)]
    return data, notes


def view_figure(cfg: Config, name: str, entry_id: str, sliders: dict, group=None, color_by: str = "group") -> dict:
    """The figure of one view and its notes."""
    data, notes = view_data(cfg, name, entry_id, sliders, group, color_by)
    return {"figure": VIEWS[name].figure(data), "notes": notes}


def view_csv(cfg: Config, name: str, entry_id: str, sliders: dict, group=None, color_by: str = "group") -> str:
    """The numbers behind one view's figure (or the descriptor table) as CSV."""
    import pandas as pd

    if name == "table":
        cols = descriptor_table.data_table(summary(cfg, entry_id, sliders)["table"])
    else:
        cols = VIEWS[name].table(view_data(cfg, name, entry_id, sliders, group, color_by)[0])
    buf = io.StringIO()
    pd.DataFrame({k: np.asarray(v) for k, v in cols.items()}).to_csv(buf, index=False, float_format="%.6g")
    return buf.getvalue()


def concertedness_data(result) -> dict | None:
    """The engine's verdict on whether the hops are concerted beyond chance (None before
    the engine has the null model)."""
    c = getattr(result, "concertedness", None)
    if c is None:
        return None
    get = lambda k: getattr(c, k, None)  # noqa: E731
    ci = get("null_ci95")
    return {"verdict": get("verdict") or "", "message": get("message") or "",
            "observed_fraction": get("observed_fraction"), "null_mean": get("null_mean"),
            "null_ci95": [float(ci[0]), float(ci[1])] if ci is not None else None,
            "excess": get("excess"), "p_value": get("p_value"), "replicas": get("replicas")}


def is_percolated(result) -> bool:
    """The groups percolate: time correlation alone links most hops (n means little)."""
    c = getattr(result, "concertedness", None)
    if c is not None and getattr(c, "verdict", None) == "percolated":
        return True
    if getattr(result.distribution, "percolated", False):
        return True
    return any("one concerted group holds" in w for w in result.warnings)


def summary(cfg: Config, entry_id: str, sliders: dict) -> dict:
    """Status line, concertedness verdict, descriptor table and general warnings."""
    entry = entry_of(cfg, entry_id)
    result = analysis.result_for(cfg, entry, sliders)
    sizes = result.correlations.sizes
    exc = getattr(result, "excursions", None)
    status = (f"{entry.name}: {plural(len(result.hops), 'hop')}, {plural(len(sizes), 'group')}, "
              f"{int((sizes > 1).sum())} concerted")
    if exc is not None and len(exc):
        status += f"; {plural(len(exc), 'unfinished excursion')} left out"
    status += f"; reference level {result.reference_level:.4g}"
    return {
        "status": status,
        "name": entry.name,
        "concertedness": concertedness_data(result),
        "percolated": is_percolated(result),
        "table": descriptor_table.process_data(result.descriptors, result.consistency.summary()),
        "warnings": route_warnings(result.warnings)["summary"],
        "n_groups": int(len(sizes)),
    }


def group_from_click(cfg: Config, entry_id: str, sliders: dict, source: str, click: dict | None) -> int | None:
    """The concerted group a click on the matrix, the timeline or the 3D view points at."""
    if not click or not click.get("points"):
        return None
    result = result_of(cfg, entry_id, sliders)
    if source == "heatmaps":
        return correlation_heatmaps.group_from_click(result, click)
    if source == "timeline":
        return timeline.group_from_click(result, click)
    cd = click["points"][0].get("customdata")
    return int(cd) if cd is not None and not isinstance(cd, list) else None


def analyse_views(cfg: Config, entry_id: str, sliders: dict, color_by: str = "group", group=None) -> dict:
    """Every view of the page at once (tests and benchmarks; the page draws them one callback each)."""
    out = {name: view_figure(cfg, name, entry_id, sliders, group, color_by)["figure"] for name in VIEWS}
    s = summary(cfg, entry_id, sliders)
    out.update(table=s["table"], warnings=s["warnings"], status=s["status"])
    return out
