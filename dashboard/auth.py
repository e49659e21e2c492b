"""Optional password protection of a lab deployment.

Set IONDIFF_PASSWORD (and optionally IONDIFF_USER, default "lab") and every route asks
for HTTP Basic credentials, except the health endpoint (for the container's
HEALTHCHECK). Use it behind HTTPS (a reverse proxy) so the password is not sent in clear.

Guessing is throttled per client address: after :data:`FREE_FAILURES` wrong passwords,
every request from that address is refused with 429 and a ``Retry-After`` for a delay
that doubles with each further failure (1 s, 2 s, 4 s ... up to :data:`MAX_DELAY_S`), the
right password included; a success clears the count, and failures are forgotten after
:data:`FORGET_S` without one. The counts live in a small disk cache in the data folder,
so every gunicorn worker shares them. (Behind a reverse proxy every client has the
proxy's address: the throttle then slows everyone during an attack, never more than
:data:`MAX_DELAY_S` at a time.)
"""

from __future__ import annotations

import hmac
import math
import os
import time
from pathlib import Path

from flask import Response, request

OPEN_PATHS = ("/health",)
#: Wrong passwords an address may send before it is slowed down.
FREE_FAILURES = 5
#: Longest wait imposed after a failure (s).
MAX_DELAY_S = 300.0
#: Failures are forgotten after this long without a new one (s).
FORGET_S = 900.0


class Throttle:
    """Failed-login counts per client address, shared by the processes using ``folder``."""

    def __init__(self, folder: Path):
        import diskcache

        self.cache = diskcache.Cache(str(folder))

    def wait_s(self, addr: str, now: float | None = None) -> float:
        """Seconds ``addr`` must still wait before its next try (0: it may try now)."""
        rec = self.cache.get(addr)
        if rec is None:
            return 0.0
        failures, last = rec
        if failures < FREE_FAILURES:
            return 0.0
        delay = min(2.0 ** (failures - FREE_FAILURES), MAX_DELAY_S)
        return max(0.0, last + delay - (time.time() if now is None else now))

    def failed(self, addr: str) -> None:
        with self.cache.transact():
            failures, _ = self.cache.get(addr, (0, 0.0))
            self.cache.set(addr, (failures + 1, time.time()), expire=FORGET_S)

    def succeeded(self, addr: str) -> None:
        if addr in self.cache:
            self.cache.delete(addr)


def protect(server, password: str | None = None, user: str | None = None, state_dir: Path | None = None) -> bool:
    """Require credentials on every request of ``server``; returns whether it is on.
    ``state_dir`` holds the failed-login counts (default: ``auth`` in the working folder)."""
    password = password if password is not None else os.environ.get("IONDIFF_PASSWORD")
    if not password:
        return False
    user = user or os.environ.get("IONDIFF_USER", "lab")
    throttle = Throttle(Path(state_dir or "auth"))

    @server.before_request
    def _check():
        if request.path in OPEN_PATHS:
            return None
        addr = request.remote_addr or "unknown"
        wait = throttle.wait_s(addr)
        if wait > 0:
            return Response(f"IonDiff dashboard: too many wrong passwords; try again in {math.ceil(wait)} s", 429,
                            {"Retry-After": str(math.ceil(wait))})
        auth = request.authorization
        if auth is None:  # the browser's first request asks for the login box: not a failure
            return _ask()
        ok = (
            hmac.compare_digest((auth.username or "").encode(), user.encode())
            & hmac.compare_digest((auth.password or "").encode(), password.encode())
        )
        if not ok:
            throttle.failed(addr)
            return _ask()
        throttle.succeeded(addr)
        return None

    return True


def _ask() -> Response:
    return Response("IonDiff dashboard: log in", 401, {"WWW-Authenticate": 'Basic realm="IonDiff"'})
