"""Background jobs in the default mode (no Redis): a queue, a time limit, and a manager
that only ever stops the processes it started.

Dash's :class:`~dash.DiskcacheManager` starts one process per Run click and keeps the
results in a disk cache (``<data>/jobs``) that every gunicorn worker shares.
:class:`JobManager` adds to it:

* **a concurrency limit shared by every web process**: a job holds one of
  ``IONDIFF_MAX_JOBS`` slots (an ``flock`` on ``<data>/jobs/slots/slot-<i>.lock``, which
  the kernel releases when the process ends, however it ends) while it analyses. Jobs
  beyond that wait in arrival order (a ticket file each under ``<data>/jobs/slots/queue``),
  showing ``queued (position k)``; more than ``IONDIFF_MAX_QUEUED`` waiting are refused at
  once with a message. A waiting job holds no data: it sleeps until a slot is free.
* **a time limit** (``IONDIFF_JOB_TIME_LIMIT_S``) per analysis: a watchdog thread in the
  job process records the failure and ends the process; the page's polls check it too (a
  process stuck where no Python thread can run is stopped by the next poll).
* **a dead job reported as failed**: a job process that ended without a result (killed
  by the OOM killer or ``kill -9``) is reported on the page with the reason, instead of
  the page freezing on its last progress line.
* **ownership**: a job handle names a process id; :meth:`JobManager.terminate_job` acts
  only on a process this deployment started (its id and start time are recorded in the
  cache when it starts), so a forged handle cannot make the server kill another process.
* **a corrupted cache survived**: :func:`open_cache` checks ``cache.db`` at start-up; a
  damaged one is moved aside (logged) and a new one is created.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import diskcache
from dash import DiskcacheManager
from dash.background_callback.managers.diskcache_manager import _make_job_fn

log = logging.getLogger(__name__)

#: Seconds between a waiting job's looks at the slots.
POLL_S = 0.5
#: A poll stops a job this long past its time limit if its own watchdog did not.
GRACE_S = 30.0
#: A job process that cannot open the jobs cache within this long ends (reported failed by the
#: next poll): a fork taken while another thread of the web process was inside SQLite leaves
#: SQLite's mutexes locked in the child for ever.
STARTUP_S = 120.0
_RECORD = "iondiff-job:{}"
#: Suffix of the key holding a job's last progress value (the progress key is emptied by each poll).
_LAST = "-last-progress"


def failure(message: str) -> dict:
    """A job result that the page shows as a failure (Dash's error form, no traceback)."""
    return {"background_callback_error": {"msg": message, "tb": ""}}


# --------------------------------------------------------------------------- the cache
@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sound(db: Path) -> str | None:
    """None if the SQLite file ``db`` is readable and passes a quick check, else why not."""
    if not db.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as c:
            verdict = c.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as exc:
        return str(exc)
    return None if verdict == "ok" else verdict


def open_cache(folder: Path) -> diskcache.Cache:
    """The jobs' disk cache in ``folder``. A damaged ``cache.db`` (junk, a torn write, a
    full disk) is moved aside to ``corrupt-<time>/`` with its ``-wal``/``-shm`` files,
    logged, and a new cache is created: running jobs' results are lost, the app starts.
    Several processes starting at once repair it once (under a lock file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".open.lock"):
        db = folder / "cache.db"
        reason = _sound(db)
        if reason is None:
            try:
                return diskcache.Cache(str(folder))
            except sqlite3.Error as exc:
                reason = str(exc)
        aside = folder / f"corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        aside.mkdir()
        for name in ("cache.db", "cache.db-wal", "cache.db-shm"):
            if (folder / name).exists():
                os.replace(folder / name, aside / name)
        log.error("the jobs cache %s was damaged (%s): moved aside to %s and recreated", db, reason, aside)
        return diskcache.Cache(str(folder))


# --------------------------------------------------------------------------- slots and queue
def _alive(pid: int, since: float | None = None) -> bool:
    """Whether process ``pid`` runs (not a zombie), and started no later than ``since``."""
    import psutil

    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and (since is None or p.create_time() <= since + 1)
    except psutil.Error:
        return False


class Slots:
    """``n`` job slots shared by every process using ``folder``, taken in arrival order."""

    def __init__(self, folder: Path, n: int):
        self.folder = Path(folder)
        self.queue = self.folder / "queue"
        self.queue.mkdir(parents=True, exist_ok=True)
        self.n = n

    def waiting(self) -> list[Path]:
        """The live tickets, oldest first (tickets of processes that died are removed)."""
        out = []
        for t in sorted(self.queue.glob("*.ticket")):
            try:
                ns, pid = t.stem.split("-")
                live = _alive(int(pid), int(ns) / 1e9)
            except ValueError:
                live = False
            if live:
                out.append(t)
            else:
                t.unlink(missing_ok=True)
        return out

    def _try(self):
        for i in range(self.n):
            f = open(self.folder / f"slot-{i}.lock", "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            return f
        return None

    def take(self, on_wait=None):
        """Wait for a free slot; ``on_wait(position)`` (1 = next) while waiting. Returns
        the open lock file: the slot is free again when it is closed or the process ends."""
        ticket = self.queue / f"{time.time_ns():020d}-{os.getpid()}.ticket"
        ticket.touch()
        last = None
        try:
            while True:
                ahead = self.waiting()
                position = ahead.index(ticket) + 1 if ticket in ahead else 1
                if position <= self.n and (held := self._try()) is not None:
                    return held
                if position != last and on_wait is not None:
                    on_wait(position)
                    last = position
                time.sleep(POLL_S)
        finally:
            ticket.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the time limit
class _Watchdog:
    """In a job process: ends it (after recording the failure) when an analysis runs past
    the time limit. :func:`restart_clock` starts a new analysis's clock (a queue of runs)."""

    current: "_Watchdog | None" = None  # this job process's watchdog
    current_record = None  # records when the current analysis started (for the polls' backstop)
    slot = None  # the slot's lock file, held while the job process lives

    def __init__(self, limit_s: float, expire):
        self.limit_s = limit_s
        self.expire = expire
        self.deadline = time.monotonic() + limit_s
        threading.Thread(target=self._watch, daemon=True, name="job-time-limit").start()

    def restart(self):
        self.deadline = time.monotonic() + self.limit_s

    def cancel(self):
        self.deadline = float("inf")

    def _watch(self):
        while (left := self.deadline - time.monotonic()) > 0:
            time.sleep(min(left, 1.0) if left < float("inf") else 1.0)
            if self.deadline - time.monotonic() <= 0:
                break
        self.expire()


def restart_clock() -> None:
    """A new analysis starts in this job (the queue's next run): its time limit counts from now."""
    if _Watchdog.current is not None:
        _Watchdog.current.restart()
        if _Watchdog.current_record is not None:
            _Watchdog.current_record()


def _kill_children() -> None:
    import psutil

    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()


def queued_progress(make):
    """Decorator for a background callback: ``make(position, *callback_args)`` gives its
    progress outputs while the job waits for a slot (e.g. ``("0", "queued (position 2)")``)."""

    def mark(fn):
        fn.queued_progress = make
        return fn

    return mark


def failed_result(make):
    """Decorator for a background callback: ``make(reason, last_progress)`` gives its
    output when the job ends without one (died, time limit); ``last_progress`` is the last
    progress value it reported, or None. Without it, the failure goes to the callback's
    ``on_error`` as a :class:`~dash.exceptions.BackgroundCallbackError` whose message is the reason."""

    def mark(fn):
        fn.failed_result = make
        return fn

    return mark


# --------------------------------------------------------------------------- the manager
class JobManager(DiskcacheManager):
    """Dash's disk-cache manager with a shared queue, a time limit, dead-job reports and
    process ownership (see the module's docstring)."""

    def __init__(self, folder: Path, max_jobs: int = 2, time_limit_s: float = 21600.0, max_queued: int = 20):
        self.folder = Path(folder)  # set first: the base class registers the app's job functions
        self.slots = Slots(self.folder / "slots", max_jobs)
        self.time_limit_s = float(time_limit_s)
        self.max_queued = max_queued
        # The job processes this web process started, ended and closed through multiprocess
        # itself: reaped by psutil instead, multiprocess never sees them exit and keeps two
        # pipe descriptors open per job (issue 11: 9 -> 410 descriptors after 200 analyses).
        self._processes: dict[int, object] = {}
        self._plock = threading.Lock()
        super().__init__(open_cache(folder))

    # The jobs this deployment started: pid -> its start time, result key and stop mark
    # (set by the web process that started it); "<record>:run" -> when its analysis started.
    def _record(self, job):
        """``(pid, record)`` if ``job`` names a process this deployment started, else None."""
        try:
            pid = int(str(job))
        except (TypeError, ValueError):
            return None
        if pid <= 0:
            return None
        rec = self.handle.get(_RECORD.format(pid))
        return (pid, rec) if isinstance(rec, dict) else None

    def _same_process(self, pid: int, rec: dict) -> bool:
        """The process ``pid`` is still the one recorded (not a later one given the same id)."""
        import psutil

        try:
            return abs(psutil.Process(pid).create_time() - rec["created"]) < 0.5
        except (psutil.Error, KeyError, TypeError):
            return False

    def call_job_fn(self, key, job_fn, args, context):
        import psutil
        from multiprocess import Process

        self._close_finished()
        if len(self.slots.waiting()) >= self.max_queued:
            self.handle.set(key, failure(
                f"the server is busy: {self.max_queued} analyses are already waiting for one of "
                f"{self.slots.n} slots (IONDIFF_MAX_QUEUED, IONDIFF_MAX_JOBS); try again later"))
            return 0
        process = Process(target=job_fn, args=(key, self._make_progress_key(key), args, context))
        self.handle.close()  # no connection of this thread crosses the fork (see job_fn)
        process.start()
        with self._plock:
            self._processes[process.pid] = process
        try:
            created = psutil.Process(process.pid).create_time()
        except psutil.Error:  # already over; nothing can be stopped
            created = None
        fn_key = next((k for k, f in self.func_registry.items() if f is job_fn), None)
        self.handle.set(_RECORD.format(process.pid), {"created": created, "key": key, "fn": fn_key, "started": time.time()},
                        expire=self.time_limit_s + 7 * 86400)
        return process.pid

    def failed(self, fn_key, result_key: str, reason: str, cache=None):
        """The result of a job that ended without one: the callback's own
        (:func:`failed_result`), else Dash's error form (to ``on_error``)."""
        make = getattr(self.func_registry.get(fn_key), "failed_result", None)
        if make is None:
            return failure(reason)
        try:
            return make(reason, (cache or self.handle).get(result_key + _LAST))
        except Exception:  # noqa: BLE001 - a failure report must not fail
            log.exception("the failed_result of a job failed")
            return failure(reason)

    def terminate_job(self, job):
        import psutil

        if job is None:
            return
        found = self._record(job)
        if found is None:
            if str(job) != "0":
                log.warning("refused to stop process %.20r: not a job this server started", str(job))
            return
        pid, rec = found
        if self.handle.get(rec.get("key"), None) is None:  # stopped before its result: cancelled
            self.handle.set(_RECORD.format(pid), {**rec, "stopped": True}, expire=self.time_limit_s + 7 * 86400)
        with self._plock:
            mine = self._processes.pop(pid, None)
        with self.handle.transact():
            if not self._same_process(pid, rec):
                if mine is not None:
                    self._close(mine)
                return
            with contextlib.suppress(psutil.Error):
                for proc in psutil.Process(pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        proc.kill()
            if mine is not None:  # started here: ended, reaped and closed through multiprocess
                if mine.is_alive():
                    mine.kill()
                mine.join(1)
                self._close(mine)
                return
            process = psutil.Process(pid)  # started by another web process of this deployment
            with contextlib.suppress(psutil.Error):
                process.kill()
            with contextlib.suppress(psutil.Error):
                process.wait(1)

    def _close(self, process) -> None:
        """Release a job process's descriptors once it has ended (later if it has not yet)."""
        if process.exitcode is None:
            with self._plock:
                self._processes[process.pid] = process
        else:
            process.close()

    def _close_finished(self) -> None:
        with self._plock:
            done = [p for p in self._processes.values() if not p.is_alive()]
            for p in done:
                del self._processes[p.pid]
        for p in done:
            self._close(p)

    def terminate_unhealthy_job(self, job):
        found = self._record(job)
        if found is not None and not self.job_running(job):
            self.terminate_job(job)
            return True
        return False

    def job_running(self, job):
        found = self._record(job)
        if found is None:
            return False
        pid, rec = found
        if not self._same_process(pid, rec) or not _alive(pid):
            return False
        run = self.handle.get(_RECORD.format(pid) + ":run")  # the job's own watchdog should have ended it; a poll is the backstop
        if run is not None and time.time() - run > self.time_limit_s + GRACE_S:
            self.handle.set(rec["key"], self.failed(rec.get("fn"), rec["key"], self.limit_message()))
            log.error("job %s ran past its time limit and was stopped by a poll", pid)
            self.terminate_job(pid)
            return False
        return True

    def get_result(self, key, job):
        result = super().get_result(key, job)
        if result is not self.UNDEFINED:
            return result
        found = self._record(job)
        if found is None or found[1].get("stopped") or self.job_running(job):
            return result
        # Ended with no result: unless it wrote one just before it ended, it died.
        result = self.handle.get(key, self.UNDEFINED)
        if result is self.UNDEFINED:
            log.error("job process %s ended without a result", found[0])
            self.handle.set(_RECORD.format(found[0]), {**found[1], "stopped": True}, expire=86400)
            self.clear_cache_entry(self._make_progress_key(key))
            return self.failed(found[1].get("fn"), key, "the analysis process ended without a result (it was killed: out "
                               "of memory, or stopped on the server); nothing was saved. Try again, or ask the administrator")
        self.clear_cache_entry(key)
        return result

    def limit_message(self) -> str:
        return (f"stopped after {self.time_limit_s:g} s, the longest an analysis may run on this server "
                f"(IONDIFF_JOB_TIME_LIMIT_S); nothing was saved")

    def make_job_fn(self, fn, progress, key=None):
        queued = getattr(fn, "queued_progress", None) if progress else None
        slots, manager = self.slots, self

        def job_fn(result_key, progress_key, args, context):
            startup = _Watchdog(STARTUP_S, lambda: os._exit(4))  # before any SQLite call (see STARTUP_S)
            # A connection of its own: the one inherited over fork is never used (closing it
            # in the child stalled a job for up to the SQLite timeout, 60 s).
            cache = diskcache.Cache(str(manager.folder))
            cache.get(progress_key)
            startup.cancel()
            listed = args if isinstance(args, (list, tuple)) else [args]

            def waiting(position):
                if queued is not None:
                    cache.set(progress_key, list(queued(position, *listed)))

            _Watchdog.slot = slots.take(waiting)  # held while this process lives (closed when it ends)
            record = _RECORD.format(os.getpid())

            def clock():  # when the current analysis started, for the polls' backstop
                cache.set(record + ":run", time.time(), expire=manager.time_limit_s + 7 * 86400)

            def expire():
                cache.set(result_key, manager.failed(key, result_key, manager.limit_message(), cache))
                log.error("job %s ran past its time limit (%g s) and was stopped", os.getpid(), manager.time_limit_s)
                _kill_children()
                os._exit(3)

            def tracked(*a, **kw):  # the last progress value kept for a failure report
                if not progress:
                    return fn(*a, **kw)
                set_progress = a[0]

                def both(value):
                    set_progress(value)
                    cache.set(result_key + _LAST, value if isinstance(value, (list, tuple)) else [value], expire=86400)

                return fn(both, *a[1:], **kw)

            clock()
            _Watchdog.current = _Watchdog(manager.time_limit_s, expire)
            _Watchdog.current_record = clock
            _make_job_fn(tracked, cache, progress)(result_key, progress_key, args, context)

        job_fn.failed_result = getattr(fn, "failed_result", None)
        return job_fn
