"""Build the Dash app: job manager, server settings, upload route, pages.

Routing is Dash Pages: each module of ``pages/`` declares its ``PAGE`` (path, name,
title) and a ``layout(**query)``; :func:`create_app` registers them, so ``/?entry=<id>``
reaches ``pages.analyse.layout(entry=<id>)``. A page's layout reads the app's
:class:`Config` with :func:`page_config` (per app, so several apps can share a process)."""

from __future__ import annotations

import dash
from dash import Dash, dcc, html
from flask import current_app
from flask_caching import Cache

from dashboard import auth, uploads
from dashboard.config import Config

#: Where a page's layout finds the app's Config: ``server.config[CONFIG_KEY]``.
CONFIG_KEY = "iondiff.config"


def page_config() -> Config:
    """The Config of the app serving the current request (for a page's layout)."""
    return current_app.config[CONFIG_KEY]


def make_manager(cfg: Config):
    """Celery workers through Redis when REDIS_URL is set; else :class:`dashboard.jobs.JobManager`,
    a disk cache that every gunicorn worker shares with a queue of IONDIFF_MAX_JOBS slots
    and a time limit (never DiskcacheManager() without a cache: it breaks there)."""
    from dash import CeleryManager

    if cfg.redis_url:
        from dashboard.celery_app import celery_app

        return CeleryManager(celery_app)
    from dashboard.jobs import JobManager

    return JobManager(cfg.jobs, max_jobs=cfg.max_jobs, time_limit_s=cfg.job_time_limit_s, max_queued=cfg.max_queued)


def create_app(data_dir=None, roots=None) -> Dash:
    """The dashboard, with its data under ``data_dir`` (default $IONDIFF_DATA or ./data)
    and the server-side picker limited to ``roots`` (default $IONDIFF_ROOTS)."""
    from pages import analyse, library

    cfg = Config.from_env(data_dir, roots)
    app = Dash(
        __name__,
        title="IonDiff dashboard",
        background_callback_manager=make_manager(cfg),
        suppress_callback_exceptions=True,
        health_endpoint="health",
        use_pages=True,
        pages_folder="",  # the pages are registered below, not imported from a folder a second time
        assets_folder=str(__import__("pathlib").Path(__file__).resolve().parents[1] / "assets"),
    )
    server = app.server
    server.secret_key = cfg.secret_key
    server.config[CONFIG_KEY] = cfg
    auth.protect(server)
    server.register_blueprint(uploads.make_blueprint(cfg.uploads, cfg.max_upload_bytes))
    cache = Cache(server, config={
        "CACHE_TYPE": "FileSystemCache", "CACHE_DIR": str(cfg.flask_cache),
        "CACHE_THRESHOLD": 500, "CACHE_DEFAULT_TIMEOUT": 7 * 24 * 3600,
    })
    for page in (analyse, library):
        dash.register_page(page.__name__, layout=page.layout, **page.PAGE)
    app.layout = html.Div([
        html.Div([
            html.Span("IonDiff", className="brand"),
            dcc.Link("Analyse", href="/"),
            dcc.Link("Library", href="/library"),
            html.Span("concerted ionic hops in MD trajectories", className="muted", style={"color": "#b9c9d9"}),
        ], className="navbar"),
        dash.page_container,
    ])

    @server.get("/docs/<name>.md")
    def docs(name):
        """The project's docs (METHOD.md ...), linked from the page's help."""
        from flask import abort, send_from_directory

        folder = __import__("pathlib").Path(__file__).resolve().parents[1] / "docs"
        if not (folder / f"{name}.md").is_file():
            abort(404)
        return send_from_directory(folder, f"{name}.md", mimetype="text/plain; charset=utf-8")

    analyse.register(app, cfg, cache)
    library.register(app, cfg)
    app.config_object = cfg  # for tests and the deploy tooling
    return app
