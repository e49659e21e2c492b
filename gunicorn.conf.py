"""gunicorn settings of the IonDiff dashboard: ``gunicorn -c gunicorn.conf.py app:server``
(the Dockerfile and docker-compose.yml run it). Command-line flags override these values,
e.g. ``gunicorn -c gunicorn.conf.py --workers 2 app:server``. The app's own limits
(IONDIFF_MAX_REQUEST_MB, IONDIFF_MAX_UPLOAD_MB, IONDIFF_READ_TIMEOUT_S) are environment
variables read by dashboard/config.py; docs/DEPLOY.md lists them all."""

bind = "0.0.0.0:8050"
workers = 4
threads = 4  # gthread workers: a thread per request, connections waiting for data parked in a poller
# A worker silent this long (a callback stuck in C code) is killed and replaced (s).
timeout = 300
graceful_timeout = 30
keepalive = 5  # s an idle kept-alive connection stays open
# Request line and headers: gunicorn's defaults, written out so they are visible and reviewed.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
# Every read of a request (its line, headers and body) times out after IONDIFF_READ_TIMEOUT_S
# (post_worker_init below and dashboard.app_factory.limit_requests), so a client trickling
# bytes frees its thread; a body's size: IONDIFF_MAX_REQUEST_MB / IONDIFF_MAX_UPLOAD_MB.


def post_worker_init(worker):
    """Prepare a freshly started worker before it accepts a connection.

    * Finish Dash's first-request set-up (the start-up race of plotly/dash#3971: see
      dashboard.app_factory.warm_up). create_app already does it; this checks it again for
      an app loaded some other way.
    * Give gthread's connections a read timeout: gthread waits at most 5 s for a request's
      first byte without taking a thread, but then reads the request line and headers
      with no timeout, so a client sending a byte now and then would hold a thread forever.
    """
    from dashboard.app_factory import CONFIG_KEY, DASH_EXTENSION, warm_up

    app = worker.wsgi
    dash_app = getattr(app, "extensions", {}).get(DASH_EXTENSION)
    if dash_app is not None:
        warm_up(dash_app)
    cfg = getattr(app, "config", {}).get(CONFIG_KEY)
    if cfg is not None and cfg.read_timeout_s:
        _time_out_reads(cfg.read_timeout_s)


def _time_out_reads(seconds: float) -> None:
    """Every connection this worker accepts reads with a timeout of ``seconds`` (set after
    gthread makes the socket blocking for each request; it makes it non-blocking again
    while the connection waits between requests)."""
    from gunicorn.workers import gthread

    class TimedConn(gthread.TConn):
        def init(self):
            super().init()
            self.sock.settimeout(seconds)

    gthread.TConn = TimedConn  # this worker process only: ThreadWorker.accept makes its connections from it
