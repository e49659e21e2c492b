"""``python app.py``'s web server: waitress (a production WSGI server, pure Python, also on
Windows) instead of Flask's development server, which a single chunked request can crash.

waitress reads each request completely (spilling large bodies to a temporary file, not
memory) before a thread handles it, so a slow client holds no thread; a connection silent
for ``IONDIFF_READ_TIMEOUT_S`` is closed. Its parser is given the app's size limits per
path: a body larger than ``IONDIFF_MAX_REQUEST_MB`` (or, for ``/upload``,
``IONDIFF_MAX_UPLOAD_MB``) is refused with 413 from its Content-Length (or as soon as a
chunked body passes the limit), before it is received."""

from __future__ import annotations

#: Threads that run requests (Dash's page loads, callbacks and uploads).
THREADS = 8


def make_server(app, host: str, port: int, cfg, threads: int = THREADS):
    """A waitress server for the Dash ``app`` on ``host:port`` (call ``.run()`` on it)."""
    from waitress import create_server
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser
    from waitress.utilities import RequestEntityTooLarge

    from dashboard.app_factory import UPLOAD_PATH

    class Parser(HTTPRequestParser):
        def received(self, data):
            consumed = super().received(data)
            if self.headers_finished and self.error is None:
                limit = cfg.max_upload_bytes if self.path == UPLOAD_PATH else cfg.max_request_bytes
                size = self.body_bytes_received if self.chunked else self.content_length
                if size > limit:
                    self.error = RequestEntityTooLarge(
                        f"the request is larger than the {limit / 1024**2:g} MB this server accepts on {self.path}")
                    self.completed = True
            return consumed

    class Channel(HTTPChannel):
        parser_class = Parser

    server = create_server(
        app.server, host=host, port=port, threads=threads, ident="IonDiff",
        channel_timeout=max(1, int(cfg.read_timeout_s)),
        cleanup_interval=max(1, min(30, int(cfg.read_timeout_s))),  # how often silent connections are looked for (s)
        max_request_body_size=max(cfg.max_upload_bytes, cfg.max_request_bytes) + 1,
    )
    for s in [server, *getattr(server, "map", {}).values()]:
        if hasattr(s, "channel_class"):
            s.channel_class = Channel
    return server


def main(app=None) -> int:
    """``python app.py`` and the installed ``iondiff-dashboard`` command: serve the dashboard
    with waitress on IONDIFF_HOST / IONDIFF_PORT (or the next free port), until Ctrl+C."""
    import sys

    try:
        from dashboard.config import AddressError, serve_address

        if app is None:
            from dashboard.app_factory import create_app

            app = create_app()
    except ImportError as exc:
        print(f"error: the dashboard needs its dependencies ({exc.name} is missing): "
              "pip install \"iondiff[app]\" (or pip install -r requirements.txt in a checkout)", file=sys.stderr)
        return 2
    try:
        host, port, note = serve_address()
    except AddressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if note:
        print(note, flush=True)
    web = make_server(app, host, port, app.config_object)
    print(f"IonDiff dashboard: http://{host}:{port}/  (Ctrl+C stops it)", flush=True)
    try:
        web.run()
    except KeyboardInterrupt:
        pass
    finally:
        web.close()
    return 0
