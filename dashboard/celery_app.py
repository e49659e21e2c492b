"""The Celery application of a lab deployment (used when REDIS_URL is set).

No Dash import here: ``python -m dashboard batch --celery`` uses it too. Large arrays never
travel through Redis: tasks write results into the shared data folder and return small
handles (paths, ids).

Delivery: a job is acknowledged only when it has finished (``task_acks_late``), so a job
whose worker process dies (killed, out of memory) is put back on the queue and run again
by the next free worker. Each job may start at most ``IONDIFF_MAX_ATTEMPTS`` times (default
3): a job that kills its worker every time is then reported failed instead of taking
every worker down in turn. A job whose whole worker *host* disappears is redelivered when
Redis' visibility timeout expires (the hard time limit plus 15 minutes), since until then
it cannot be told from a job that is still running.

Redis restarts: Redis must keep its data on disk (append-only file; docs/DEPLOY.md), so
that queued jobs and results survive. While it is away, workers keep running their jobs and
retry every write to it for up to :data:`REDIS_OUTAGE_S` (a job's progress and result are
written when it is back), then reconnect and take the next job; the web process treats an
unreachable Redis as "the job is still running" (:func:`background_manager`).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
import uuid
from pathlib import Path

from celery import Celery, Task, signals
from kombu import Queue

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
TIME_LIMIT_S = int(os.environ.get("IONDIFF_TASK_TIME_LIMIT_S", 6 * 3600))
MAX_ATTEMPTS = int(os.environ.get("IONDIFF_MAX_ATTEMPTS", 3))


class JobKeepsDying(RuntimeError):
    """A job was delivered more than MAX_ATTEMPTS times: its worker process died each time."""


class BoundedAttemptsTask(Task):
    """Counts the starts of each job (in the result store) and refuses one started too often.

    Dash's background callbacks are tasks of this app too (``CeleryManager`` creates them
    with ``celery_app.task``), so the bound covers them; for those the refusal is written
    where Dash looks for the callback's result, and the page reports the failure.
    """

    def __call__(self, *args, **kwargs):
        attempt = self._count_attempt()
        if attempt > MAX_ATTEMPTS:
            msg = (
                f"its worker process died {attempt - 1} time(s) while running it "
                "(out of memory? killed?); it is not tried again"
            )
            if self.name.startswith("background_callback_") and args:
                # args[0] is the result key the web process polls (dash CeleryManager protocol)
                self.backend.set(args[0], json.dumps({"background_callback_error": {"msg": msg, "tb": ""}}))
            raise JobKeepsDying(msg)
        return super().__call__(*args, **kwargs)

    def _count_attempt(self) -> int:
        task_id = getattr(self.request, "id", None)
        if not task_id or self.request.is_eager or not hasattr(self.backend, "incr"):
            return 1
        key = f"iondiff-attempts-{task_id}"
        try:
            n = int(self.backend.incr(key))
            self.backend.expire(key, (MAX_ATTEMPTS + 1) * (TIME_LIMIT_S + 900))
            return n
        except Exception:  # noqa: BLE001 - counting is a safeguard; never fail a job for it
            return 1


#: How long (s) a worker keeps retrying a write to Redis (a job's progress, its result, its
#: state) before giving up: a Redis restart or a short outage must not fail a running job.
REDIS_OUTAGE_S = 600
#: Retries of one operation on Redis, in a worker (about REDIS_OUTAGE_S) ...
WORKER_RETRY_POLICY = {"max_retries": REDIS_OUTAGE_S, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
#: ... and elsewhere (the web process, the command line): about 10 s, so that a request
#: (the Run button) never waits long for Redis.
RETRY_POLICY = {"max_retries": 10, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
_jobs_log = logging.getLogger("iondiff.jobs")

celery_app = Celery("iondiff", broker=REDIS_URL, backend=REDIS_URL, task_cls=BoundedAttemptsTask)
#: The queue of the clustering's ion blocks (:func:`run_block`). A worker started without
#: ``-Q`` takes both queues; a worker on another host is started with ``-Q iondiff-blocks``:
#: block jobs read and write only the shared ``stages/`` folder, while analysis jobs (the
#: default queue) also write the SQLite library, which must stay on the web host's disk.
BLOCKS_QUEUE = "iondiff-blocks"

celery_app.conf.update(
    task_default_queue="celery",
    task_queues=(Queue("celery"), Queue(BLOCKS_QUEUE)),
    task_routes={"iondiff.run_block": {"queue": BLOCKS_QUEUE}},
    worker_prefetch_multiplier=1,  # a long analysis must not hold queued jobs hostage
    task_acks_late=True,  # a job whose worker dies is redelivered, not lost
    task_reject_on_worker_lost=True,
    task_time_limit=TIME_LIMIT_S,
    task_soft_time_limit=int(os.environ.get("IONDIFF_TASK_SOFT_TIME_LIMIT_S", TIME_LIMIT_S - 60)),
    worker_max_memory_per_child=int(os.environ.get("IONDIFF_WORKER_MAX_MEMORY_KB", 12 * 1024**2)),
    # Redis redelivers an unacknowledged job after the visibility timeout (default 1 h):
    # with acks_late it must outlast the longest job, or a running job is started twice.
    broker_transport_options={"visibility_timeout": TIME_LIMIT_S + 900},
    result_expires=7 * 24 * 3600,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,  # a worker waits for Redis as long as it takes, never exits
    worker_cancel_long_running_tasks_on_connection_loss=False,  # a running job finishes (_patient_worker)
    # Sending a job (the Run button) rides out a Redis restart of a few seconds.
    task_publish_retry_policy=RETRY_POLICY,
    # Writes to the result store (a job's progress and result: dash's job wrapper calls
    # backend.set) are retried while Redis is away: long in a worker (_patient_worker).
    result_backend_transport_options={"retry_policy": RETRY_POLICY},
    result_backend_always_retry=True,  # a job's state too (only workers store states)
    result_backend_max_retries=REDIS_OUTAGE_S // 2,
    result_backend_max_sleep_between_retries_ms=2000,
    # Fail fast on a dead connection instead of hanging on it (seconds).
    redis_socket_connect_timeout=5,
    redis_socket_timeout=30,
    redis_retry_on_timeout=True,
    redis_backend_health_check_interval=10,
)
celery_app.conf.broker_transport_options.update(
    socket_connect_timeout=5, socket_timeout=30, health_check_interval=10, retry_on_timeout=True,
)


@signals.celeryd_init.connect
def _patient_worker(conf=None, **_):
    """In a worker (before its pool starts): retry every write to Redis for about
    REDIS_OUTAGE_S, on the conf and on the result store already made when app.py was
    imported (dash's job wrapper holds that one; its retry policy is read once)."""
    conf.result_backend_transport_options = {**conf.result_backend_transport_options, "retry_policy": WORKER_RETRY_POLICY}
    backend = celery_app.backend
    backend.__dict__["retry_policy"] = {**backend.retry_policy, **WORKER_RETRY_POLICY}


def _redis_down_errors() -> tuple:
    from kombu.exceptions import OperationalError

    return tuple(celery_app.backend.connection_errors) + (OperationalError, ConnectionError, TimeoutError)


def background_manager():
    """Dash's ``CeleryManager`` for this app, for the web process: a poll of a job while
    Redis is unreachable (restarting) answers "still running" and leaves everything as it
    was, instead of raising (the page would report a failure, or stop polling, while the
    worker finishes the job). Each poll tries Redis once: it never waits for it."""
    from dash import CeleryManager

    down = _redis_down_errors()
    running = ("PENDING", "RECEIVED", "STARTED", "RETRY", "PROGRESS")

    def lost(what: str, exc: Exception) -> None:
        _jobs_log.warning("Redis unreachable while %s (%s: %s): the job counts as still running; reconnecting",
                          what, type(exc).__name__, exc)

    class ReconnectingCeleryManager(CeleryManager):
        def get_progress(self, key):
            try:
                return super().get_progress(key)
            except down as exc:
                lost("reading a job's progress", exc)
                return None

        def result_ready(self, key):
            try:
                return super().result_ready(key)
            except down as exc:
                lost("looking for a job's result", exc)
                return False

        def get_result(self, key, job):
            try:
                raw = self.handle.backend.get(key)
            except down as exc:
                lost("reading a job's result", exc)
                return self.UNDEFINED
            if raw is None:
                return self.UNDEFINED
            result = json.loads(raw)
            try:  # the clean-up of CeleryManager.get_result; the keys expire anyway
                if self.cache_by is None:
                    self.clear_cache_entry(key)
                elif self.expire:
                    self.handle.backend.expire(key, self.expire)
                self.clear_cache_entry(self._make_progress_key(key))
                self.terminate_job(job)
            except down as exc:
                lost("clearing a finished job's keys", exc)
            return result

        def job_running(self, job):
            if not job:
                return False
            try:  # one read, without the backend's retry loop (a poll must not wait)
                return self.handle.backend._get_task_meta_for(job)["status"] in running
            except down as exc:
                lost("reading a job's state", exc)
                return True

        def get_updated_props(self, key):
            try:
                return super().get_updated_props(key)
            except down as exc:
                lost("reading a job's page updates", exc)
                return {}

        def terminate_job(self, job):
            try:
                return super().terminate_job(job)
            except down as exc:
                lost("stopping a job", exc)
                return None

    return ReconnectingCeleryManager(celery_app)


@celery_app.task(name="iondiff.analyse_simulation")
def analyse_simulation(path: str, out_json: str, params: dict, cache_dir, timestep_fs, temperature_K) -> dict:
    """One simulation of ``python -m dashboard batch --celery``: the JSON is written
    atomically to ``out_json`` (on the shared folder); only the small summary row comes back.
    Without ``cache_dir`` the clustering goes to the deployment's shared stage cache."""
    from iondiff_core.batch import analyse_one

    if not cache_dir:
        from dashboard.config import Config

        cache_dir = str(Config.from_env().stages)
    return analyse_one(path, out_json, params, cache_dir, timestep_fs, temperature_K)


@celery_app.task(name="iondiff.analyse_into_library")
def analyse_into_library(path: str, params: dict, timestep_fs=None, temperature_K=None, name=None) -> str:
    """Analyse a trajectory on the shared data folder into the library; returns the entry id."""
    from dashboard.analysis import run_analysis
    from dashboard.config import Config
    from iondiff_core.parameters import Parameters
    from pathlib import Path

    return run_analysis(Config.from_env(), Path(path), Parameters.from_dict(params), timestep_fs, temperature_K, name=name)


# --------------------------------------------------------------------------- ion blocks
CLAIM_TTL_S = TIME_LIMIT_S + 900
#: Ions per block of a distributed clustering (0: the engine's default, see cluster_ions).
BLOCK_IONS = int(os.environ.get("IONDIFF_BLOCK_IONS", 0)) or None
_blocks_log = logging.getLogger("iondiff.blocks")


def _retried(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, an operation on Redis, retried while Redis is unreachable
    (a restart), for up to about :data:`REDIS_OUTAGE_S` seconds."""
    from kombu.utils.functional import retry_over_time

    def lost(exc, intervals, retries):
        _jobs_log.warning("Redis unreachable (%s: %s), retry %d", type(exc).__name__, exc, retries)
        return next(intervals)

    policy = celery_app.conf.result_backend_transport_options["retry_policy"]
    return retry_over_time(fn, _redis_down_errors(), args, kwargs, errback=lost, **policy)


def _block_function(ref: str):
    """The block function named ``module:name``; only the engine's (a message cannot
    make a worker call anything else)."""
    module, _, name = ref.partition(":")
    if not module.startswith("iondiff_core.") or not name.isidentifier():
        raise ValueError(f"not an engine block function: {ref!r}")
    return getattr(importlib.import_module(module), name)


def _claim(key: str, owner: str) -> bool:
    """Take (or confirm holding) the claim on a block, so that it is computed once: by the
    job that claimed it, or by that same job when Celery redelivers it after its worker died."""
    client = getattr(celery_app.backend, "client", None)
    if client is None:
        return True
    name = f"iondiff-claim-{key}"
    for _ in range(3):
        if _retried(client.set, name, owner, nx=True, ex=CLAIM_TTL_S):
            return True
        held = _retried(client.get, name)
        if held is not None:
            return held.decode() == owner
    return False


def _holder(key: str) -> str | None:
    """The job id (or ``caller-...``) holding the claim on a block, if any."""
    client = getattr(celery_app.backend, "client", None)
    held = _retried(client.get, f"iondiff-claim-{key}") if client is not None else None
    return held.decode() if held is not None else None


def _compute_block(ref: str, args: list, store, key: str, who: str) -> None:
    """Compute a block whose claim is held, save it, release the claim (so that the block
    is computed again if it failed or if the stage store is emptied later)."""
    try:
        if not store.path(key).exists():  # else saved by the previous holder meanwhile
            _blocks_log.info("ion block %s started by %s", key, who)
            store.save(key, _block_function(ref)(*args))
            _blocks_log.info("ion block %s computed by %s", key, who)
    finally:  # not reached when the process is killed: the redelivered job takes the claim back
        _release(key)


def _release(key: str) -> None:
    client = getattr(celery_app.backend, "client", None)
    if client is not None:
        _retried(client.delete, f"iondiff-claim-{key}")


@celery_app.task(name="iondiff.run_block", bind=True)
def run_block(self, ref: str, args: list, store_dir: str, key: str) -> str:
    """One ion block of :class:`CeleryBlockMap`: its result goes to the shared stage store
    under ``key``; only the key comes back through Redis."""
    from iondiff_core.pipeline import StageCache

    store = StageCache(store_dir)
    if store.path(key).exists():
        return key  # done before (a worker died after saving it, or another caller ran it)
    if _claim(key, self.request.id):
        _compute_block(ref, args, store, key, f"worker {self.request.hostname}")
    return key


class CeleryBlockMap:
    """Block executor of :func:`iondiff_core.centres.cluster_ions` on the Celery workers.

    Each block is a job (:func:`run_block`) whose result is saved in the stage store
    shared by every machine (``store_dir``), under a key that hashes the block's function
    and arguments; blocks already there are not computed again. The caller waits by
    polling the store (never ``AsyncResult.get`` inside a job), and with ``help=True``
    computes blocks no worker has claimed yet: an analysis that itself runs on a worker
    then never waits for a free slot (no deadlock with every slot busy).

    A block whose worker process dies is redelivered by Celery (acks late), its claim
    still held by the same job id, at most ``IONDIFF_MAX_ATTEMPTS`` times; a block that
    fails is an error of the whole call, naming the block. ``block_ions``: ions per
    block (default ``IONDIFF_BLOCK_IONS``, else the engine's choice).
    """

    def __init__(
        self, store_dir, help: bool = True, block_ions: int | None = BLOCK_IONS,
        poll_s: float = 0.1, timeout_s: float = TIME_LIMIT_S,
    ):
        self.store_dir = str(Path(store_dir).resolve())
        self.block_ions = block_ions
        self.help = help
        self.poll_s = poll_s
        self.timeout_s = timeout_s

    def __call__(self, fn, blocks, done=None) -> list:
        from celery import current_task

        from iondiff_core.pipeline import StageCache

        ref = f"{fn.__module__}:{fn.__qualname__}"
        _block_function(ref)
        try:
            args = [json.loads(json.dumps(list(b))) for b in blocks]
        except TypeError as exc:
            raise TypeError(f"block arguments must be plain (paths, numbers, dicts) for Redis: {exc}") from None
        store = StageCache(self.store_dir)
        keys = [StageCache.key("block", {"fn": ref, "args": a}) for a in args]
        task = current_task
        # Stable across redelivery of the calling job, so it can take back its own claims.
        owner = f"caller-{task.request.id}" if task and task.request.id else f"caller-{uuid.uuid4()}"
        out: list = [None] * len(blocks)
        jobs = {
            k: _retried(run_block.apply_async, (ref, args[k], self.store_dir, keys[k]))
            for k in range(len(blocks))
            if not store.path(keys[k]).exists()
        }
        pending = list(range(len(blocks)))
        end, polls, theirs = time.monotonic() + self.timeout_s, 0, set()
        try:
            while pending:
                for k in [k for k in pending if store.path(keys[k]).exists()]:
                    out[k] = store.load(keys[k])
                    if out[k] is None:
                        raise RuntimeError(f"ion block {k + 1} of {len(blocks)}: unreadable result in {self.store_dir}")
                    pending.remove(k)
                    if done is not None:
                        done(k)
                if not pending:
                    break
                if self.help:  # take the last block nobody has claimed (workers start from the first)
                    mine = None
                    for k in reversed(pending):
                        if k not in theirs:
                            if _claim(keys[k], owner):
                                mine = k
                                break
                            theirs.add(k)  # a job holds it; if its worker dies, the job is redelivered
                    if mine is not None:
                        _compute_block(ref, args[mine], store, keys[mine], f"caller {owner}")
                        continue
                polls += 1
                for k in pending if polls % 10 == 0 else ():  # a failed job: about once a second
                    # Ours, or the one holding the claim (e.g. sent by an earlier run of this caller).
                    holder = _holder(keys[k])
                    ids = {jobs[k].id} if k in jobs else set()
                    if holder and not holder.startswith("caller-"):
                        ids.add(holder)
                    for job in map(celery_app.AsyncResult, ids):
                        if job.state == "FAILURE":
                            _release(keys[k])  # a later run may try this block again
                            exc = job.result
                            raise RuntimeError(
                                f"ion block {k + 1} of {len(blocks)} failed on a worker: {type(exc).__name__}: {exc}"
                            )
                if time.monotonic() > end:
                    raise TimeoutError(
                        f"{len(pending)} ion block(s) not done after {self.timeout_s:.0f} s: are the workers running?"
                    )
                time.sleep(self.poll_s)
        finally:
            # Jobs not started yet (their blocks were done here) need not occupy a worker.
            waiting = [job.id for job in jobs.values() if not job.ready()]
            if waiting:
                _retried(celery_app.control.revoke, waiting)
            jobs.clear()  # unsubscribe from their results now, while Redis is there
        return out


def submit_batch(jobs, params: dict, cache_dir, timestep_fs, temperature_K, progress=None, timeout_s: float = 24 * 3600) -> list[dict]:
    """Send each (name, path, out_json) of a batch to the workers; gather their rows
    (the rows of :func:`iondiff_core.batch.analyse_one`, each with its "name").

    Paths are sent as given: the workers must see the simulations and ``out_json`` at the
    same paths (the shared mounts of the deployment). Ctrl-C revokes the jobs not done.
    """
    from pathlib import Path

    pending = [
        (analyse_simulation.delay(path, out_json, params, cache_dir, timestep_fs, temperature_K), name, path, out_json)
        for name, path, out_json in jobs
    ]
    rows = []
    try:
        for k, (res, name, path, out_json) in enumerate(pending, 1):
            try:
                row = res.get(timeout=timeout_s, propagate=True)
            except Exception as exc:  # noqa: BLE001 - a lost worker or a timeout is one failed row
                row = {"path": path, "error": f"worker: {type(exc).__name__}: {exc}"}
            if not row.get("error") and not Path(out_json).exists():
                row["error"] = (
                    f"a worker wrote {out_json}, which this machine does not see: "
                    "give an --out-dir on the data folder the workers share"
                )
            rows.append({"name": name, **row})
            if progress is not None:
                progress("batch", k / len(pending), f"{name}: {row['error'] or 'ok'}")
    except KeyboardInterrupt:
        for res, *_ in pending:
            if not res.ready():
                res.revoke()
        raise
    finally:
        try:
            celery_app.backend.result_consumer.stop()  # no reconnect loop after the batch
        except Exception:  # noqa: BLE001
            pass
    return rows
