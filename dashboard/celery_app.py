"""The Celery application of a lab deployment (used when REDIS_URL is set).

No Dash import here: the engine's ``batch --celery`` uses it too. Large arrays never
travel through Redis: tasks write results into the shared data folder and return small
handles (paths, ids).
"""

from __future__ import annotations

import os

from celery import Celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

celery_app = Celery("iondiff", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(
    worker_prefetch_multiplier=1,  # a long analysis must not hold queued jobs hostage
    task_acks_late=True,  # a job whose worker dies is redelivered, not lost
    task_reject_on_worker_lost=True,
    task_time_limit=int(os.environ.get("IONDIFF_TASK_TIME_LIMIT_S", 6 * 3600)),
    task_soft_time_limit=int(os.environ.get("IONDIFF_TASK_SOFT_TIME_LIMIT_S", 6 * 3600 - 60)),
    worker_max_memory_per_child=int(os.environ.get("IONDIFF_WORKER_MAX_MEMORY_KB", 12 * 1024**2)),
    result_expires=7 * 24 * 3600,
    broker_connection_retry_on_startup=True,
)
