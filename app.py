"""The IonDiff dashboard. ``python app.py`` serves it with waitress (a production WSGI
server, see dashboard/serving.py) on embedded defaults (a disk-cache job manager and a
SQLite library under ./data) on http://127.0.0.1:8050, or the next free port
(IONDIFF_HOST / IONDIFF_PORT choose); ``gunicorn -c gunicorn.conf.py app:server`` on a
lab server; with REDIS_URL set, ``celery -A app:celery_app worker`` runs the background jobs."""

import os
import sys

from dashboard.app_factory import create_app

app = create_app()
server = app.server

if os.environ.get("REDIS_URL"):
    from dashboard.celery_app import celery_app  # noqa: F401  (the worker imports it from here)

if __name__ == "__main__":
    from dashboard.serving import main

    sys.exit(main(app))
