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


@celery_app.task(name="iondiff.analyse_simulation")
def analyse_simulation(path: str, out_json: str, params: dict, cache_dir, timestep_fs, temperature_K) -> dict:
    """One simulation of ``python -m iondiff_core batch --celery``: the JSON is written to
    ``out_json`` in the shared folder; only the small summary row comes back."""
    from iondiff_core.cli import analyse_one

    return analyse_one(path, out_json, params, cache_dir, timestep_fs, temperature_K)


@celery_app.task(name="iondiff.analyse_into_library")
def analyse_into_library(path: str, params: dict, timestep_fs=None, temperature_K=None, name=None) -> str:
    """Analyse a trajectory on the shared data folder into the library; returns the entry id."""
    from dashboard.analysis import run_analysis
    from dashboard.config import Config
    from iondiff_core.parameters import Parameters
    from pathlib import Path

    return run_analysis(Config.from_env(), Path(path), Parameters.from_dict(params), timestep_fs, temperature_K, name=name)


def submit_batch(jobs, params: dict, cache_dir, timestep_fs, temperature_K, progress=None, timeout_s: float = 24 * 3600) -> list[dict]:
    """Send each (name, path, out_json) of a batch to the workers; gather their rows."""
    pending = {
        analyse_simulation.delay(path, out_json, params, cache_dir, timestep_fs, temperature_K): name
        for name, path, out_json in jobs
    }
    rows = []
    for k, (res, name) in enumerate(pending.items(), 1):
        try:
            row = res.get(timeout=timeout_s, propagate=True)
        except Exception as exc:  # noqa: BLE001 - a lost worker or a timeout is one failed row
            row = {"path": "", "error": f"worker: {type(exc).__name__}: {exc}"}
        rows.append({"name": name, **row})
        if progress is not None:
            progress("batch", k / len(pending), f"{name}: {row['error'] or 'ok'}")
    return rows
