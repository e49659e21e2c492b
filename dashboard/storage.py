"""The results library: one SQLite row per analysed simulation (material, species,
temperature, family, tags, flags, descriptors) pointing at its files in the data folder.

``flags`` says when a result must not be trusted as a whole (e.g. a damaged file of
which only the complete frames were analysed); the library shows it on the row.

Result files are written first (to a temporary name, then renamed) and the row is
inserted last, so a job killed half-way never leaves an entry without its files.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
MIGRATIONS = {"flags": "TEXT DEFAULT ''"}

#: Fields a user may edit in the library, and the hottest / coldest temperature accepted (K).
EDITABLE = ("name", "material", "temperature_K", "tags")
MAX_TEMPERATURE_K = 10000.0


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

    def load_result(self) -> dict:
        return json.loads(Path(self.result).read_text())


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Library:
    """Access to the library database (safe for several processes: WAL, short transactions)."""

    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        with self._connect() as c:
            c.executescript(SCHEMA)
            have = {r["name"] for r in c.execute("PRAGMA table_info(entries)")}
            for col, sql in MIGRATIONS.items():
                if col not in have:
                    c.execute(f"ALTER TABLE entries ADD COLUMN {col} {sql}")

    @contextmanager
    def _connect(self):
        conn = sqlite3.connect(self.db_path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
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
        return Entry(**d)

    def add(self, *, name, material, family, species, temperature_K, sha256, params_key, params, trajectory, result, descriptors,
            flags: str = "") -> Entry:
        """Insert (or replace) the entry of one (trajectory, parameters); files must exist.

        ``flags``: "" for a sound result, else one sentence the library shows on the row
        (e.g. "partial: the 812 complete frames of a damaged XDATCAR.gz").
        """
        if not Path(result).exists() or not Path(trajectory).exists():
            raise FileNotFoundError("the result and trajectory files must be written before the entry")
        eid = uuid.uuid4().hex[:12]
        with self._connect() as c:
            c.execute("DELETE FROM entries WHERE sha256 = ? AND params_key = ?", (sha256, params_key))
            c.execute(
                "INSERT INTO entries (id, name, material, family, species, temperature_K, tags, sha256, params_key, params,"
                " trajectory, result, descriptors, created, flags) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (eid, name, material, family, species, temperature_K, "", sha256, params_key,
                 json.dumps(params), str(trajectory), str(result), json.dumps(descriptors), time.time(), flags or ""),
            )
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

    def delete(self, eid: str) -> None:
        """Remove the entry, then its result file (the trajectory may serve other entries)."""
        e = self.get(eid)
        with self._connect() as c:
            c.execute("DELETE FROM entries WHERE id = ?", (eid,))
        if e and Path(e.result).exists():
            Path(e.result).unlink()


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
