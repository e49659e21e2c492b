"""Build the Dash app: job manager, server settings, upload route, pages.

Routing is Dash Pages: each module of ``dashboard/pages/`` declares its ``PAGE`` (path, name,
title) and a ``layout(**query)``; :func:`create_app` registers them, so ``/?entry=<id>``
reaches ``pages.analyse.layout(entry=<id>)``. A page's layout reads the app's
:class:`Config` with :func:`page_config` (per app, so several apps can share a process).

Request security (see docs/DEPLOY.md, "Web server and security"): every request but the
streamed ``/upload`` is limited to ``IONDIFF_MAX_REQUEST_MB`` (refused with 413 from its
Content-Length, before its body is read); under gunicorn every request's socket gets a
read timeout (``IONDIFF_READ_TIMEOUT_S``); every response carries anti-framing, CSP,
nosniff and referrer headers (:func:`security_headers`). :func:`warm_up` does Dash's
first-request set-up before the app serves anyone (the gunicorn start-up race)."""

from __future__ import annotations

from pathlib import Path

import dash
from dash import Dash, dcc, html
from flask import current_app, jsonify, request
from flask_caching import Cache

from dashboard import auth, uploads
from dashboard.config import Config

#: Where the docs the pages link to are: the checkout's docs/, or the installed package's copy
#: (pyproject.toml installs docs/*.md as ``dashboard/docs``).
DOCS_FOLDERS = (Path(__file__).resolve().parent / "docs", Path(__file__).resolve().parents[1] / "docs")

#: Where a page's layout finds the app's Config: ``server.config[CONFIG_KEY]``.
CONFIG_KEY = "iondiff.config"
#: The Dash app of a Flask server: ``server.extensions[DASH_EXTENSION]`` (for gunicorn.conf.py).
DASH_EXTENSION = "iondiff.dash"


def page_config() -> Config:
    """The Config of the app serving the current request (for a page's layout)."""
    return current_app.config[CONFIG_KEY]


def make_manager(cfg: Config):
    """Celery workers through Redis when REDIS_URL is set; else :class:`dashboard.jobs.JobManager`,
    a disk cache that every gunicorn worker shares with a queue of IONDIFF_MAX_JOBS slots
    and a time limit (never DiskcacheManager() without a cache: it breaks there)."""
    if cfg.redis_url:
        from dashboard.celery_app import background_manager

        return background_manager()
    from dashboard.jobs import JobManager

    return JobManager(cfg.jobs, max_jobs=cfg.max_jobs, time_limit_s=cfg.job_time_limit_s, max_queued=cfg.max_queued)


def create_app(data_dir=None, roots=None) -> Dash:
    """The dashboard, with its data under ``data_dir`` (default $IONDIFF_DATA or ./data)
    and the server-side picker limited to ``roots`` (default $IONDIFF_ROOTS)."""
    from dashboard.pages import analyse, library

    cfg = Config.from_env(data_dir, roots)
    app = Dash(
        __name__,
        title="IonDiff dashboard",
        background_callback_manager=make_manager(cfg),
        suppress_callback_exceptions=True,
        health_endpoint="health",
        use_pages=True,
        pages_folder="",  # the pages are registered below, not imported from a folder a second time
        assets_folder=str(Path(__file__).resolve().parent / "assets"),
    )
    server = app.server
    server.secret_key = cfg.secret_key
    server.config[CONFIG_KEY] = cfg
    server.config.update(MAX_CONTENT_LENGTH=cfg.max_request_bytes, SESSION_COOKIE_SAMESITE="Lax",
                         SESSION_COOKIE_HTTPONLY=True)
    limit_requests(server, cfg)
    auth.protect(server, state_dir=cfg.data_dir / "auth")
    server.register_blueprint(uploads.make_blueprint(cfg, cfg.read_timeout_s))
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

        folder = next((f for f in DOCS_FOLDERS if (f / f"{name}.md").is_file()), None)
        if folder is None:
            abort(404)
        return send_from_directory(folder, f"{name}.md", mimetype="text/plain; charset=utf-8")

    analyse.register(app, cfg, cache)
    library.register(app, cfg)
    app.config_object = cfg  # for tests and the deploy tooling
    server.extensions[DASH_EXTENSION] = app
    warm_up(app)
    security_headers(server, content_security_policy(app))
    return app


#: The streamed route that has its own size cap (IONDIFF_MAX_UPLOAD_MB) and read timeout.
UPLOAD_PATH = "/upload"


def limit_requests(server, cfg: Config) -> None:
    """Refuse a too-large body from its Content-Length before reading it (413, JSON), and
    give every request's socket a read timeout under gunicorn (whose threads would
    otherwise wait for a trickling client forever)."""

    @server.before_request
    def _limits():
        sock = request.environ.get("gunicorn.socket")
        if sock is not None and cfg.read_timeout_s:
            sock.settimeout(cfg.read_timeout_s)  # gunicorn resets it (setblocking) for the next request
        if request.path == UPLOAD_PATH:
            return None
        if request.content_length is not None and request.content_length > cfg.max_request_bytes:
            resp = jsonify(ok=False, error=f"request too large ({request.content_length / 1024**2:.0f} MB; this server "
                                           f"accepts {cfg.max_request_bytes / 1024**2:g} MB: IONDIFF_MAX_REQUEST_MB)")
            resp.status_code = 413
            resp.headers["Connection"] = "close"  # its body is never read
            return resp
        return None


def warm_up(app: Dash) -> None:
    """Do Dash's once-per-process set-up now, before the app serves a request.

    Dash runs it lazily in ``before_request`` hooks (``Dash._setup_server`` and the pages
    router) that set their "done" flag *before* doing the work. Under ``gunicorn --threads``
    the first requests of a fresh worker run concurrently: one thread sets the flag and
    starts registering the component bundles, the others skip the set-up and ask for a
    bundle or the dependencies before they exist: ``"dash" is not a registered library``
    (plotly/dash#3971). One request through the app's own hooks, here, in a single
    thread, finishes that set-up before any worker accepts a connection. Idempotent.
    """
    with app.server.test_request_context("/"):
        for hook in app.server.before_request_funcs.get(None, []):
            if getattr(hook, "__self__", None) is app or getattr(hook, "__qualname__", "").startswith("Dash."):
                hook()
    if not app._got_first_request.get("setup_server") or not app.registered_paths.get("dash"):
        raise RuntimeError("Dash's set-up did not run: the start-up warm-up needs updating for this Dash version")


def content_security_policy(app: Dash) -> str:
    """The Content-Security-Policy of every response: scripts only from this server (and
    Dash's own inline scripts, by hash), no framing, no plugins, no foreign forms."""
    scripts = " ".join(["'self'", *app.csp_hashes()])
    return "; ".join([
        "default-src 'self'",
        f"script-src {scripts}",
        "style-src 'self' 'unsafe-inline'",  # plotly and the grid set styles at run time
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def security_headers(server, csp: str) -> None:
    """Anti-framing, CSP, nosniff and referrer headers on every response."""
    headers = {
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
    }

    @server.after_request
    def _headers(resp):
        for k, v in headers.items():
            resp.headers.setdefault(k, v)
        return resp
