"""The results library: one SQLite row per analysed simulation (material, species,
temperature, family, tags, flags, descriptors) pointing at its files in the data folder,
and the upkeep of that folder.

``flags`` says when a result must not be trusted as a whole (e.g. a damaged file of
which only the complete frames were analysed); the library shows it on the row.

Result files are written first (to a temporary name, then renamed) and the row is
inserted last, so a job killed half-way never leaves an entry without its files.
Deleting an entry deletes the files only it uses: its result, its upload folder and
its stage-cache files (never a file picked on the server: those are only read).
:func:`cleanup` applies the retention and quota settings and removes orphans.

A damaged ``library.sqlite`` is detected when opened, moved aside to
``library.sqlite.corrupt-<UTC time>`` and replaced by an empty library
(:attr:`Library.recovered`); a full disk is an :class:`DiskFullError` with a message
for the page, never a half-written file.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from iondiff_core.errors import InputError

log = logging.getLogger("iondiff.storage")

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    material TEXT,
    family TEXT,
    species TEXT,
    temperature_K REAL,
    tags TEXT DEFAULT '',
    sha256 TEXT NOT NULL,
    params_key TEXT NOT NULL,
    params TEXT NOT NULL,
    trajectory TEXT NOT NULL,
    result TEXT NOT NULL,
    descriptors TEXT NOT NULL,
    created REAL NOT NULL,
    flags TEXT DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS entries_key ON entries (sha256, params_key);
"""

#: Columns added after the first release, with their SQL type (added to older databases on open).
#: ``opened``: when the entry was last opened (s since the epoch; NULL: never since ``created``).
#: ``stage_files``: JSON list of the stage-cache file names its analysis read or wrote (NULL: not recorded).
MIGRATIONS = {"flags": "TEXT DEFAULT ''", "opened": "REAL", "stage_files": "TEXT"}

#: Fields a user may edit in the library, and the hottest / coldest temperature accepted (K).
EDITABLE = ("name", "material", "temperature_K", "tags")
MAX_TEMPERATURE_K = 10000.0

#: Files in the data folder that no entry uses are removed once they are this old (s):
#: younger ones may belong to an upload being analysed or a job not finished yet.
ORPHAN_AGE_S = 24 * 3600.0
#: :func:`maybe_cleanup` runs :func:`cleanup` at most once per this interval (s), over all processes.
CLEANUP_INTERVAL_S = 600.0

DISK_FULL = ("the server's data disk is full: {what} could not be saved (nothing half-written was kept). Ask the "
             "server's administrator to free space, or to set IONDIFF_MAX_DATA_GB or IONDIFF_RETENTION_DAYS so that "
             "old results are removed")


class DiskFullError(InputError):
    """No space (or quota) left on the data folder's disk; the message is for the page."""


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == 13 or "disk is full" in str(exc)  # SQLITE_FULL
    return False


@contextmanager
def disk_full_as_input_error(what: str):
    """Turn "no space left" (a file write, SQLite) inside the block into :class:`DiskFullError`."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as exc:
        if _disk_full(exc):
            log.error("data disk full while saving %s: %s", what, exc)
            raise DiskFullError(DISK_FULL.format(what=what)) from None
        raise


@dataclass
class Entry:
    id: str
    name: str
    material: str
    family: str
    species: str
    temperature_K: float | None
    tags: str
    sha256: str
    params_key: str
    params: dict
    trajectory: str
    result: str
    descriptors: dict
    created: float
    flags: str = ""
    opened: float | None = None
    stage_files: list[str] | None = None

    @property
    def last_used(self) -> float:
        """When the entry was last opened, else created (s since the epoch)."""
        return self.opened if self.opened is not None else self.created

    def load_result(self) -> dict:
        return json.loads(Path(self.result).read_text())


def write_atomic(path: Path, text: str, what: str = "the result") -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename.

    On any failure the temporary file is removed and ``path`` keeps its old content;
    a full disk raises :class:`DiskFullError` naming ``what`` (never a server path).
    """
    path = Path(path)
    with disk_full_as_input_error(what):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


# ------------------------------------------------------------------ damaged library
#: SQLite's result codes for a damaged file: SQLITE_CORRUPT, SQLITE_NOTADB.
_CORRUPT_CODES = (11, 26)
#: (database path, inode) pairs this process has checked with ``PRAGMA quick_check``.
_CHECKED: set[tuple[str, int]] = set()
_CHECK_LOCK = threading.Lock()


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    if getattr(exc, "sqlite_errorcode", None) in _CORRUPT_CODES:
        return True
    text = str(exc).lower()
    return not isinstance(exc, sqlite3.OperationalError) and ("not a database" in text or "malformed" in text)


class LibraryCorrupt(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found damage."""


def corrupt_copies(db_path: Path) -> list[str]:
    """Names of the damaged libraries moved aside next to ``db_path``, oldest first."""
    db_path = Path(db_path)
    return sorted(p.name for p in db_path.parent.glob(f"{db_path.name}.corrupt-*") if not p.name.endswith(("-wal", "-shm")))


def recovery_message(names: list[str]) -> str:
    """What the library page says while a damaged library lies moved aside."""
    return (f"The library database was damaged and could not be read. It was moved aside as {', '.join(names)} in the "
            "server's data folder and a new, empty library was started: runs analysed before are not listed (their "
            "result files are kept, and files that no entry uses are not removed while the damaged copy is there). Ask "
            "the server's administrator to recover what they can from the damaged copy and then delete it, which also "
            "removes this message.")


class Library:
    """Access to the library database (safe for several processes on one host: WAL, short transactions).

    ``recovered``: the name the damaged database was moved aside to, when this open
    found it damaged (see :func:`corrupt_copies` for every such copy).
    """

    def __init__(self, db_path: Path, recheck: bool = False):
        self.db_path = Path(db_path)
        self.data_dir = self.db_path.parent
        self.recovered: str | None = None
        try:
            self._open(recheck)
        except sqlite3.DatabaseError as exc:
            if not (isinstance(exc, LibraryCorrupt) or _is_corrupt(exc)):
                raise
            self.recovered = self._move_aside(exc)
            self._open(False)

    def _open(self, recheck: bool) -> None:
        with self._connect() as c:
            self._check(c, recheck)
            c.executescript(SCHEMA)
            have = {r["name"] for r in c.execute("PRAGMA table_info(entries)")}
            for col, sql in MIGRATIONS.items():
                if col not in have:
                    c.execute(f"ALTER TABLE entries ADD COLUMN {col} {sql}")

    def _check(self, c, recheck: bool) -> None:
        """``PRAGMA quick_check`` once per process and database file (a junk or truncated file fails it)."""
        try:
            ident = (str(self.db_path), self.db_path.stat().st_ino)
        except FileNotFoundError:
            return
        with _CHECK_LOCK:
            if ident in _CHECKED and not recheck:
                return
        rows = [r[0] for r in c.execute("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            raise LibraryCorrupt("; ".join(map(str, rows[:3])))
        with _CHECK_LOCK:
            _CHECKED.add(ident)

    def _move_aside(self, why: Exception) -> str | None:
        """Rename the damaged database (and its WAL files) to ``<name>.corrupt-<UTC time>``.

        Under a file lock, after checking again: of several processes finding the damage
        at once, one moves it and the others open the new library."""
        import fcntl

        with open(self.db_path.with_name(self.db_path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                try:
                    self._open(True)
                    return None  # another process replaced it already
                except sqlite3.DatabaseError as exc:
                    if not (isinstance(exc, LibraryCorrupt) or _is_corrupt(exc)):
                        raise
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                dest = self.db_path.with_name(f"{self.db_path.name}.corrupt-{stamp}")
                n = 1
                while dest.exists():
                    n += 1
                    dest = self.db_path.with_name(f"{self.db_path.name}.corrupt-{stamp}-{n}")
                os.replace(self.db_path, dest)
                for suffix in ("-wal", "-shm"):  # a WAL left beside a new database would be replayed into it
                    side = Path(f"{self.db_path}{suffix}")
                    if side.exists():
                        os.replace(side, Path(f"{dest}{suffix}"))
                log.error("library %s is damaged (%s): moved aside to %s; a new, empty library was started",
                          self.db_path, why, dest.name)
                return dest.name
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def _connect(self):
        conn = sqlite3.connect(self.db_path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            with disk_full_as_input_error("the library entry"):
                # WAL: readers and one writer at once, for processes of ONE host (never a network file system).
                conn.execute("PRAGMA journal_mode=WAL")
                yield conn
                conn.commit()
        finally:
            conn.close()

    @staticmethod
    def _entry(row) -> Entry:
        d = dict(row)
        d["params"] = json.loads(d["params"])
        d["descriptors"] = json.loads(d["descriptors"])
        d["stage_files"] = json.loads(d["stage_files"]) if d.get("stage_files") is not None else None
        return Entry(**d)

    def add(self, *, name, material, family, species, temperature_K, sha256, params_key, params, trajectory, result, descriptors,
            flags: str = "", stage_files: list[str] | None = None) -> Entry:
        """Insert (or replace) the entry of one (trajectory, parameters); files must exist.

        ``flags``: "" for a sound result, else one sentence the library shows on the row
        (e.g. "partial: the 812 complete frames of a damaged XDATCAR.gz").
        ``stage_files``: names of the stage-cache files (in ``<data>/stages``) its analysis
        read or wrote, deleted with it when no other entry uses them.
        A full disk raises :class:`DiskFullError` and removes ``result`` if no entry uses it.
        """
        if not Path(result).exists() or not Path(trajectory).exists():
            raise FileNotFoundError("the result and trajectory files must be written before the entry")
        eid = uuid.uuid4().hex[:12]
        stages = None if stage_files is None else json.dumps(sorted({Path(f).name for f in stage_files}))
        try:
            with self._connect() as c:
                c.execute("DELETE FROM entries WHERE sha256 = ? AND params_key = ?", (sha256, params_key))
                c.execute(
                    "INSERT INTO entries (id, name, material, family, species, temperature_K, tags, sha256, params_key, params,"
                    " trajectory, result, descriptors, created, flags, stage_files) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (eid, name, material, family, species, temperature_K, "", sha256, params_key, json.dumps(params),
                     str(trajectory), str(result), json.dumps(descriptors), time.time(), flags or "", stages),
                )
        except DiskFullError:
            if str(result) not in self._in_use()["results"]:
                Path(result).unlink(missing_ok=True)
            raise
        return self.get(eid)

    def get(self, eid: str) -> Entry | None:
        with self._connect() as c:
            row = c.execute("SELECT * FROM entries WHERE id = ?", (eid,)).fetchone()
        return self._entry(row) if row else None

    def find(self, sha256: str, params_key: str) -> Entry | None:
        with self._connect() as c:
            row = c.execute("SELECT * FROM entries WHERE sha256 = ? AND params_key = ?", (sha256, params_key)).fetchone()
        return self._entry(row) if row else None

    def list(self) -> list[Entry]:
        with self._connect() as c:
            rows = c.execute("SELECT * FROM entries ORDER BY created DESC").fetchall()
        return [self._entry(r) for r in rows]

    def opened(self, eid: str, when: float | None = None) -> None:
        """Record that the entry was opened now (retention and the quota remove the least recently opened first)."""
        with self._connect() as c:
            c.execute("UPDATE entries SET opened = ? WHERE id = ?", (time.time() if when is None else when, eid))

    def set_stage_files(self, eid: str, stage_files: list[str]) -> None:
        """Record the stage-cache files the entry's analysis uses (e.g. after they were rebuilt)."""
        with self._connect() as c:
            c.execute("UPDATE entries SET stage_files = ? WHERE id = ?",
                      (json.dumps(sorted({Path(f).name for f in stage_files})), eid))

    def update(self, eid: str, **fields) -> Entry:
        """Change the user-editable fields of an entry (``EDITABLE``); returns the entry.

        Raises ValueError with a message for the page when a value is not acceptable:
        an empty name or material, a temperature that is not a positive number of K.
        Tags are comma-separated; blanks and repeats are dropped.
        """
        bad = set(fields) - set(EDITABLE)
        if bad:
            raise ValueError(f"not editable: {', '.join(sorted(bad))}")
        clean = {k: clean_field(k, v) for k, v in fields.items()}
        if clean:
            with self._connect() as c:
                sets = ", ".join(f"{k} = ?" for k in clean)
                if c.execute(f"UPDATE entries SET {sets} WHERE id = ?", (*clean.values(), eid)).rowcount == 0:
                    raise ValueError(f"entry {eid} is no longer in the library")
        return self.get(eid)

    # -------------------------------------------------------------- files of entries
    @property
    def uploads(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def stages(self) -> Path:
        return self.data_dir / "stages"

    def upload_of(self, trajectory: str) -> str | None:
        """The upload folder's name (under ``<data>/uploads``) a trajectory came from; None for a server pick."""
        try:
            rel = Path(os.path.abspath(trajectory)).relative_to(os.path.abspath(self.uploads))
        except ValueError:
            return None
        return rel.parts[0] if rel.parts and rel.parts[0] not in (".", "..") else None

    def _in_use(self) -> dict:
        """What the entries use: result paths, upload folder names, stage file names, and
        whether some entry's stage files are unknown (an entry from before they were recorded)."""
        with self._connect() as c:
            rows = c.execute("SELECT trajectory, result, stage_files FROM entries").fetchall()
        stages, unknown = set(), False
        for r in rows:
            if r["stage_files"] is None:
                unknown = True
            else:
                stages.update(json.loads(r["stage_files"]))
        return {"results": {r["result"] for r in rows}, "uploads": {u for r in rows if (u := self.upload_of(r["trajectory"]))},
                "stages": stages, "stages_unknown": unknown}

    def delete(self, eid: str) -> int:
        """Remove the entry and the files only it used: its result, its upload folder and its
        stage-cache files. A trajectory picked on the server is never touched. Returns the
        bytes freed."""
        e = self.get(eid)
        if e is None:
            return 0
        with self._connect() as c:
            c.execute("DELETE FROM entries WHERE id = ?", (eid,))
        used = self._in_use()
        freed = 0
        if e.result not in used["results"]:
            freed += _remove(Path(e.result))
        upload = self.upload_of(e.trajectory)
        if upload is not None and upload not in used["uploads"]:
            freed += _remove(self.uploads / upload)
        for name in e.stage_files or ():
            if name not in used["stages"] and Path(name).name == name:
                freed += _remove(self.stages / name)
        log.info("deleted library entry %s (%s): %.1f MB of files removed", eid, e.name, freed / 1e6)
        return freed


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (symbolic links count as nothing)."""
    try:
        if path.is_symlink() or not path.is_dir():
            return path.lstat().st_size if not path.is_symlink() else 0
    except FileNotFoundError:
        return 0
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except FileNotFoundError:
                continue
            total += st.st_size
    return total


def _remove(path: Path) -> int:
    """Delete a file or a folder (never following a symbolic link); returns the bytes freed."""
    size = _size(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
        return 0
    return size


def _newest_mtime(path: Path) -> float:
    """The latest modification time of a file, or of a folder and everything in it."""
    try:
        newest = path.lstat().st_mtime
    except FileNotFoundError:
        return 0.0
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for f in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, f)).st_mtime)
                except FileNotFoundError:
                    pass
    return newest


# ------------------------------------------------------------------ retention and quota
def cleanup(cfg, now: float | None = None, keep: tuple[str, ...] = ()) -> list[str]:
    """Apply the storage settings of ``cfg`` to its data folder; returns (and logs) what was removed.

    1. Entries not opened for ``cfg.retention_days`` days (0: no limit) are deleted with their files.
    2. While the data folder holds more than ``cfg.max_data_bytes`` (0: no quota), the least
       recently opened entry is deleted (never those in ``keep``, e.g. the one just analysed).
    3. Orphans older than :data:`ORPHAN_AGE_S`: upload folders, result files and stage-cache
       files no entry uses, and temporary files left by killed processes. Skipped while a
       damaged library lies moved aside (its entries may use them) and, for stage files,
       while some entry does not list its own.
    """
    now = time.time() if now is None else now
    lib = Library(cfg.library_db)
    removed: list[str] = []
    entries = sorted((e for e in lib.list() if e.id not in keep), key=lambda e: e.last_used)
    if cfg.retention_days > 0:
        limit = now - cfg.retention_days * 86400.0
        for e in [e for e in entries if e.last_used < limit]:
            lib.delete(e.id)
            entries.remove(e)
            removed.append(f"entry {e.id} ({e.name}): not opened for {(now - e.last_used) / 86400:.1f} days "
                           f"(IONDIFF_RETENTION_DAYS={cfg.retention_days:g})")
    protect = corrupt_copies(cfg.library_db)
    if protect:
        log.warning("orphan files are kept while the damaged library %s lies in the data folder", ", ".join(protect))
    else:
        removed += _remove_orphans(cfg, lib, now)
    if cfg.max_data_bytes > 0:
        size = _size(cfg.data_dir)
        while size > cfg.max_data_bytes and entries:
            e = entries.pop(0)
            freed = lib.delete(e.id)
            removed.append(f"entry {e.id} ({e.name}): the data folder held {size / 1e9:.3f} GB, over "
                           f"IONDIFF_MAX_DATA_GB={cfg.max_data_bytes / 1024**3:g}; least recently opened")
            size -= freed
        if size > cfg.max_data_bytes:
            log.warning("the data folder holds %.3f GB, over IONDIFF_MAX_DATA_GB=%g, with no library entry left to remove",
                        size / 1e9, cfg.max_data_bytes / 1024**3)
    for what in removed:
        log.info("cleanup removed %s", what)
    return removed


def _remove_orphans(cfg, lib: Library, now: float) -> list[str]:
    used = lib._in_use()
    old = now - ORPHAN_AGE_S
    removed = []
    candidates = []
    # Only what this app writes there: upload folders, result JSON, stage arrays, and temporary files.
    if cfg.uploads.is_dir():
        candidates += [(p, "upload") for p in cfg.uploads.iterdir()
                       if (p.is_dir() and not p.is_symlink() and p.name not in used["uploads"]) or p.name.endswith((".tmp", ".part"))]
    if cfg.results.is_dir():
        results = {os.path.realpath(r) for r in used["results"]}
        candidates += [(p, "result") for p in cfg.results.iterdir()
                       if p.name.endswith((".json", ".tmp")) and os.path.realpath(p) not in results]
    if cfg.stages.is_dir():
        candidates += [(p, "stage file") for p in cfg.stages.iterdir() if p.name.endswith(".tmp") or (
            p.name.endswith((".npz", ".npy")) and not used["stages_unknown"] and p.name not in used["stages"])]
    for path, kind in candidates:
        if _newest_mtime(path) < old:
            _remove(path)
            removed.append(f"orphan {kind} {path.name}: used by no library entry, older than {ORPHAN_AGE_S / 3600:g} h")
    return removed


def maybe_cleanup(cfg, now: float | None = None, interval_s: float = CLEANUP_INTERVAL_S, keep: tuple[str, ...] = ()) -> list[str] | None:
    """:func:`cleanup`, unless any process of this data folder ran it in the last ``interval_s`` seconds
    (the time is kept in ``<data>/cleanup.stamp``). Never raises: upkeep must not fail an analysis."""
    now = time.time() if now is None else now
    stamp = cfg.data_dir / "cleanup.stamp"
    try:
        fd = os.open(stamp, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+") as f:
            import fcntl

            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # another process is cleaning up right now
            try:
                last = float(f.read().strip() or "-inf")
            except ValueError:
                last = float("-inf")
            if now - last < interval_s:
                return None
            f.seek(0)
            f.truncate()
            f.write(repr(now))
            f.flush()
            return cleanup(cfg, now, keep)
    except Exception:  # noqa: BLE001 - logged; the next call tries again
        log.exception("cleanup of the data folder failed")
        return None


def clean_field(name: str, value):
    """The stored form of an edited field, or ValueError saying what is wrong with it."""
    if name in ("name", "material"):
        text = "" if value is None else str(value).strip()
        if not text:
            raise ValueError(f"the {name} cannot be empty")
        return text[:200]
    if name == "temperature_K":
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # unknown temperature: the run stays out of the Arrhenius fit
        try:
            t = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"temperature {value!r} is not a number (K)") from None
        if not (0 < t <= MAX_TEMPERATURE_K):
            raise ValueError(f"temperature {t:g} K is outside (0, {MAX_TEMPERATURE_K:g}] K")
        return t
    if name == "tags":
        tags = "" if value is None else str(value)
        return ",".join(dict.fromkeys(t.strip() for t in tags.split(",") if t.strip()))[:500]
    raise ValueError(f"not editable: {name}")
