"""Analyse page: bring a trajectory (upload or server), run the analysis in the background,
explore the figures with the sliders. Layout and callbacks only: what each view draws is
in ``dashboard/views.py`` and ``dashboard/figures/``.

Every view has its own callback whose Inputs are only the controls it depends on
(``views.VIEWS[name].fields``); the other controls are States. A slider move therefore
redraws only the views it changes, and they share one memoised engine Result.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import traceback
from pathlib import Path

import dash_ag_grid as dag
from dash import ClientsideFunction, Input, Output, State, ctx, dcc, html, no_update, set_props
from dash.exceptions import PreventUpdate

from dashboard import analysis, jobs, views
from dashboard.figures import GRAPH_CONFIG
from dashboard.storage import Library
from dashboard.uploads import display_path, inspect_source, list_server_simulations, resolve_server_path, resolve_source
from iondiff_core import report
from iondiff_core.errors import InputError
from iondiff_core.parameters import Parameters

log = logging.getLogger(__name__)
DEFAULTS = Parameters()
METHOD = "/docs/METHOD.md"

#: The sliders: id, label, help, min, max, step, default, marks.
SLIDERS = (
    ("sil-thr", "Silhouette threshold",
     "If the best mean silhouette of an ion's k-means clustering (K >= 2) is below this, the ion has one vibration "
     "centre (K = 1) and no hops. Higher = fewer, clearer centres.",
     *views.SLIDER_BOUNDS["silhouette_threshold"], 0.01, DEFAULTS.silhouette_threshold, {0.5: "0.5", 0.7: "0.7", 0.9: "0.9"}),
    ("r-vib", "Vibration radius r_vib (Å)",
     "A frame within r_vib of a centre vibrates there; outside every centre's radius the ion is in transit. "
     "Larger = shorter transits, fewer hops.",
     *views.SLIDER_BOUNDS["r_vib_A"], 0.05, DEFAULTS.r_vib_A, {0.5: "0.5", 1.0: "1.0", 1.5: "1.5"}),
    ("ref-quantile", "Quantile of the random reference",
     "With 'quantile': two hops are concerted when their correlation exceeds this quantile of the correlations of "
     "randomly placed hops of the same widths. 0.99 = only 1 % of chance pairs pass.",
     *views.SLIDER_BOUNDS["reference_level"], 0.001, 0.95, {0.5: "0.5", 0.9: "0.9", 0.99: "0.99"}),
    ("width-factor", "Smoothing width (x hop duration)",
     "Each hop is smoothed in time by a Gaussian whose FWHM is this times the hop's duration before correlating. "
     "Wider = hops further apart in time count as simultaneous.",
     *views.SLIDER_BOUNDS["width_factor"], 0.05, DEFAULTS.width_factor, {1: "1", 2: "2", 3: "3"}),
    ("n-max", "n_max",
     "Largest group size n shown in the distribution; larger groups are counted in the '> n_max' bar.",
     *views.SLIDER_BOUNDS["n_max"], 1, DEFAULTS.n_max, {10: "10", 20: "20", 40: "40"}),
)
SLIDER_RANGE = {s[0]: (s[3], s[4]) for s in SLIDERS}
SLIDER_STEP = {s[0]: s[5] for s in SLIDERS}
SLIDER_DEFAULT = {s[0]: s[6] for s in SLIDERS}

#: Every control a view can depend on, in the argument order of :func:`_sliders`.
CONTROLS = ("sil-thr", "r-vib", "ref-mode", "ref-quantile", "width-factor", "pair-distance", "n-max")
#: The controls of each engine parameter.
FIELD_CONTROLS = {
    "silhouette_threshold": ("sil-thr",), "r_vib_A": ("r-vib",), "reference_level": ("ref-mode", "ref-quantile"),
    "width_factor": ("width-factor",), "pair_distance_A": ("pair-distance",), "n_max": ("n-max",),
}
#: The percolated-groups action: the spatial criterion and a stricter level.
FIX_PAIR_DISTANCE_A = 4.0
FIX_QUANTILE = 0.99

#: Tab, label, views in it, how to read it, its METHOD.md section.
TABS = (
    ("paths", "3D hop paths", ("3d",),
     "Each line is one hop: the path of an ion from the vibration centre it left to the one it reached. Colour = "
     "concerted group (hops linked by correlated timing); grey = an isolated hop (n = 1). Blue dots are vibration "
     "centres, red diamonds metastable centres (off the reference lattice). Click a path to select its group.",
     "3"),
    ("timeline", "Timeline", ("timeline",),
     "One row per mobile ion, time to the right; shaded while the ion is in transit. A dot marks each hop, coloured "
     "by its concerted group. Hops of one group happen close in time; click a dot to select its group.",
     "4"),
    ("heatmaps", "Correlations", ("heatmaps",),
     "Pearson correlation C between every pair of hop events (smoothed in time), a random reference of the same "
     "widths, C above the reference level (black = concerted pair), and that matrix reordered so each concerted "
     "group is a block (outlined; the selected group in red). Click a block to select the group.",
     "4"),
    ("pdf", "Distribution of n", ("pdf",),
     "The share of groups with n hop events (bars; n > n_max in the grey bar), against what chance alone gives "
     "(orange band: hops placed at random, 95 % of replicas), with the exponential fit A exp(-b n) over n >= 2. "
     "Bars above the band at n >= 2 mean concerted hops beyond chance. Right: the two n = 2 mechanisms.",
     "5"),
    ("transport", "Transport", ("msd", "vanhove"),
     "MSD against lag time: D = slope / 6 over the dashed fit window, with its 95 % interval (tracer: single ions; "
     "full: the centre of mass x N). A D the data cannot support is 'undetermined'. van Hove: G_s(r, t), how far an "
     "ion has moved after t; G_d(r, t), where the other ions are (peaks = sites).",
     "6"),
    ("descriptors", "Descriptors", (),
     "Every descriptor of the run with its unit and 95 % interval where there is one; hover a row for its meaning. "
     "'undetermined' means the data cannot support a number (e.g. a negative collective D).",
     "6"),
)


def _help_label(text, help_text, **kw):
    """A label whose hover text explains the control (and a visible hint that it does)."""
    return html.Label([text, html.Span("?", className="help-mark")], title=help_text, className="help-label", **kw)


def _slider(id_, label, help_text, lo, hi, step, value, marks=None):
    return html.Div([
        html.Div([
            _help_label(label, help_text),
            dcc.Input(id=f"{id_}-input", type="number", min=lo, max=hi, step=step, value=value, debounce=True,
                      className="slider-value"),
        ], className="slider-head"),
        dcc.Slider(id=id_, min=lo, max=hi, step=step, value=value, marks=marks, allow_direct_input=False,
                   updatemode="mouseup"),
    ], className="slider-block")


def _graph(id_):
    return dcc.Loading(dcc.Graph(id=id_, config=GRAPH_CONFIG), type="dot", delay_show=300)


def _export_row(view):
    return html.Div([
        html.Span("Export:", className="muted"),
        html.Button("SVG", id=f"svg-{view}", className="secondary small", title="the figure as a vector SVG"),
        html.Button("PNG 300 dpi", id=f"png-{view}", className="secondary small",
                    title="the figure as a PNG at 300 dpi (3.125 x its on-screen pixels)"),
        html.Button("CSV", id=f"csv-{view}", className="secondary small", title="the numbers behind the figure"),
        dcc.Download(id=f"dl-csv-{view}"),
        dcc.Store(id=f"exported-{view}"),
    ], className="row export-row")


def _tab(value, label, view_names, how, section):
    children = [html.Details([
        html.Summary("How to read this"),
        html.P([how, " The definitions: ", html.A(f"METHOD.md, section {section}", href=METHOD, target="_blank"), "."]),
    ], className="how-to-read", id=f"how-{value}")]
    for v in view_names:
        children += [html.Div(id=f"notes-{v}", className="view-notes"), _export_row(v), _graph(f"graph-{v}")]
    if value == "descriptors":
        children += [
            html.Div([html.Button("CSV", id="csv-table", className="secondary small", title="the descriptor table"),
                      dcc.Download(id="dl-csv-table")], className="row export-row"),
            dag.AgGrid(
                id="descriptor-table", rowData=[], columnSize="responsiveSizeToFit",
                columnDefs=[
                    {"field": "descriptor", "tooltipField": "help", "flex": 3,
                     "headerTooltip": "hover a descriptor for its meaning"},
                    {"field": "value", "flex": 2, "headerTooltip": "'undetermined' when the data cannot support a number"},
                    {"field": "interval", "headerName": "95 % interval", "flex": 2,
                     "headerTooltip": "the engine's 95 % interval, where it gives one"},
                    {"field": "unit", "flex": 1, "headerTooltip": "dimensionless = a pure number; count = a number of things"},
                ],
                dashGridOptions={"domLayout": "autoHeight", "tooltipShowDelay": 200, "animateRows": False},
                style={"width": "100%"}),
        ]
    return dcc.Tab(label=label, value=value, children=children)


#: The Dash Pages entry (registered by ``create_app``).
PAGE = {"path": "/", "name": "Analyse", "title": "IonDiff: analyse"}


def layout(entry: str | None = None, **_):
    """The page for ``/`` (``/?entry=<id>`` opens a library entry)."""
    from dashboard.app_factory import page_config

    cfg = page_config()
    entry_id = entry or None
    sims = list_server_simulations(cfg.roots) if cfg.roots else []
    source = html.Details([
        html.Summary(html.H3("1. Trajectory", style={"display": "inline"})),
        _help_label("Trajectory file",
                    "An XDATCAR (plain, .gz, .xz, .bz2), extxyz, LAMMPS dump or vasprun.xml. Choose it with its INCAR "
                    "(and POSCAR) in any order, or several files at once."),
        _file_input("trajectory-file"),
        _help_label("INCAR (optional, before or after the trajectory)",
                    "Gives the timestep (POTIM x NBLOCK) and temperature (TEBEG); they appear below, editable."),
        _file_input("incar-file"),
        html.Div(dcc.Checklist(id="allow-truncated", value=[], options=[
            {"label": " analyse the complete frames of a damaged compressed file", "value": "yes"}]),
            title="A .gz/.xz/.bz2 that ends early (an incomplete copy) is refused; ticked before choosing it, its "
                  "complete frames are analysed and the run is flagged 'partial' in the library."),
        html.Progress(id="upload-progress", value="0", max="1"),
        html.Div(id="upload-status", className="muted"),
        _help_label("... or pick one on the server" + ("" if cfg.roots else " (no folders allowed on this server)"),
                    "Simulations found in the folders this deployment allows (IONDIFF_ROOTS), shown relative to them."),
        dcc.Dropdown(id="server-sim", options=sims, placeholder="simulations found", disabled=not cfg.roots),
        dcc.Input(id="server-path", type="text", placeholder="or a path inside the allowed folders", disabled=not cfg.roots),
        html.Button("Use this file", id="server-use", className="secondary", disabled=not cfg.roots, style={"marginTop": "0.4rem"}),
        html.Div(id="source-label", className="muted"),
    ], open=not entry_id, id="source-details", className="panel")
    run = html.Details([
        html.Summary(html.H3("2. Analysis", style={"display": "inline"})),
        _help_label("Mobile species", "The species whose hops are analysed (read from the trajectory)."),
        dcc.Dropdown(id="species", options=[], placeholder="species of the trajectory"),
        html.Div([
            html.Div([_help_label("Timestep (fs per frame)", "Time between saved frames: POTIM x NBLOCK of the INCAR."),
                      dcc.Input(id="timestep", type="number", min=0, placeholder="from INCAR")]),
            html.Div([_help_label("Temperature (K)", "TEBEG of the INCAR; used for the conductivity and the library."),
                      dcc.Input(id="temperature", type="number", min=0, placeholder="from INCAR")]),
        ], className="grid2"),
        html.Div([html.Button("Run analysis", id="run-button"), html.Button("Cancel", id="cancel-button", className="secondary", disabled=True)],
                 className="row", style={"marginTop": "0.6rem"}),
        html.Progress(id="progress-bar", value="0", max="1", style={"marginTop": "0.5rem"}),
        html.Div(id="progress-text", className="muted"),
        html.Div(id="run-error"),
    ], open=True, id="run-details", className="panel")
    queue = html.Details([
        html.Summary(html.H3("Queue of server runs", style={"display": "inline"})),
        _help_label("Runs to analyse one after another",
                    "Pick several simulations on the server: each is analysed in turn in the background with its own "
                    "INCAR's timestep and temperature and its default mobile species; the queue stays after a reload."),
        dcc.Dropdown(id="queue-sims", options=sims, multi=True, placeholder="simulations to queue", disabled=not cfg.roots),
        html.Div([
            html.Button("Add to queue", id="queue-add", className="secondary", disabled=not cfg.roots),
            html.Button("Run queue", id="queue-run", disabled=not cfg.roots),
            html.Button("Cancel", id="queue-cancel", className="secondary", disabled=True),
            html.Button("Clear finished", id="queue-clear", className="secondary small"),
        ], className="row", style={"marginTop": "0.4rem"}),
        html.Div(id="queue-rows"),
    ], open=True, id="queue-details", className="panel")
    sliders = html.Div([
        html.Div([html.H3("3. Thresholds", title="These rerun only the cheap stages: the clustering is never redone."),
                  html.Button("Reset", id="reset-sliders", className="secondary small", title="every threshold back to its default")],
                 className="row spread"),
        *[_slider(*s) for s in SLIDERS[:2]],
        _help_label("Reference level",
                    "Correlation above which two hops are concerted: the mean of random hops' correlations (the paper), or "
                    "a quantile of them (stricter)."),
        dcc.RadioItems(id="ref-mode", options=[{"label": " mean of random (paper)", "value": "mean"},
                                               {"label": " quantile", "value": "quantile"}], value="mean", inline=True),
        _slider(*SLIDERS[2]),
        *[_slider(*s) for s in SLIDERS[3:]],
        html.Div([
            _help_label("Pair distance (Å)",
                        "Spatial criterion: a correlated pair is concerted only if the two hops come within this distance. "
                        "Empty = the paper's purely temporal criterion. Use it when the groups percolate."),
            dcc.Input(id="pair-distance", type="number", min=views.SLIDER_BOUNDS["pair_distance_A"][0],
                      max=views.SLIDER_BOUNDS["pair_distance_A"][1], step=0.1, value=None, debounce=True,
                      placeholder="off (temporal only)", className="slider-value"),
        ], className="slider-head"),
        _help_label("Colour hop paths by", "Concerted group (categorical colours, isolated hops grey) or ion."),
        dcc.RadioItems(id="color-by", options=[{"label": " concerted group", "value": "group"}, {"label": " ion", "value": "ion"}],
                       value="group", inline=True),
        html.Div([html.Button("Clear group selection", id="clear-group", className="secondary small",
                              title="select a group by clicking the matrix, the timeline or the 3D view")],
                 style={"marginTop": "0.4rem"}),
        html.Div([html.Button("Result JSON", id="dl-json-btn", className="secondary small", title="the whole result at these thresholds"),
                  html.Button("Hops CSV", id="dl-csv-btn", className="secondary small", title="one row per hop")],
                 className="row", style={"marginTop": "0.4rem"}),
        dcc.Download(id="dl-json"), dcc.Download(id="dl-csv"),
    ], className="panel")
    tabs = dcc.Tabs(id="tabs", value="paths", children=[_tab(*t) for t in TABS])
    verdict = html.Div([
        html.Div(id="verdict-card"),
        html.Button(f"Apply the spatial criterion ({FIX_PAIR_DISTANCE_A:g} Å) and quantile {FIX_QUANTILE}",
                    id="fix-percolation", style={"display": "none"},
                    title="Groups that percolate in time are split by requiring hops to be close in space as well, "
                          "and a stricter reference level."),
    ], id="verdict-box")
    return html.Div([
        dcc.Store(id="source-store"),
        dcc.Store(id="entry-store", data=entry_id),
        dcc.Store(id="group-store"),
        # The queue (a list of :func:`_queue_item`) lives in the browser tab's session: it survives a reload.
        dcc.Store(id="queue-store", storage_type="session", data=[]),
        dcc.Store(id="queue-progress"),
        html.Div([source, run, sliders, queue], className="sidebar", id="sidebar"),
        html.Div([html.Div(id="view-status"), verdict, html.Div(id="warnings"), tabs], className="main panel"),
    ], className="page")


def _file_input(id_):
    # Dash has no plain <input type=file>: assets/upload.js puts one in this holder and
    # streams the chosen file to /upload.
    return html.Div(id=f"{id_}-holder", className="file-holder", **{"data-input-id": id_})


def _alert(message, kind="error"):
    return html.Div(message, className=f"alert-{kind}")


def _failure_reason(cfg, exc) -> str:
    """What a job that failed outside its own error handling says: died, over its time
    limit, refused by a busy server, or a Celery worker that kept dying."""
    msg = str(exc).split("background callback:", 1)[-1].split("\n", 1)[0].strip() or type(exc).__name__
    log.error("background job failed: %s", msg)
    return views.public_message(cfg, msg)


def _job_failed(cfg, exc):
    """The Run job failed outside the callback: the reason on the page, the progress line reset."""
    reason = _failure_reason(cfg, exc)
    set_props("progress-text", {"children": "failed"})
    set_props("progress-bar", {"value": "0"})
    return None, _alert(f"the analysis failed: {reason}")


def _queue_failed(cfg, reason: str, last) -> list[dict] | dict:
    """The queue's job ended without a result (died, time limit): the run it was on is
    marked failed with the reason; the runs after it stay queued (Run queue goes on).
    ``last``: the job's last progress value (rows, items), None if it reported none."""
    try:
        items = views.queue_value(last[1])
    except (InputError, IndexError, TypeError):
        return {"_dash_no_update": "_dash_no_update"}  # Dash's "no update": the rows stay as shown
    reason = views.public_message(cfg, reason)
    return [{**it, "state": "failed", "progress": 0.0, "message": f"the analysis failed: {reason}"}
            if it["state"] == "running" else it for it in items]


def _sliders(sil, rvib, ref_mode, ref_q, width, pair, n_max) -> dict:
    """Engine parameters from the controls' raw values (in :data:`CONTROLS` order), each
    checked on the server (:func:`dashboard.views.slider_values`): InputError if out of range."""
    return views.slider_values(sil, rvib, ref_mode, ref_q, width, pair, n_max)


def _deps(fields) -> list:
    """The controls as dependencies: Input for those ``fields`` use, State for the rest."""
    used = {c for f in fields for c in FIELD_CONTROLS[f]}
    return [(Input if c in used else State)(c, "value") for c in CONTROLS]


def _source_path(cfg, source: dict) -> Path:
    """The checked path of a source (see :func:`dashboard.uploads.resolve_source`)."""
    return resolve_source(cfg, source)


def _analyse(cfg, source: dict, species, timestep, temperature, progress) -> str:
    """Analyse a chosen source (upload or server run) and store it; returns the entry id.
    The Run button and the queue both come here."""
    if not isinstance(source, dict) or source.get("kind") not in ("upload", "server"):
        raise InputError("choose a trajectory first (upload one or pick one on the server)")
    species, timestep, temperature = views.run_values(species, timestep, temperature)
    name = views.bounded_text(source.get("name"), "run name", 300, allow_none=True)
    if not timestep:
        raise InputError("the timestep is unknown: type the time between saved frames in fs (POTIM x NBLOCK), "
                         "or add the run's INCAR; hop durations, D and the MSD need it")
    path = _source_path(cfg, source)
    poscar = path.parent / "POSCAR" if source.get("poscar") else None
    params = Parameters(species=species, reference_structure=str(poscar) if poscar and poscar.is_file() else None)
    return analysis.run_analysis(cfg, path, params, timestep or None, temperature or None, progress=progress,
                                 name=name, allow_truncated=bool(source.get("damaged")))


def _default_species(species: list[str]) -> str | None:
    return next((s for s in ("Li", "Na", "K", "Ag", "Cu", "F", "Cl", "Br", "I", "O", "H") if s in species),
                species[0] if species else None)


QUEUE_STATES = views.QUEUE_STATES


def _queue_item(path: str, label: str) -> dict:
    return {"path": path, "label": label, "state": "queued", "progress": 0.0, "message": "", "entry": None}


def _queue_row(i: int, item: dict):
    """One queued run: its name, state, progress bar and message (the result's link when done)."""
    state = item["state"]
    detail = item.get("message") or ""
    if state == "done" and item.get("entry"):
        detail = [detail + " " if detail else "", dcc.Link("open result", href=f"/?entry={item['entry']}", id=f"queue-open-{i}")]
    return html.Div([
        html.Div([html.B(item["label"]), html.Span(state, className=f"queue-state queue-state-{state}", id=f"queue-state-{i}")],
                 className="row spread"),
        html.Progress(value=str(item.get("progress") or 0), max="1", id=f"queue-bar-{i}"),
        html.Div(detail, className="muted", id=f"queue-msg-{i}"),
    ], className=f"queue-row queue-{state}", id=f"queue-row-{i}")


def _queue_rows(items: list[dict] | None) -> list:
    if not items:
        return [html.Div("empty: pick runs above and add them", className="muted")]
    return [_queue_row(i, it) for i, it in enumerate(items)]


def _run_queue(cfg, items: list[dict], report) -> list[dict]:
    """Analyse every queued (or interrupted) run in turn; ``report(items)`` after each
    change. A run that fails is marked with its reason and the next one starts."""
    items = [dict(it) for it in items]
    for it in items:
        if it["state"] not in ("queued", "running"):
            continue
        it.update(state="running", progress=0.0, message="starting")
        jobs.restart_clock()  # the time limit counts per run
        report(items)
        try:
            path = resolve_server_path(it["path"], cfg.roots)
            info = inspect_source(path)
            source = {"kind": "server", "path": str(path), **info}

            def step(f, m, it=it):
                it.update(progress=round(f, 4), message=views.public_message(cfg, m))
                report(items)

            it["entry"] = _analyse(cfg, source, _default_species(info.get("species") or []), info.get("timestep_fs"),
                                   info.get("temperature_K"), step)
            it.update(state="done", progress=1.0, message=f"done as \u201c{info['name']}\u201d")
        except InputError as exc:
            it.update(state="failed", progress=0.0, message=views.public_message(cfg, str(exc)))
        except Exception as exc:  # noqa: BLE001 - the row shows the reason, the log the traceback
            log.error("queued analysis failed: %s", traceback.format_exc())
            it.update(state="failed", progress=0.0,
                      message=views.public_message(cfg, f"the analysis failed: {type(exc).__name__}: {exc}"))
        report(items)
    return items


def _key(*parts) -> str:
    return "view:" + hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:40]


def register(app, cfg, cache):
    def alert(text, kind="error"):
        """A message on the page, with no server path in it."""
        return _alert(views.public_message(cfg, text), kind)

    def notes(texts):
        return [alert(n, "warning") for n in texts]

    def cached(parts, compute):
        """A view's output from the shared disk cache (a repeated slider position), else computed."""
        key = _key(*parts)
        hit = cache.get(key)
        if hit is None:
            hit = compute()
            cache.set(key, hit)
        return hit

    # ------------------------------------------------------------------ source
    @app.callback(
        Output("source-store", "data", allow_duplicate=True), Output("source-label", "children"),
        Input("server-use", "n_clicks"), Input("server-sim", "value"), State("server-path", "value"),
        State("allow-truncated", "value"),
        prevent_initial_call=True,
    )
    def use_server_file(_, picked, typed, allow_truncated):
        try:
            path = resolve_server_path((typed if ctx.triggered_id == "server-use" else None) or picked or "", cfg.roots)
            shown = display_path(path, cfg.roots)  # the page's source holds no server path
            info = inspect_source(path, allow_truncated=bool(allow_truncated))
            read = f"; INCAR: {info['timestep_fs']} fs per frame" if info["timestep_fs"] else "; no timestep found: type it"
            if info.get("damaged"):
                read += f"; DAMAGED: {info['damaged']}: only its complete frames will be analysed (flagged in the library)"
            return ({"kind": "server", "path": shown, **info}, f"server file: {shown} as \u201c{info['name']}\u201d{read}")
        except InputError as exc:
            msg = views.public_message(cfg, exc)
            return {"kind": "error", "error": msg}, _alert(msg)

    @app.callback(
        Output("species", "options"), Output("species", "value"), Output("run-error", "children", allow_duplicate=True),
        Output("entry-store", "data", allow_duplicate=True), Output("progress-bar", "value", allow_duplicate=True),
        Output("progress-text", "children", allow_duplicate=True),
        Output("timestep", "value", allow_duplicate=True), Output("temperature", "value", allow_duplicate=True),
        Input("source-store", "data"), prevent_initial_call=True,
    )
    def species_choices(source):
        """A new file: its species, timestep and temperature as read (editable), and the
        previous file's results cleared."""
        if not source:
            raise PreventUpdate
        if not isinstance(source, dict):
            return [], None, alert("not a trajectory choice"), None, "0", "", None, None
        if source.get("kind") == "error":
            return [], None, alert(str(source.get("error"))[: views.MAX_TEXT]), None, "0", "", None, None
        try:
            species = views.species_values(source.get("species"))
            _, timestep, temperature = views.run_values(None, source.get("timestep_fs"), source.get("temperature_K"))
        except InputError as exc:
            return [], None, alert(str(exc)), None, "0", "", None, None
        default = _default_species(species)
        return ([{"label": s, "value": s} for s in species], default, None, None, "0", "", timestep, temperature)

    @app.callback(
        Output("species", "options", allow_duplicate=True), Output("species", "value", allow_duplicate=True),
        Output("timestep", "value"), Output("temperature", "value"), Output("source-label", "children", allow_duplicate=True),
        Output("source-details", "open"), Output("run-details", "open"),
        Input("entry-store", "data"), prevent_initial_call="initial_duplicate",
    )
    def show_entry(entry_id):
        """An entry (just run, or opened from the library): what it was analysed from."""
        try:
            entry_id = views.entry_id_value(entry_id)
        except InputError as exc:
            return no_update, no_update, no_update, no_update, alert(str(exc)), True, True
        if not entry_id:
            return no_update, no_update, no_update, no_update, no_update, True, True
        entry = Library(cfg.library_db).get(entry_id)
        if entry is None:
            return no_update, no_update, no_update, no_update, alert("this result is no longer in the library"), True, True
        Library(cfg.library_db).opened(entry.id)  # retention and the quota keep the recently opened
        p = entry.params
        # The result is on screen: fold the input panels so the thresholds and the figures share the screen.
        return ([{"label": entry.species, "value": entry.species}], entry.species, p.get("timestep_fs"),
                entry.temperature_K, f"showing: {entry.name} (in the library)", False, False)

    # ------------------------------------------------------------------ run
    @app.callback(
        Output("entry-store", "data"), Output("run-error", "children"),
        Input("run-button", "n_clicks"),
        State("source-store", "data"), State("species", "value"), State("timestep", "value"), State("temperature", "value"),
        background=True,
        running=[(Output("run-button", "disabled"), True, False), (Output("cancel-button", "disabled"), False, True)],
        progress=[Output("progress-bar", "value"), Output("progress-text", "children")],
        cancel=[Input("cancel-button", "n_clicks"), Input("source-store", "data")],
        prevent_initial_call=True,
        on_error=functools.partial(_job_failed, cfg),
    )
    @jobs.queued_progress(lambda position, *_: ("0", f"queued (position {position}): {cfg.max_jobs} "
                                                     f"{'analysis runs' if cfg.max_jobs == 1 else 'analyses run'} at once on this server"))
    def run_job(set_progress, _, source, species, timestep, temperature):
        try:
            set_progress(("0", "starting"))
            entry = _analyse(cfg, source, species, timestep, temperature,
                             lambda f, m: set_progress((str(round(f, 4)), views.public_message(cfg, m))))
            set_progress(("1", "done"))
            return entry, None
        except InputError as exc:
            set_progress(("0", "failed"))
            return None, alert(str(exc))
        except Exception as exc:  # noqa: BLE001 - the page shows a message, the log the traceback
            log.error("analysis failed: %s", traceback.format_exc())
            set_progress(("0", "failed"))
            return None, alert(f"the analysis failed: {type(exc).__name__}: {exc}")

    @app.callback(
        Output("progress-text", "children", allow_duplicate=True), Output("progress-bar", "value", allow_duplicate=True),
        Input("cancel-button", "n_clicks"), prevent_initial_call=True,
    )
    def cancelled(_):
        return html.Span("cancelled: nothing was saved", className="cancelled"), "0"

    # ------------------------------------------------------------------ queue
    @app.callback(
        Output("queue-store", "data", allow_duplicate=True), Output("queue-sims", "value"),
        Input("queue-add", "n_clicks"), Input("queue-clear", "n_clicks"), Input("queue-cancel", "n_clicks"),
        State("queue-sims", "value"), State("queue-store", "data"), State("queue-progress", "data"),
        prevent_initial_call=True,
    )
    def edit_queue(_, __, ___, picked, items, live):
        """Add the picked runs (once each), clear the finished ones, or cancel the rest."""
        try:
            picked, items, live = views.picked_paths(picked), views.queue_value(items), views.queue_value(live)
            if ctx.triggered_id == "queue-add" and len(items) + len(picked) > views.MAX_QUEUE:
                raise InputError(f"queue: at most {views.MAX_QUEUE} runs may be queued")
        except InputError as exc:
            set_props("queue-rows", {"children": [alert(str(exc))]})
            return no_update, no_update
        if ctx.triggered_id == "queue-add":
            have = {it["path"] for it in items if it["state"] in ("queued", "running")}
            labels = {o["value"]: o["label"] for o in list_server_simulations(cfg.roots)} if cfg.roots else {}
            items += [_queue_item(p, labels.get(p, p)) for p in picked or [] if p not in have]
            return items, []
        if ctx.triggered_id == "queue-clear":
            return [it for it in items if it["state"] in ("queued", "running")], no_update
        # Cancel: the job is stopped; what it finished stays done, the rest is cancelled.
        same = live and [it["path"] for it in live] == [it["path"] for it in items]
        current = live if same else items
        return [{**it, "state": "cancelled", "progress": 0.0, "message": "cancelled: nothing was saved"}
                if it["state"] in ("queued", "running") else it for it in current], no_update

    def waiting_rows(position, _, items):
        """The rows while the queue's job waits for a free slot."""
        try:
            items = views.queue_value(items)
        except InputError:
            return no_update, no_update
        first = next((i for i, it in enumerate(items) if it["state"] in ("queued", "running")), None)
        if first is not None:
            items[first] = {**items[first], "message": f"waiting for a free slot (position {position}; "
                                                      f"{cfg.max_jobs} at once on this server)"}
        return _queue_rows(items), items

    @app.callback(
        Output("queue-store", "data"),
        Input("queue-run", "n_clicks"), State("queue-store", "data"),
        background=True,
        running=[(Output("queue-run", "disabled"), True, not cfg.roots), (Output("queue-cancel", "disabled"), False, True),
                 (Output("queue-add", "disabled"), True, not cfg.roots)],
        # The rows themselves (progress updates trigger no other callback) and their data, for Cancel.
        progress=[Output("queue-rows", "children"), Output("queue-progress", "data")],
        cancel=[Input("queue-cancel", "n_clicks")],
        interval=300,  # ms between progress polls: runs of a few seconds still show their stages
        prevent_initial_call=True,
        on_error=lambda exc: (log.error("queue job failed: %s", exc), no_update)[1],
    )
    @jobs.queued_progress(waiting_rows)
    @jobs.failed_result(functools.partial(_queue_failed, cfg))
    def run_queue(set_progress, _, items):
        """The queue's job: one run after another, each row's state and progress reported."""
        try:
            items = views.queue_value(items)
        except InputError as exc:
            set_progress(([alert(str(exc))], no_update))
            return no_update
        return _run_queue(cfg, items, lambda now: set_progress((_queue_rows(now), now)))

    @app.callback(Output("queue-rows", "children"), Input("queue-store", "data"))
    def show_queue(items):
        try:
            return _queue_rows(views.queue_value(items))
        except InputError as exc:
            return [alert(str(exc))]

    # ------------------------------------------------------------------ controls
    @app.callback(
        *[Output(s[0], "value") for s in SLIDERS], *[Output(f"{s[0]}-input", "value") for s in SLIDERS],
        Output("ref-mode", "value"), Output("pair-distance", "value"),
        *[Input(s[0], "value") for s in SLIDERS], *[Input(f"{s[0]}-input", "value") for s in SLIDERS],
        Input("reset-sliders", "n_clicks"), Input("fix-percolation", "n_clicks"),
        prevent_initial_call=True,
    )
    def sync_controls(*values):
        """Slider and number box show the same value; Reset; the percolation action."""
        k = len(SLIDERS)
        slider_vals, typed = values[:k], values[k:2 * k]
        ids = [s[0] for s in SLIDERS]
        trig = ctx.triggered_id
        none = [no_update] * k
        if trig == "reset-sliders":
            d = [SLIDER_DEFAULT[i] for i in ids]
            return (*d, *d, "mean", None)
        if trig == "fix-percolation":
            out = [no_update] * k
            out[ids.index("ref-quantile")] = FIX_QUANTILE
            return (*out, *out, "quantile", FIX_PAIR_DISTANCE_A)
        if trig in ids:  # the slider moved: show its value in the box
            out = list(none)
            out[ids.index(trig)] = slider_vals[ids.index(trig)]
            return (*none, *out, no_update, no_update)
        if isinstance(trig, str) and trig.endswith("-input"):
            i = ids.index(trig[: -len("-input")])
            v = typed[i]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise PreventUpdate  # empty, or not a number (the browser sends only numbers)
            lo, hi = SLIDER_RANGE[ids[i]]
            step = SLIDER_STEP[ids[i]]
            # Clamped to the slider's range and snapped to its step, so box and slider agree.
            v = min(max(lo + round((float(v) - lo) / step) * step, lo), hi)
            v = int(round(v)) if ids[i] == "n-max" else round(v, 6)
            out = list(none)
            out[i] = v
            return (*out, *out, no_update, no_update)
        raise PreventUpdate

    @app.callback(Output("ref-quantile", "disabled"), Output("ref-quantile-input", "disabled"), Input("ref-mode", "value"))
    def quantile_enabled(mode):
        return mode == "mean", mode == "mean"

    # ------------------------------------------------------------------ views
    def view_callback(name: str) -> None:
        view = views.VIEWS[name]
        extra = ([Input("group-store", "data")] if view.follows_group else []) + ([Input("color-by", "value")] if name == "3d" else [])

        @app.callback(
            Output(f"graph-{name}", "figure"), Output(f"notes-{name}", "children"),
            Input("entry-store", "data"), *_deps(view.fields), *extra,
        )
        def draw(entry_id, *args):
            try:  # every value checked before any work: a request can be forged
                entry_id = views.entry_id_value(entry_id)
                sliders = _sliders(*args[: len(CONTROLS)])
                group = views.group_value(args[len(CONTROLS)]) if view.follows_group else None
                color_by = views.color_by_value(args[-1]) if name == "3d" else "group"
            except InputError as exc:
                return no_update, alert(str(exc))
            if not entry_id:
                return {"data": [], "layout": {"height": 80, "title": {"text": "run an analysis to see this view"}}}, None
            relevant = {f: sliders[f] for f in view.fields}
            try:
                out = cached((entry_id, name, relevant, group, color_by),
                             lambda: views.view_figure(cfg, name, entry_id, sliders, group, color_by))
            except InputError as exc:
                return no_update, alert(str(exc))
            except Exception as exc:  # noqa: BLE001
                log.error("view %s failed: %s", name, traceback.format_exc())
                return no_update, alert(f"could not draw this view: {type(exc).__name__}: {exc}")
            return out["figure"], notes(out["notes"])

    for name in views.VIEWS:
        view_callback(name)

    @app.callback(
        Output("view-status", "children"), Output("verdict-card", "children"), Output("fix-percolation", "style"),
        Output("warnings", "children"), Output("descriptor-table", "rowData"),
        Input("entry-store", "data"), *_deps(views.ALL_FIELDS), Input("group-store", "data"),
    )
    def draw_summary(entry_id, *args):
        hidden = {"display": "none"}
        try:
            entry_id = views.entry_id_value(entry_id)
            sliders = _sliders(*args[: len(CONTROLS)])
            group = views.group_value(args[-1])
            if not entry_id:
                return html.Div("no result yet: choose a trajectory and run the analysis", id="view-summary"), None, hidden, None, []
            s = views.summary(cfg, entry_id, sliders)
        except InputError as exc:
            return html.Div(alert(str(exc)), id="view-summary"), None, hidden, None, []
        except Exception as exc:  # noqa: BLE001
            log.error("summary failed: %s", traceback.format_exc())
            return html.Div(alert(f"could not draw the results: {type(exc).__name__}: {exc}"), id="view-summary"), None, hidden, None, []
        sel = f" - group {group} selected" if group is not None else ""
        return (html.Div(views.public_message(cfg, s["status"]) + sel, id="view-summary"),
                verdict_card(s["concertedness"], s["percolated"]),
                {"display": "inline-block"} if s["percolated"] else hidden, notes(s["warnings"]), s["table"])

    # ------------------------------------------------------------------ group selection
    @app.callback(
        Output("group-store", "data"),
        Input("graph-heatmaps", "clickData"), Input("graph-timeline", "clickData"), Input("graph-3d", "clickData"),
        Input("clear-group", "n_clicks"), Input("entry-store", "data"),
        *[State(c, "value") for c in CONTROLS],
        prevent_initial_call=True,
    )
    def select_group(c_heat, c_time, c_3d, clear, entry_id, *controls):
        trig = ctx.triggered_id
        try:
            entry_id = views.entry_id_value(entry_id)
            if trig in ("clear-group", "entry-store") or not entry_id:
                return None
            click = {"graph-heatmaps": c_heat, "graph-timeline": c_time, "graph-3d": c_3d}[trig]
            g = views.group_from_click(cfg, entry_id, _sliders(*controls), trig.removeprefix("graph-"), click)
        except InputError as exc:
            set_props("warnings", {"children": [alert(str(exc))]})
            return no_update
        if g is None:
            raise PreventUpdate
        return g

    # ------------------------------------------------------------------ downloads
    def _current_result(entry_id, sliders):
        entry = Library(cfg.library_db).get(entry_id)
        if entry is None:
            raise PreventUpdate
        return entry, analysis.result_for(cfg, entry, sliders)

    def _download(target: str, button: str, content, suffix: str) -> None:
        """A download button: the current entry's result at the current slider values."""

        @app.callback(
            Output(target, "data"), Input(button, "n_clicks"), State("entry-store", "data"), *[State(c, "value") for c in CONTROLS],
            prevent_initial_call=True,
        )
        def download(_, entry_id, *sl):
            try:
                entry_id = views.entry_id_value(entry_id)
                if not entry_id:
                    raise PreventUpdate
                entry, result = _current_result(entry_id, _sliders(*sl))
            except InputError as exc:
                set_props("warnings", {"children": [alert(str(exc))]})
                return no_update
            return {"content": content(entry, result), "filename": views.public_message(cfg, f"{entry.name}{suffix}")}

    def result_json(entry, result) -> str:
        """The result as stored in the library (named as the run, not by its path), with no
        server path in any of its strings."""
        doc = result.to_dict()
        doc["input"]["source"] = entry.name
        return report.dumps(views.public_data(cfg, doc))

    _download("dl-json", "dl-json-btn", result_json, ".json")
    _download("dl-csv", "dl-csv-btn", lambda entry, result: views.public_message(cfg, report.hops_csv(result)), "-hops.csv")

    def _csv_download(name: str) -> None:
        @app.callback(
            Output(f"dl-csv-{name}", "data"), Input(f"csv-{name}", "n_clicks"), State("entry-store", "data"),
            *[State(c, "value") for c in CONTROLS], State("group-store", "data"), State("color-by", "value"),
            prevent_initial_call=True,
        )
        def download(_, entry_id, *args):
            try:
                entry_id = views.entry_id_value(entry_id)
                if not entry_id:
                    raise PreventUpdate
                entry = views.entry_of(cfg, entry_id)
                text = views.view_csv(cfg, name, entry_id, _sliders(*args[: len(CONTROLS)]), views.group_value(args[-2]),
                                      views.color_by_value(args[-1]))
            except InputError as exc:
                set_props("warnings", {"children": [alert(str(exc))]})
                return no_update
            return {"content": views.public_message(cfg, text), "filename": views.public_message(cfg, f"{entry.name}-{name}.csv")}

    for name in (*views.VIEWS, "table"):
        _csv_download(name)
    for name in views.VIEWS:
        app.clientside_callback(
            ClientsideFunction("iondiff", "exportFigure"),
            Output(f"exported-{name}", "data"), Input(f"svg-{name}", "n_clicks"), Input(f"png-{name}", "n_clicks"),
            State(f"graph-{name}", "id"), prevent_initial_call=True,
        )


def verdict_card(c: dict | None, percolated: bool):
    """The concertedness verdict, first thing on the page."""
    if c is None:
        if percolated:
            return html.Div([html.B("Groups percolate: "),
                             "time correlation alone links most hops, so n is not meaningful at these settings."],
                            className="verdict verdict-percolated", id="verdict")
        return None
    titles = {"beyond_chance": "Concerted beyond chance", "chance": "No more concerted than chance",
              "percolated": "Groups percolate: n is not meaningful"}
    verdict = c.get("verdict") or "unknown"

    def num(v, f="{:.3g}"):
        return f.format(v) if isinstance(v, (int, float)) else "n/a"

    ci = c.get("null_ci95")
    detail = (f"hops in groups of n >= 2: {num(c.get('observed_fraction'), '{:.1%}')} observed, "
              f"{num(c.get('null_mean'), '{:.1%}')} by chance"
              + (f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else "")
              + f"; p = {num(c.get('p_value'))} over {c.get('replicas') or 'n/a'} random replicas")
    return html.Div([
        html.Div([html.B(titles.get(verdict, verdict)), html.Span(f" ({verdict})", className="muted")]),
        html.Div(c.get("message") or ""),
        html.Div(detail, className="muted", title="p: share of random replicas at least as concerted as the data"),
    ], className=f"verdict verdict-{verdict}", id="verdict")
