"""Library page: every analysed simulation; rename, tag, delete; cross-simulation views
of the selected ones (Spearman matrix, pooled pdf of n, Arrhenius, ν vs ν0)."""

from __future__ import annotations

import csv
import io
import logging

from dash import Input, Output, State, dash_table, dcc, html, no_update

from dashboard.figures import GRAPH_CONFIG, library_stats
from dashboard.storage import Library

log = logging.getLogger(__name__)

COLUMNS = [
    ("name", "name", True), ("material", "material", False), ("family", "family", False), ("species", "mobile", False),
    ("temperature_K", "T (K)", False), ("tags", "tags", True), ("n_hops", "hops", False),
    ("mean_n", "<n>", False), ("D_tracer_cm2_s", "D tracer (cm²/s)", False), ("open", "open", False),
]


def _rows(lib: Library) -> list[dict]:
    rows = []
    for e in lib.list():
        d = e.descriptors
        rows.append({
            "id": e.id, "name": e.name, "material": e.material, "family": e.family, "species": e.species,
            "temperature_K": e.temperature_K, "tags": e.tags, "n_hops": d.get("n_hops"),
            "mean_n": None if d.get("mean_n") is None else round(d["mean_n"], 2),
            "D_tracer_cm2_s": None if d.get("D_tracer_cm2_s") is None else float(f"{d['D_tracer_cm2_s']:.3g}"),
            "open": f"[open](/?entry={e.id})",
        })
    return rows


def layout(cfg):
    rows = _rows(Library(cfg.library_db))
    return html.Div([
        html.Div([
            html.H3(f"Analysed simulations ({len(rows)})", id="library-title"),
            html.Div("Edit a name or tags in the table; select rows for the cross-simulation figures (none = all).", className="muted"),
            dash_table.DataTable(
                id="library-table", data=rows, row_selectable="multi", selected_rows=[], page_size=25,
                columns=[{"name": label, "id": cid, "editable": ed, **({"presentation": "markdown"} if cid == "open" else {})}
                         for cid, label, ed in COLUMNS],
                sort_action="native", filter_action="native", style_cell={"textAlign": "left", "fontSize": "0.85rem"},
                markdown_options={"link_target": "_self"},
            ),
            html.Div([
                html.Button("Delete selected", id="library-delete", className="secondary"),
                html.Button("Download library CSV", id="library-csv-btn", className="secondary"),
                dcc.Download(id="library-csv"),
            ], className="row", style={"marginTop": "0.5rem"}),
            html.Div(id="library-message"),
        ], className="panel"),
        html.Div([
            html.Div(dcc.Graph(id="lib-spearman", config=GRAPH_CONFIG), className="panel"),
            html.Div(dcc.Graph(id="lib-pdf", config=GRAPH_CONFIG), className="panel"),
            html.Div(dcc.Graph(id="lib-arrhenius", config=GRAPH_CONFIG), className="panel"),
            html.Div(dcc.Graph(id="lib-nu", config=GRAPH_CONFIG), className="panel"),
        ], className="grid2", style={"marginTop": "1rem"}),
    ], style={"padding": "1rem"})


def register(app, cfg):
    @app.callback(
        Output("library-message", "children"),
        Input("library-table", "data_timestamp"), State("library-table", "data"), State("library-table", "data_previous"),
        prevent_initial_call=True,
    )
    def edit(_, data, previous):
        if not previous:
            return no_update
        lib = Library(cfg.library_db)
        before = {r["id"]: r for r in previous}
        try:
            for r in data:
                old = before.get(r["id"])
                if old and old["name"] != r["name"]:
                    lib.rename(r["id"], str(r["name"] or ""))
                if old and old["tags"] != r["tags"]:
                    lib.set_tags(r["id"], str(r["tags"] or ""))
        except ValueError as exc:
            return html.Div(str(exc), className="alert-error")
        return html.Div("saved", className="ok")

    @app.callback(
        Output("library-table", "data"), Output("library-table", "selected_rows"), Output("library-title", "children"),
        Input("library-delete", "n_clicks"), State("library-table", "data"), State("library-table", "selected_rows"),
        prevent_initial_call=True,
    )
    def delete(_, data, selected):
        lib = Library(cfg.library_db)
        for i in selected or []:
            lib.delete(data[i]["id"])
        rows = _rows(lib)
        return rows, [], f"Analysed simulations ({len(rows)})"

    @app.callback(Output("library-csv", "data"), Input("library-csv-btn", "n_clicks"), prevent_initial_call=True)
    def download(_):
        entries = Library(cfg.library_db).list()
        keys = sorted({k for e in entries for k in e.descriptors})
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["id", "name", "material", "family", "species", "temperature_K", "tags", *keys])
        for e in entries:
            w.writerow([e.id, e.name, e.material, e.family, e.species, e.temperature_K, e.tags, *[e.descriptors.get(k) for k in keys]])
        return {"content": buf.getvalue(), "filename": "library.csv"}

    @app.callback(
        Output("lib-spearman", "figure"), Output("lib-pdf", "figure"), Output("lib-arrhenius", "figure"), Output("lib-nu", "figure"),
        Input("library-table", "data"), Input("library-table", "selected_rows"),
    )
    def cross(data, selected):
        lib = Library(cfg.library_db)
        ids = [data[i]["id"] for i in selected] if selected else [r["id"] for r in data or []]
        entries = []
        for eid in ids:
            e = lib.get(eid)
            if e is None:
                continue
            try:
                groups = [g["n"] for g in e.load_result()["groups"]]
            except (OSError, ValueError, KeyError):
                log.warning("entry %s has no readable result file", eid)
                continue
            entries.append({"name": e.name, "material": e.material, "family": e.family, "species": e.species,
                            "temperature_K": e.temperature_K, "descriptors": e.descriptors, "groups": groups})
        d = library_stats.process_data(entries)
        return (library_stats.spearman_figure(d), library_stats.pooled_pdf_figure(d),
                library_stats.arrhenius_figure(d), library_stats.nu_figure(d))
