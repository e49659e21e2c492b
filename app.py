"""The IonDiff dashboard. ``python app.py`` serves it on embedded defaults (a disk-cache
job manager and a SQLite library under ./data); ``gunicorn app:server`` in production;
with REDIS_URL set, ``celery -A app:celery_app worker`` runs the background jobs."""

import os

from dashboard.app_factory import create_app

app = create_app()
server = app.server

if os.environ.get("REDIS_URL"):
    from dashboard.celery_app import celery_app  # noqa: F401  (the worker imports it from here)

if __name__ == "__main__":
    app.run(host=os.environ.get("IONDIFF_HOST", "127.0.0.1"), port=int(os.environ.get("IONDIFF_PORT", "8050")), debug=False)
