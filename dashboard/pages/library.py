"""Library page: every analysed simulation, grouped by material and temperature; name,
material, temperature and tags edited in the table (saved in SQLite); delete; per run
its reproducibility record, methods paragraph and BibTeX; cross-simulation views of
the selected runs (Spearman matrix, pooled pdf of n, Arrhenius, ν vs ν0), each drawn
only where the runs support it, with the reason otherwise."""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import dash_ag_grid as dag
from dash import Input, Output, State, ctx, dcc, html, no_update

from dashboard import csv_safe
from dashboard.figures import GRAPH_CONFIG, library_stats
from dashboard.storage import DiskFullError, Library, corrupt_copies, recovery_message
from dashboard.views import public_data, public_message
from iondiff_core import provenance

log = logging.getLogger(__name__)

#: The folder holding the ``dashboard`` package (for the clean-up process's import path).
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
METHOD_URL = "/docs/METHOD.md"

#: Header tooltips: what each column means, with its unit.
HELP = {
    "name": "Your name for the run (click twice to edit). Taken from the folder, the INCAR's SYSTEM or the file.",
    "material": "Runs of one material at several temperatures give its Arrhenius fit (click twice to edit).",
    "family": "Family of the mobile ion (Li-based, Na-based, halide...): the pooled pdf is drawn per family.",
    "species": "The mobile species whose hops were analysed.",
    "temperature_K": "Simulation temperature in K, for the Arrhenius plot (click twice to edit; editing does not rerun "
                     "the analysis: the conductivity in the result used the temperature given at analysis time).",
    "tags": "Comma-separated labels of your own (click twice to edit).",
    "flags": "Why a run must not be trusted as a whole, e.g. a damaged file of which only the complete frames were "
             "analysed. Flagged runs stay out of the cross-run views unless you select them.",
    "n_hops": "Hops found (transits between two vibration centres of one ion).",
    "mean_n": "Mean number n of hop events per concerted group (groups with n >= 2), METHOD.md section 5.",
    "D_tracer_cm2_s": "Tracer diffusion coefficient in cm²/s from the MSD (Einstein relation), METHOD.md section 6.",
    "open": "Open the run on the Analyse page.",
}
COLUMNS = [
    ("name", "name", True), ("material", "material", True), ("temperature_K", "T (K)", True), ("tags", "tags", True),
    ("flags", "flags", False), ("family", "family", False), ("species", "mobile", False), ("n_hops", "hops", False),
    ("mean_n", "<n>", False), ("D_tracer_cm2_s", "D tracer (cm²/s)", False), ("open", "open", False),
]
FORMAT_3G = {"function": "params.value == null ? '' : d3.format('.3g')(params.value)"}
FORMAT_3E = {"function": "params.value == null ? '' : d3.format('.3~e')(params.value)"}

#: "How to read this" of each cross-run view, and the METHOD.md section behind it.
HOW_TO_READ = {
    "spearman": ("Each cell is the Spearman rank correlation ρ between two descriptors over the selected runs, with its "
                 "two-sided p-value and N, the runs where both are known. With few runs only strong correlations reach "
                 "small p; columns that are constant, mostly missing or set by the simulation (temperature) are left out "
                 "and listed below. Paper Fig. 6a.", "6. Descriptors"),
    "pdf": ("The share of groups with n concerted hop events, pooled over the selected runs (all, and per family), the "
            "groups larger than n_max in the last bar, and the exponential fit f(n) = A exp(-b n) over n >= 2 where it "
            "is meaningful. Paper Figs. 4 and 5.", "5. Distribution of n"),
    "arrhenius": ("ln D against 1000/T for each material with runs at two or more temperatures: the slope gives the "
                  "activation energy Ea with its 95 % interval (Student t over the fit's residuals). A material with all "
                  "its runs at one temperature has no fit; the reason is listed below.", "6. Descriptors"),
    "nu": ("The measured hopping frequency ν against the dilute-limit estimate ν0 = 6 D / Δr². Between the lines "
           "ν0 = ν and ν0 = 10 ν the dilute-limit formula holds roughly; far above, hops are strongly correlated. "
           "Paper Fig. 7.", "6. Descriptors"),
}


def _row(e) -> dict:
    d = e.descriptors
    return {
        "id": e.id, "name": e.name, "material": e.material, "family": e.family, "species": e.species,
        "temperature_K": e.temperature_K, "tags": e.tags, "flags": e.flags or "", "n_hops": d.get("n_hops"),
        "mean_n": d.get("mean_n"), "D_tracer_cm2_s": d.get("D_tracer_cm2_s"), "open": f"[open](/?entry={e.id})",
    }


def _rows(lib: Library) -> list[dict]:
    """Every entry, grouped by material then temperature (unknown temperatures last)."""
    rows = [_row(e) for e in lib.list()]
    return sorted(rows, key=lambda r: (str(r["material"]), r["temperature_K"] is None, r["temperature_K"] or 0, r["name"]))


def _column(cid: str, label: str, editable: bool) -> dict:
    col = {"field": cid, "headerName": label, "editable": editable, "headerTooltip": HELP.get(cid, label),
           "filter": True, "sortable": True, "resizable": True}
    if cid in ("mean_n", "D_tracer_cm2_s"):
        col["valueFormatter"] = FORMAT_3E if cid.startswith("D_") else FORMAT_3G
    if cid == "temperature_K":
        col["cellDataType"] = "number"
    if cid == "open":
        col.update(cellRenderer="markdown", linkTarget="_self", filter=False, width=90)
    if cid == "flags":
        col["tooltipField"] = "flags"
        col["cellStyle"] = {"styleConditions": [{"condition": "params.value", "style": {"color": "#8a5a00", "fontWeight": "bold"}}]}
    return col


def how_to_read(view: str) -> html.Details:
    text, section = HOW_TO_READ[view]
    glossary = [html.Ul([html.Li([html.Code(k), ": ", v]) for k, v in library_stats.DESCRIPTOR_HELP.items()])] if view == "spearman" else []
    return html.Details([
        html.Summary("How to read this"),
        html.P([text, " Definitions: ", html.A(f"METHOD.md, section {section}", href=METHOD_URL, target="_blank"), "."]),
        *glossary,
    ], id=f"lib-{view}-help", className="how-to-read")


def _view(view: str, graph_id: str) -> html.Div:
    return html.Div([
        dcc.Graph(id=graph_id, config=GRAPH_CONFIG),
        html.Ul(id=f"{graph_id}-note", className="muted"),
        html.Button("Data (CSV)", id=f"lib-{view}-csv-btn", className="secondary",
                    title="The numbers behind this figure for the selected runs, as CSV (units in the column names)"),
        how_to_read(view),
    ], className="panel")


#: The Dash Pages entry (registered by ``create_app``).
PAGE = {"path": "/library", "name": "Library", "title": "IonDiff: library"}


def layout(**_):
    """The page for ``/library``."""
    from dashboard.app_factory import page_config

    cfg = page_config()
    unreadable = None
    try:
        rows = _rows(Library(cfg.library_db))
    except sqlite3.DatabaseError:  # damaged since this process checked it: check again (moves it aside)
        log.exception("the library could not be read")
        try:
            rows = _rows(Library(cfg.library_db, recheck=True))
        except (sqlite3.DatabaseError, DiskFullError) as exc:
            rows, unreadable = [], f"The library cannot be read right now ({exc}). Try again in a minute; if it persists, tell the server's administrator."
    except DiskFullError as exc:
        rows, unreadable = [], str(exc)
    copies = corrupt_copies(cfg.library_db)
    alerts = [html.Div(text, id=cid, className="alert-error")
              for cid, text in (("library-recovered", copies and recovery_message(copies)), ("library-unreadable", unreadable)) if text]
    return html.Div([
        html.Div([
            *alerts,
            html.H3(f"Analysed simulations ({len(rows)})", id="library-title"),
            html.Div(["Click a name, material, temperature or tag twice to edit it (Enter saves). Tick runs for the "
                      "cross-simulation figures (none ticked = every unflagged run) and for their methods paragraph. "
                      "Hover a column title for its meaning; the method is in ",
                      html.A("METHOD.md", href=METHOD_URL, target="_blank"), "."], className="muted"),
            dag.AgGrid(
                id="library-table", rowData=rows, columnDefs=[_column(*c) for c in COLUMNS],
                getRowId="params.data.id", defaultColDef={"minWidth": 80}, columnSize="responsiveSizeToFit",
                dashGridOptions={"rowSelection": {"mode": "multiRow", "checkboxes": True, "headerCheckbox": True,
                                                  "enableClickSelection": False},
                                 "tooltipShowDelay": 300, "animateRows": False, "singleClickEdit": False,
                                 "stopEditingWhenCellsLoseFocus": True, "domLayout": "autoHeight"},
                getRowStyle={"styleConditions": [{"condition": "params.data.flags", "style": {"backgroundColor": "#fff3cd"}}]},
                style={"width": "100%"},
            ),
            html.Div([
                html.Button("Delete selected", id="library-delete", className="secondary",
                            title="Remove the ticked runs and their result files from the library"),
                html.Button("Download library CSV", id="library-csv-btn", className="secondary",
                            title="Every run with every descriptor, one row per run"),
                dcc.Download(id="library-csv"),
            ], className="row", style={"marginTop": "0.5rem"}),
            html.Div(id="library-message"),
        ], className="panel"),
        html.Div([
            html.Div([
                html.H4("Runs in the views below, by material and temperature"),
                dag.AgGrid(id="library-groups", rowData=[], columnSize="responsiveSizeToFit",
                           columnDefs=[{"field": "material", "headerTooltip": HELP["material"]},
                                       {"field": "temperature_K", "headerName": "T (K)", "headerTooltip": HELP["temperature_K"]},
                                       {"field": "runs", "headerTooltip": "Runs of this material at this temperature"},
                                       {"field": "names", "headerName": "runs' names", "flex": 3}],
                           dashGridOptions={"domLayout": "autoHeight"}, style={"width": "100%"}),
            ], className="panel"),
            html.Div([
                html.H4("Reproduce and cite a run"),
                html.Div(id="library-entry", children=html.Div("Tick one run to see its methods paragraph and BibTeX.", className="muted")),
                html.Div([
                    html.Button("Download reproducibility record (JSON)", id="library-record-btn", className="secondary", disabled=True,
                                title="Input SHA-256 (each file), every parameter, software versions and seeds of the ticked run"),
                    html.Button("Download BibTeX", id="library-bib-btn", className="secondary",
                                title="BibTeX of the method's paper and of this software"),
                    dcc.Download(id="library-record"), dcc.Download(id="library-bib"),
                ], className="row", style={"marginTop": "0.5rem"}),
            ], className="panel"),
        ], className="grid2", style={"marginTop": "1rem"}),
        html.Div([
            _view("spearman", "lib-spearman"), _view("pdf", "lib-pdf"), _view("arrhenius", "lib-arrhenius"), _view("nu", "lib-nu"),
        ], className="grid2", style={"marginTop": "1rem"}),
        dcc.Download(id="lib-view-csv"),
    ], style={"padding": "1rem"})


def _changes(changed) -> list[dict]:
    """cellValueChanged is one change (older dash-ag-grid) or a list of them."""
    if not changed:
        return []
    return changed if isinstance(changed, list) else [changed]


@functools.lru_cache(maxsize=1024)
def _group_sizes(path: str, mtime_ns: int) -> tuple[int, ...]:
    """Group sizes n of a result file (memoised by path and modification time: every edit redraws the views)."""
    doc = json.loads(Path(path).read_text())
    return tuple(int(g["n"]) for g in doc.get("groups", []))


def _cross_entries(lib: Library, ids: list[str]) -> list[dict]:
    entries = []
    for eid in ids:
        e = lib.get(eid)
        if e is None:
            continue
        try:
            groups = list(_group_sizes(e.result, Path(e.result).stat().st_mtime_ns))
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("entry %s has no readable result file", eid)
            continue
        entries.append({"name": e.name, "material": e.material, "family": e.family, "species": e.species,
                        "temperature_K": e.temperature_K, "descriptors": e.descriptors, "groups": groups,
                        "params": e.params, "n_max": e.params.get("n_max"), "flags": e.flags})
    return entries


@functools.lru_cache(maxsize=256)
def _input_files(path: str, mtime_ns: int) -> tuple[dict, ...]:
    """SHA-256 of each input file (memoised: hashing a large trajectory takes a second)."""
    return tuple(provenance.input_files(path))


def _selected_ids(rows: list[dict], selected: list[dict] | None) -> list[str]:
    """The runs of the cross-run views: the ticked ones, else every unflagged one."""
    return [r["id"] for r in selected] if selected else [r["id"] for r in rows if not r.get("flags")]


def _record(e, with_files: bool) -> dict:
    """The entry's reproducibility record: the one in its result if the engine wrote it, else built here."""
    doc = e.load_result()
    if doc.get("provenance"):
        return doc["provenance"]
    info = {"sha256": e.sha256, "source": e.name, "flags": e.flags}
    for k in ("timestep_fs", "temperature_K"):
        if e.params.get(k) is not None:
            info[k] = e.params[k]
    if with_files and Path(e.trajectory).exists():
        info["files"] = list(_input_files(e.trajectory, Path(e.trajectory).stat().st_mtime_ns))
    params = {k: v for k, v in e.params.items() if k not in ("timestep_fs", "temperature_K")}
    return provenance.record(doc, params, info)


def library_csv(entries) -> str:
    """Every run with every descriptor, one row per run; cells safe for a spreadsheet
    (names, materials and tags are typed by users: a formula is written as text)."""
    keys = sorted({k for e in entries for k in e.descriptors})
    buf = io.StringIO()
    w = csv_safe.writer(buf)
    w.writerow(["id", "name", "material", "family", "species", "temperature_K", "tags", "flags", *keys])
    for e in entries:
        w.writerow([e.id, e.name, e.material, e.family, e.species, e.temperature_K, e.tags, e.flags,
                    *[e.descriptors.get(k) for k in keys]])
    return buf.getvalue()


def _notes(items: list[str]) -> list:
    return [html.Li(t) for t in items]


def register(app, cfg):
    started = threading.Lock()

    @app.server.before_request
    def startup_cleanup():
        """At the web server's first request (not in Celery workers, which import the app too):
        retention, quota and orphans, in a process of its own (throttled over the processes).
        Not a thread of this process: a job forked while that thread is inside SQLite would
        inherit SQLite's lock held and hang at its first query."""
        if started.acquire(blocking=False):
            code = "import sys; from dashboard.config import Config; from dashboard.storage import maybe_cleanup; " \
                   "maybe_cleanup(Config.from_env(sys.argv[1], roots=[]))"
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")])}
            proc = subprocess.Popen([sys.executable, "-c", code, str(cfg.data_dir)], env=env, stdin=subprocess.DEVNULL)
            threading.Thread(target=proc.wait, name="iondiff-cleanup-wait", daemon=True).start()  # no zombie

    @app.callback(
        Output("library-table", "rowData"), Output("library-message", "children"), Output("library-title", "children"),
        Input("library-table", "cellValueChanged"), Input("library-delete", "n_clicks"), State("library-table", "selectedRows"),
        prevent_initial_call=True,
    )
    def change(changed, _, selected):
        lib = Library(cfg.library_db)
        message = no_update
        if ctx.triggered_id == "library-delete":
            try:
                freed = sum(lib.delete(r["id"]) for r in selected or [])
                message = html.Div(f"deleted {len(selected or [])} run(s) and {freed / 1e6:.1f} MB of their files", className="ok")
            except (DiskFullError, sqlite3.DatabaseError) as exc:  # e.g. no space left even to record the deletion
                message = html.Div(f"not deleted: {exc}", className="alert-error")
        else:
            saved, errors = [], []
            for c in _changes(changed):
                field, row = c.get("colId"), c.get("data") or {}
                try:
                    e = lib.update(row["id"], **{field: row.get(field)})
                    saved.append(f"{field} of {e.name}")
                except (ValueError, KeyError) as exc:
                    errors.append(str(exc))
            message = (html.Div("not saved: " + "; ".join(errors), className="alert-error") if errors
                       else html.Div("saved " + ", ".join(saved), className="ok"))
        rows = _rows(lib)  # from the database: a refused edit goes back to the stored value
        return rows, message, f"Analysed simulations ({len(rows)})"

    @app.callback(Output("library-csv", "data"), Input("library-csv-btn", "n_clicks"), prevent_initial_call=True)
    def download(_):
        return {"content": library_csv(Library(cfg.library_db).list()), "filename": "library.csv"}

    @app.callback(
        Output("lib-spearman", "figure"), Output("lib-pdf", "figure"), Output("lib-arrhenius", "figure"), Output("lib-nu", "figure"),
        Output("lib-spearman-note", "children"), Output("lib-pdf-note", "children"), Output("lib-arrhenius-note", "children"),
        Output("lib-nu-note", "children"), Output("library-groups", "rowData"),
        Input("library-table", "rowData"), Input("library-table", "selectedRows"),
    )
    def cross(rows, selected):
        rows = rows or []
        entries = _cross_entries(Library(cfg.library_db), _selected_ids(rows, selected))
        d = library_stats.process_data(entries)
        flagged = [e["name"] for e in entries if e["flags"]]
        skipped = [r["name"] for r in rows if r.get("flags")] if not selected else []
        common = ([f"includes flagged run(s): {', '.join(flagged)}"] if flagged else []) + (
            [f"flagged run(s) left out (tick them to include): {', '.join(skipped)}"] if skipped else [])
        sp = d["spearman"]
        sp_notes = [f"{x['column']} left out: {x['why']}" for x in sp.get("left_out", [])]
        if "reason" not in sp:
            sp_notes.insert(0, f"N = {sp['runs']} runs; each cell gives ρ, its two-sided p-value and the N runs where both are known")
        pooled = d["pooled"]
        pdf_notes = [pooled["reason"]] if "reason" in pooled else [
            *pooled["notes"],
            *[f"{fam}: {library_stats._fit_note(p)}" for fam, p in pooled["families"].items() if library_stats._fit_of(p) is None]]
        arr_notes = list(d["arrhenius"]["reasons"])
        nu_notes = [d["nu"]["reason"]] if d["nu"].get("reason") else []
        return (library_stats.spearman_figure(d), library_stats.pooled_pdf_figure(d), library_stats.arrhenius_figure(d),
                library_stats.nu_figure(d), _notes(sp_notes + common), _notes(pdf_notes + common), _notes(arr_notes + common),
                _notes(nu_notes + common), d["groups"])

    @app.callback(
        Output("lib-view-csv", "data"),
        *[Input(f"lib-{v}-csv-btn", "n_clicks") for v in library_stats.VIEWS],
        State("library-table", "rowData"), State("library-table", "selectedRows"), prevent_initial_call=True,
    )
    def view_csv(*args):
        rows, selected = args[-2] or [], args[-1]
        view = str(ctx.triggered_id).removeprefix("lib-").removesuffix("-csv-btn")
        d = library_stats.process_data(_cross_entries(Library(cfg.library_db), _selected_ids(rows, selected)))
        return {"content": library_stats.data_csv(d, view), "filename": f"library-{view}.csv"}

    @app.callback(
        Output("library-entry", "children"), Output("library-record-btn", "disabled"),
        Input("library-table", "selectedRows"),
    )
    def entry(selected):
        if not selected or len(selected) != 1:
            return html.Div("Tick one run to see its methods paragraph and BibTeX.", className="muted"), True
        e = Library(cfg.library_db).get(selected[0]["id"])
        if e is None:
            return html.Div("this run is no longer in the library", className="alert-error"), True
        try:
            doc = e.load_result()
            doc = {**doc, "provenance": _record(e, with_files=True)}
        except (OSError, ValueError) as exc:
            return html.Div(public_message(cfg, f"the result file of {e.name} cannot be read: {exc}"), className="alert-error"), True
        return html.Div([
            html.Div([html.B(e.name), " — methods paragraph (generated from this run's parameters and software):"]),
            html.P(provenance.methods_paragraph(doc), id="library-methods", style={"fontSize": "0.9rem"}),
            html.Div("BibTeX (the paper and this software):"),
            html.Pre(provenance.BIBTEX, id="library-bibtex", style={"fontSize": "0.75rem", "whiteSpace": "pre-wrap"}),
        ]), False

    @app.callback(Output("library-record", "data"), Input("library-record-btn", "n_clicks"), State("library-table", "selectedRows"),
                  prevent_initial_call=True)
    def download_record(_, selected):
        if not selected or len(selected) != 1:
            return no_update
        e = Library(cfg.library_db).get(selected[0]["id"])
        if e is None:
            return no_update
        rec = public_data(cfg, _record(e, with_files=True))  # no server path (a POSCAR's, the upload's) leaves the server
        return {"content": json.dumps(rec, indent=1, default=str), "filename": f"{e.id}-reproducibility.json"}

    @app.callback(Output("library-bib", "data"), Input("library-bib-btn", "n_clicks"), prevent_initial_call=True)
    def download_bib(_):
        return {"content": provenance.BIBTEX, "filename": "iondiff.bib"}
