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
# The body of a request: read with the socket timeout IONDIFF_READ_TIMEOUT_S that the app
# sets on every request (dashboard.app_factory.limit_requests), so a client trickling bytes
# frees its thread; its size: IONDIFF_MAX_REQUEST_MB / IONDIFF_MAX_UPLOAD_MB.


def post_worker_init(worker):
    """Finish Dash's first-request set-up in the worker before it accepts a connection
    (the start-up race of plotly/dash#3971: see dashboard.app_factory.warm_up). create_app
    already does it; this checks it again for an app loaded some other way."""
    from dashboard.app_factory import DASH_EXTENSION, warm_up

    dash_app = getattr(worker.wsgi, "extensions", {}).get(DASH_EXTENSION)
    if dash_app is not None:
        warm_up(dash_app)
