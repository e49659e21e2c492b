"""The results library: one SQLite row per analysed simulation (material, species,
temperature, family, tags, descriptors) pointing at its files in the data folder.

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
    created REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS entries_key ON entries (sha256, params_key);
"""


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

    def add(self, *, name, material, family, species, temperature_K, sha256, params_key, params, trajectory, result, descriptors) -> Entry:
        """Insert (or replace) the entry of one (trajectory, parameters); files must exist."""
        if not Path(result).exists() or not Path(trajectory).exists():
            raise FileNotFoundError("the result and trajectory files must be written before the entry")
        eid = uuid.uuid4().hex[:12]
        with self._connect() as c:
            c.execute("DELETE FROM entries WHERE sha256 = ? AND params_key = ?", (sha256, params_key))
            c.execute(
                "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (eid, name, material, family, species, temperature_K, "", sha256, params_key,
                 json.dumps(params), str(trajectory), str(result), json.dumps(descriptors), time.time()),
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

    def rename(self, eid: str, name: str) -> None:
        name = name.strip()
        if not name:
            raise ValueError("a name cannot be empty")
        with self._connect() as c:
            c.execute("UPDATE entries SET name = ? WHERE id = ?", (name[:200], eid))

    def set_tags(self, eid: str, tags: str) -> None:
        clean = ",".join(t.strip() for t in tags.split(",") if t.strip())
        with self._connect() as c:
            c.execute("UPDATE entries SET tags = ? WHERE id = ?", (clean[:500], eid))

    def delete(self, eid: str) -> None:
        """Remove the entry, then its result file (the trajectory may serve other entries)."""
        e = self.get(eid)
        with self._connect() as c:
            c.execute("DELETE FROM entries WHERE id = ?", (eid,))
        if e and Path(e.result).exists():
            Path(e.result).unlink()
