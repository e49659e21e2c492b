"""Analyse page: bring a trajectory (upload or server), run the analysis in the
background, explore the figures with the sliders. Layout and callbacks only."""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

from dash import Input, Output, State, dash_table, dcc, html, no_update
from dash.exceptions import PreventUpdate

from dashboard import analysis
from dashboard.figures import GRAPH_CONFIG, correlation_heatmaps
from dashboard.storage import Library
from dashboard.uploads import list_server_simulations, resolve_server_path, trajectory_of_upload
from dashboard.views import analyse_views
from iondiff_core import report
from iondiff_core.errors import InputError
from iondiff_core.io import sniff_species
from iondiff_core.parameters import Parameters

log = logging.getLogger(__name__)
DEFAULTS = Parameters()


def _slider(id_, label, lo, hi, step, value, marks=None):
    return html.Div([
        html.Label(label),
        dcc.Slider(id=id_, min=lo, max=hi, step=step, value=value, marks=marks,
                   tooltip={"placement": "bottom", "always_visible": False}, updatemode="mouseup"),
    ])


def _graph(id_, height=None):
    return dcc.Loading(dcc.Graph(id=id_, config=GRAPH_CONFIG, style={"height": height} if height else None), type="dot")


def layout(cfg, entry_id: str | None = None):
    sims = list_server_simulations(cfg.roots) if cfg.roots else []
    source = html.Div([
        html.H3("1. Trajectory"),
        html.Label("Upload an XDATCAR (plain, .gz, .xz, .bz2) or extxyz / LAMMPS dump / vasprun.xml"),
        html.Label("INCAR (optional; choose it before the trajectory)", style={"marginTop": "0"}),
        _file_input("incar-file"),
        html.Label("Trajectory file"),
        _file_input("trajectory-file"),
        html.Progress(id="upload-progress", value="0", max="1"),
        html.Div(id="upload-status", className="muted"),
        html.Hr(),
        html.Label("... or pick one on the server" + ("" if cfg.roots else " (no folders allowed on this server)")),
        dcc.Dropdown(id="server-sim", options=[{"label": s, "value": s} for s in sims], placeholder="simulations found",
                     disabled=not cfg.roots),
        dcc.Input(id="server-path", type="text", placeholder="or a path inside the allowed folders", disabled=not cfg.roots),
        html.Button("Use this file", id="server-use", className="secondary", disabled=not cfg.roots, style={"marginTop": "0.4rem"}),
        html.Div(id="source-label", className="muted"),
    ], className="panel")
    run = html.Div([
        html.H3("2. Analysis"),
        html.Label("Mobile species"),
        dcc.Dropdown(id="species", options=[], placeholder="choose a trajectory first"),
        html.Div([
            html.Div([html.Label("Timestep (fs per frame)"), dcc.Input(id="timestep", type="number", min=0, placeholder="from INCAR")]),
            html.Div([html.Label("Temperature (K)"), dcc.Input(id="temperature", type="number", min=0, placeholder="from INCAR")]),
        ], className="grid2"),
        html.Div([html.Button("Run analysis", id="run-button"), html.Button("Cancel", id="cancel-button", className="secondary", disabled=True)],
                 className="row", style={"marginTop": "0.6rem"}),
        html.Progress(id="progress-bar", value="0", max="1", style={"marginTop": "0.5rem"}),
        html.Div(id="progress-text", className="muted"),
        html.Div(id="run-error"),
    ], className="panel")
    sliders = html.Div([
        html.H3("3. Thresholds (no re-clustering)"),
        _slider("sil-thr", "Silhouette threshold", 0.3, 0.95, 0.01, DEFAULTS.silhouette_threshold, {0.5: "0.5", 0.7: "0.7", 0.9: "0.9"}),
        _slider("r-vib", "Vibration radius r_vib (Å)", 0.2, 1.5, 0.05, DEFAULTS.r_vib_A, {0.5: "0.5", 1.0: "1.0", 1.5: "1.5"}),
        html.Label("Reference level"),
        dcc.RadioItems(id="ref-mode", options=[{"label": " mean of random (paper)", "value": "mean"},
                                               {"label": " quantile", "value": "quantile"}], value="mean", inline=True),
        dcc.Slider(id="ref-quantile", min=0.5, max=0.999, step=0.001, value=0.95, marks={0.5: "0.5", 0.9: "0.9", 0.99: "0.99"},
                   tooltip={"placement": "bottom"}, updatemode="mouseup"),
        _slider("width-factor", "Smoothing width (x hop duration)", 0.25, 3.0, 0.05, DEFAULTS.width_factor, {1: "1", 2: "2", 3: "3"}),
        _slider("n-max", "n_max", 5, 40, 1, DEFAULTS.n_max, {10: "10", 20: "20", 40: "40"}),
        html.Label("Colour hop paths by"),
        dcc.RadioItems(id="color-by", options=[{"label": " ion", "value": "ion"}, {"label": " concerted group", "value": "group"}],
                       value="group", inline=True),
        html.Div([html.Button("Clear group selection", id="clear-group", className="secondary")], style={"marginTop": "0.5rem"}),
        html.Div([html.Button("Download JSON", id="dl-json-btn", className="secondary"),
                  html.Button("Hops CSV", id="dl-csv-btn", className="secondary")], className="row", style={"marginTop": "0.5rem"}),
        dcc.Download(id="dl-json"), dcc.Download(id="dl-csv"),
    ], className="panel")
    tabs = dcc.Tabs(id="tabs", value="paths", children=[
        dcc.Tab(label="3D hop paths", value="paths", children=[_graph("graph-3d")]),
        dcc.Tab(label="Timeline", value="timeline", children=[_graph("graph-timeline")]),
        dcc.Tab(label="Correlations", value="heatmaps", children=[_graph("graph-heatmaps")]),
        dcc.Tab(label="Distribution of n", value="pdf", children=[_graph("graph-pdf")]),
        dcc.Tab(label="Transport", value="transport", children=[_graph("graph-msd"), _graph("graph-vanhove")]),
        dcc.Tab(label="Descriptors", value="descriptors", children=[
            dash_table.DataTable(id="descriptor-table", columns=[{"name": c, "id": c} for c in ("descriptor", "value", "unit")],
                                 page_size=60, style_cell={"textAlign": "left", "fontSize": "0.85rem"})]),
    ])
    return html.Div([
        dcc.Store(id="source-store"),
        dcc.Store(id="entry-store", data=entry_id),
        dcc.Store(id="group-store"),
        html.Div([source, run, sliders], className="sidebar"),
        html.Div([html.Div(id="view-status"), html.Div(id="warnings"), tabs], className="main panel"),
    ], className="page")


def _file_input(id_):
    # Dash has no plain <input type=file>: assets/upload.js puts one in this holder and
    # streams the chosen file to /upload.
    return html.Div(id=f"{id_}-holder", className="file-holder", **{"data-input-id": id_})


def _alert(message, kind="error"):
    return html.Div(message, className=f"alert-{kind}")


def _job_failed(exc):
    """The job died outside the callback's own error handling (a Celery worker refused a
    job whose worker process kept dying): say so on the page."""
    msg = str(exc).split("background callback:", 1)[-1].split("\n", 1)[0].strip() or type(exc).__name__
    log.error("background job failed: %s", msg)
    return no_update, _alert(f"the analysis failed: {msg}")


# Component ids of the sliders, in the argument order of :func:`_sliders`.
SLIDER_IDS = ("sil-thr", "r-vib", "ref-mode", "ref-quantile", "width-factor", "n-max")


def _slider_deps(kind) -> list:
    return [kind(i, "value") for i in SLIDER_IDS]


def _sliders(sil, rvib, ref_mode, ref_q, width, n_max) -> dict:
    return {
        "silhouette_threshold": float(sil), "r_vib_A": float(rvib),
        "reference_level": "mean" if ref_mode == "mean" else float(ref_q),
        "width_factor": float(width), "n_max": int(n_max),
    }


def _source_path(cfg, source: dict) -> Path:
    if source.get("kind") == "upload":
        return trajectory_of_upload(cfg.uploads, source["id"])
    if source.get("kind") == "server":
        return resolve_server_path(source["path"], cfg.roots)
    raise InputError("choose a trajectory first")


def register(app, cfg, cache):
    @app.callback(
        Output("source-store", "data", allow_duplicate=True), Output("source-label", "children"),
        Input("server-use", "n_clicks"), State("server-sim", "value"), State("server-path", "value"),
        prevent_initial_call=True,
    )
    def use_server_file(_, picked, typed):
        try:
            path = resolve_server_path(typed or picked or "", cfg.roots)
            species = sniff_species(path)
            return {"kind": "server", "path": str(path), "name": path.name, "species": species}, f"server file: {path}"
        except InputError as exc:
            return {"kind": "error", "error": str(exc)}, _alert(str(exc))

    @app.callback(
        Output("species", "options"), Output("species", "value"), Output("run-error", "children", allow_duplicate=True),
        Input("source-store", "data"), prevent_initial_call=True,
    )
    def species_choices(source):
        if not source:
            raise PreventUpdate
        if source.get("kind") == "error":
            return [], None, _alert(source["error"])
        species = source.get("species") or []
        default = next((s for s in ("Li", "Na", "K", "Ag", "Cu", "F", "Cl", "Br", "I", "O", "H") if s in species), species[0] if species else None)
        return [{"label": s, "value": s} for s in species], default, None

    @app.callback(
        Output("entry-store", "data"), Output("run-error", "children"),
        Input("run-button", "n_clicks"),
        State("source-store", "data"), State("species", "value"), State("timestep", "value"), State("temperature", "value"),
        background=True,
        running=[(Output("run-button", "disabled"), True, False), (Output("cancel-button", "disabled"), False, True)],
        progress=[Output("progress-bar", "value"), Output("progress-text", "children")],
        cancel=[Input("cancel-button", "n_clicks")],
        prevent_initial_call=True,
        on_error=_job_failed,
    )
    def run_job(set_progress, _, source, species, timestep, temperature):
        try:
            if not source or source.get("kind") not in ("upload", "server"):
                raise InputError("choose a trajectory first (upload one or pick one on the server)")
            path = _source_path(cfg, source)
            params = Parameters(species=species)
            set_progress(("0", "starting"))
            entry = analysis.run_analysis(
                cfg, path, params, timestep or None, temperature or None,
                progress=lambda f, m: set_progress((str(round(f, 4)), m)), name=source.get("name"),
            )
            set_progress(("1", "done"))
            return entry, None
        except InputError as exc:
            return no_update, _alert(str(exc))
        except Exception as exc:  # noqa: BLE001 - the page shows a message, the log the traceback
            log.error("analysis failed: %s", traceback.format_exc())
            return no_update, _alert(f"the analysis failed: {type(exc).__name__}: {exc}")

    @cache.memoize()
    def views(entry_id: str, sliders_json: str, color_by: str, group):
        return analyse_views(cfg, entry_id, json.loads(sliders_json), color_by, group)

    def views_at(entry_id, slider_values, color_by, group):
        """:func:`views` at the sliders' raw values (a canonical JSON string is the cache key)."""
        return views(entry_id, json.dumps(_sliders(*slider_values), sort_keys=True), color_by, group)

    @app.callback(
        Output("graph-3d", "figure"), Output("graph-timeline", "figure"), Output("graph-heatmaps", "figure"),
        Output("graph-pdf", "figure"), Output("graph-msd", "figure"), Output("graph-vanhove", "figure"),
        Output("descriptor-table", "data"), Output("warnings", "children"), Output("view-status", "children"),
        Input("entry-store", "data"), *_slider_deps(Input),
        Input("color-by", "value"), Input("group-store", "data"),
    )
    def update_views(entry_id, sil, rvib, ref_mode, ref_q, width, n_max, color_by, group):
        if not entry_id:
            raise PreventUpdate
        try:
            v = views_at(entry_id, (sil, rvib, ref_mode, ref_q, width, n_max), color_by, group)
        except InputError as exc:
            return (no_update,) * 8 + (_alert(str(exc)),)
        except Exception as exc:  # noqa: BLE001
            log.error("view failed: %s", traceback.format_exc())
            return (no_update,) * 8 + (_alert(f"could not draw the results: {type(exc).__name__}: {exc}"),)
        warns = [_alert(w, "warning") for w in v["warnings"]]
        sel = f" - group {group} selected" if group is not None else ""
        return (v["3d"], v["timeline"], v["heatmaps"], v["pdf"], v["msd"], v["vanhove"], v["table"], warns,
                html.Div(v["status"] + sel, id="view-summary"))

    @app.callback(
        Output("group-store", "data"),
        Input("graph-heatmaps", "clickData"), Input("clear-group", "n_clicks"),
        State("entry-store", "data"), *_slider_deps(State), State("color-by", "value"),
        State("group-store", "data"),
        prevent_initial_call=True,
    )
    def select_group(click, clear, entry_id, sil, rvib, ref_mode, ref_q, width, n_max, color_by, group):
        from dash import ctx

        if ctx.triggered_id == "clear-group" or not entry_id:
            return None
        v = views_at(entry_id, (sil, rvib, ref_mode, ref_q, width, n_max), color_by, group)
        return correlation_heatmaps.group_from_click(v["heat_data"], click)

    def _current_result(entry_id, sliders):
        entry = Library(cfg.library_db).get(entry_id)
        if entry is None:
            raise PreventUpdate
        return entry, analysis.result_for(cfg, entry, sliders)

    def _download(target: str, button: str, content, suffix: str) -> None:
        """A download button: the current entry's result at the current slider values."""

        @app.callback(
            Output(target, "data"), Input(button, "n_clicks"), State("entry-store", "data"), *_slider_deps(State),
            prevent_initial_call=True,
        )
        def download(_, entry_id, *sl):
            if not entry_id:
                raise PreventUpdate
            entry, result = _current_result(entry_id, _sliders(*sl))
            return {"content": content(result), "filename": f"{entry.name}{suffix}"}

    _download("dl-json", "dl-json-btn", lambda result: report.dumps(result.to_dict()), ".json")
    _download("dl-csv", "dl-csv-btn", report.hops_csv, "-hops.csv")
