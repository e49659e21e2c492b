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
import math
import re
from dataclasses import dataclass
from pathlib import Path
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


# --------------------------------------------------------------------------- what the browser sends
# Every value a callback receives can be forged (a POST to /_dash-update-component), so the
# page's own limits (slider ranges, input min/max) are checked again here, before any work:
# a refusal costs microseconds, never a computation sized by the request.

#: Server-side range of each threshold the page sends; the sliders show the same ranges.
#: The engine's :class:`~iondiff_core.parameters.Parameters` checks what the method allows;
#: these are the narrower ranges the page offers.
SLIDER_BOUNDS = {
    "silhouette_threshold": (0.3, 0.95),
    "r_vib_A": (0.2, 1.5),
    "reference_level": (0.5, 0.999),
    "width_factor": (0.25, 3.0),
    "pair_distance_A": (0.5, 20.0),
    "n_max": (5, 40),
}
#: Timestep (fs per saved frame) and temperature (K) a run may be given.
TIMESTEP_BOUNDS_FS = (1e-3, 1e5)
TEMPERATURE_BOUNDS_K = (1e-3, 1e5)
#: Longest text accepted from the browser (a path, a name, a message), in characters.
MAX_TEXT = 4096
#: Most runs a queue may hold.
MAX_QUEUE = 200
#: Largest concerted-group index a selection may name.
MAX_GROUP = 10**7
COLOR_BY = ("group", "ion")
REFERENCE_MODES = ("mean", "quantile")
#: A queued run's states; the last three are final.
QUEUE_STATES = ("queued", "running", "done", "failed", "cancelled")
_ENTRY_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
#: A species label: an element symbol, or a file's own label (a LAMMPS type "1", "Li1").
_SPECIES = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]{0,15}")


def _shown(value) -> str:
    """A forged value as a message may quote it: short, whatever it was."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"


def bounded_number(value, name: str, lo: float, hi: float, unit: str = "", integer: bool = False):
    """``value`` as a finite number in [lo, hi] (an int if ``integer``), else InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name}: {_shown(value)} is not a number")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InputError(f"{name}: {_shown(value)} is outside the allowed range {lo:g} to {hi:g}{unit}")
    if integer:
        if value != int(value):
            raise InputError(f"{name}: {_shown(value)} is not a whole number")
        return int(value)
    return float(value)


def bounded_text(value, name: str, max_len: int = MAX_TEXT, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        raise InputError(f"{name}: {_shown(value)} is not text")
    if len(value) > max_len or "\x00" in value:
        raise InputError(f"{name}: {_shown(value)} is longer than {max_len} characters")
    return value


def slider_values(sil, rvib, ref_mode, ref_q, width, pair, n_max) -> dict:
    """Engine parameters from the threshold controls' raw values, each checked against
    :data:`SLIDER_BOUNDS` (InputError names the control, its value and the range)."""
    b = SLIDER_BOUNDS
    if ref_mode not in REFERENCE_MODES:
        raise InputError(f"reference level: {_shown(ref_mode)} is not one of {', '.join(REFERENCE_MODES)}")
    return {
        "silhouette_threshold": bounded_number(sil, "silhouette threshold", *b["silhouette_threshold"]),
        "r_vib_A": bounded_number(rvib, "vibration radius r_vib", *b["r_vib_A"], " Å"),
        "reference_level": "mean" if ref_mode == "mean" else bounded_number(ref_q, "reference quantile", *b["reference_level"]),
        "width_factor": bounded_number(width, "smoothing width", *b["width_factor"]),
        "pair_distance_A": None if pair is None or pair == "" else bounded_number(pair, "pair distance", *b["pair_distance_A"], " Å"),
        "n_max": bounded_number(n_max, "n_max", *b["n_max"], integer=True),
    }


def entry_id_value(value) -> str | None:
    """A library entry id as the page holds it (None: no result yet)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _ENTRY_ID.fullmatch(value):
        raise InputError(f"result: {_shown(value)} is not a library entry id")
    return value


def group_value(value) -> int | None:
    """The selected concerted group (None: no selection)."""
    return None if value is None else bounded_number(value, "selected group", 0, MAX_GROUP, integer=True)


def color_by_value(value) -> str:
    if value not in COLOR_BY:
        raise InputError(f"colour by: {_shown(value)} is not one of {', '.join(COLOR_BY)}")
    return value


def run_values(species, timestep, temperature) -> tuple[str | None, float | None, float | None]:
    """The Run button's species, timestep (fs per frame) and temperature (K), checked.
    An empty timestep stays None (the run is then refused with how to give it)."""
    if species is not None and (not isinstance(species, str) or not _SPECIES.fullmatch(species)):
        raise InputError(f"mobile species: {_shown(species)} is not a species label")
    ts = None if timestep in (None, "") else bounded_number(timestep, "timestep", *TIMESTEP_BOUNDS_FS, " fs per frame")
    t = None if temperature in (None, "") else bounded_number(temperature, "temperature", *TEMPERATURE_BOUNDS_K, " K")
    return species, ts, t


def species_values(values) -> list[str]:
    """The species a file holds, as the page keeps them (at most 200 labels)."""
    if values is None:
        return []
    if not isinstance(values, list) or len(values) > 200:
        raise InputError("species: not a list of species labels")
    return [run_values(v, None, None)[0] for v in values]


def queue_value(items) -> list[dict]:
    """The queue as the browser holds it: at most :data:`MAX_QUEUE` rows of known fields."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise InputError(f"queue: {_shown(items)} is not a list of runs")
    if len(items) > MAX_QUEUE:
        raise InputError(f"queue: {len(items)} runs; at most {MAX_QUEUE} may be queued")
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise InputError(f"queue row {i + 1}: {_shown(it)} is not a run")
        state = it.get("state")
        if state not in QUEUE_STATES:
            raise InputError(f"queue row {i + 1}: state {_shown(state)} is not one of {', '.join(QUEUE_STATES)}")
        entry = it.get("entry")
        out.append({
            "path": bounded_text(it.get("path"), f"queue row {i + 1}"),
            "label": bounded_text(it.get("label"), f"queue row {i + 1}"),
            "state": state,
            "progress": bounded_number(it.get("progress") or 0.0, f"queue row {i + 1} progress", 0.0, 1.0),
            "message": bounded_text(it.get("message") or "", f"queue row {i + 1} message"),
            "entry": entry_id_value(entry),
        })
    return out


def picked_paths(values) -> list[str]:
    """Simulations picked in a multi-select (server paths, checked later against the roots)."""
    if values is None:
        return []
    if not isinstance(values, list) or len(values) > MAX_QUEUE:
        raise InputError(f"picked runs: at most {MAX_QUEUE} may be picked at once")
    return [bounded_text(v, "picked run") for v in values]


# --------------------------------------------------------------------------- no server path shown
_UPLOAD_ID = re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{32}(?![0-9A-Za-z])")
#: An absolute path: a slash that starts a token, at least two components.
_ABS_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s/:'\"(),;<>]+/)+[^\s/:'\"(),;<>]*")


def public_message(cfg: Config, text) -> str:
    """``text`` with every server path replaced by the name the user knows: a path inside
    an allowed root by its path relative to it (prefixed by the root's name when there are
    several), a file of an upload or of the data folder by its file name, any other
    absolute path by its last component; upload ids are removed."""
    text = text if isinstance(text, str) else str(text)
    if "/" not in text and not _UPLOAD_ID.search(text):
        return text
    several = len(cfg.roots) > 1
    prefixes = []  # (prefix, replacement): the longest first, so uploads go before the data folder
    for folder, label in ([(cfg.uploads, None), (cfg.data_dir, None)]
                          + [(r, f"{r.name}/" if several else "") for r in cfg.roots]):
        for form in {str(folder), str(Path(folder).resolve())}:
            prefixes.append((form.rstrip("/") + "/", label))
    prefixes.sort(key=lambda p: -len(p[0]))

    def swap(match):
        path = match.group(0)
        for prefix, label in prefixes:
            if path.startswith(prefix):
                rest = path[len(prefix):]
                if label is None:  # data folder: uploads/<id>/name, results/x.json -> the file's name
                    return rest.rstrip("/").rsplit("/", 1)[-1]
                return label + rest
        return path.rstrip("/").rsplit("/", 1)[-1]

    # Known folders first (their names may hold spaces, which end a generic match): a root's
    # prefix becomes its label; a path in the data folder (no spaces below it: names are
    # made safe) becomes its last component.
    data_path = re.compile("(?:" + "|".join(re.escape(p) for p, label in prefixes if label is None) + r")[^\s'\"(),;<>:]*")
    text = data_path.sub(lambda m: m.group(0).rstrip("/.").rsplit("/", 1)[-1], text)
    for prefix, label in prefixes:
        if label is not None:
            text = text.replace(prefix, label)
    for root in cfg.roots:  # a root named alone
        for form in {str(root), str(Path(root).resolve())}:
            text = re.sub(re.escape(form.rstrip("/")) + r"(?![\w/.-])", root.name, text)
    # ... then any other absolute path, and upload ids.
    text = _ABS_PATH.sub(swap, text)
    return _UPLOAD_ID.sub("(upload)", text)


def public_data(cfg: Config, obj):
    """A JSON-like document with :func:`public_message` applied to every string in it."""
    if isinstance(obj, str):
        return public_message(cfg, obj)
    if isinstance(obj, dict):
        return {k: public_data(cfg, v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [public_data(cfg, v) for v in obj]
    return obj


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
    if not click:
        return None
    if not isinstance(click, dict) or not isinstance(click.get("points"), list) or len(click["points"]) > 10_000:
        raise InputError("not a click on a figure")
    if not click["points"]:
        return None
    result = result_of(cfg, entry_id, sliders)
    try:  # a click's structure comes from the browser: anything else than plotly's is refused
        if source == "heatmaps":
            g = correlation_heatmaps.group_from_click(result, click)
        elif source == "timeline":
            g = timeline.group_from_click(result, click)
        else:
            cd = click["points"][0].get("customdata")
            g = int(cd) if cd is not None and not isinstance(cd, list) else None
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, OverflowError):
        raise InputError("not a click on a concerted group") from None
    return None if g is None else group_value(g)


def analyse_views(cfg: Config, entry_id: str, sliders: dict, color_by: str = "group", group=None) -> dict:
    """Every view of the page at once (tests and benchmarks; the page draws them one callback each)."""
    out = {name: view_figure(cfg, name, entry_id, sliders, group, color_by)["figure"] for name in VIEWS}
    s = summary(cfg, entry_id, sliders)
    out.update(table=s["table"], warnings=s["warnings"], status=s["status"])
    return out
