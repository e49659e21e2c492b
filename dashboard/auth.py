"""Optional password protection of a lab deployment.

Set IONDIFF_PASSWORD (and optionally IONDIFF_USER, default "lab") and every route asks
for HTTP Basic credentials, except the health endpoint (for the container's
HEALTHCHECK). Use it behind HTTPS (a reverse proxy) so the password is not sent in clear.
"""

from __future__ import annotations

import hmac
import os

from flask import Response, request

OPEN_PATHS = ("/health",)


def protect(server, password: str | None = None, user: str | None = None) -> bool:
    """Require credentials on every request of ``server``; returns whether it is on."""
    password = password if password is not None else os.environ.get("IONDIFF_PASSWORD")
    if not password:
        return False
    user = user or os.environ.get("IONDIFF_USER", "lab")

    @server.before_request
    def _check():
        if request.path in OPEN_PATHS:
            return None
        auth = request.authorization
        ok = (
            auth is not None
            and hmac.compare_digest((auth.username or "").encode(), user.encode())
            and hmac.compare_digest((auth.password or "").encode(), password.encode())
        )
        if not ok:
            return Response("IonDiff dashboard: log in", 401, {"WWW-Authenticate": 'Basic realm="IonDiff"'})
        return None

    return True
