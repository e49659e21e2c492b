"""The analysis model: run a job, store it in the library, and recompute the cheap
stages when a slider moves.

* :func:`run_analysis` is what a background job runs (a Dash background callback, a
  Celery worker): it reads the trajectory, runs the expensive stages with the engine's
  disk cache (``<data>/stages``, keyed by content hash), writes the result JSON and
  inserts the library entry last. Opening the same file with the same parameters again
  returns the stored entry at once.
* :func:`session_for` keeps recently used :class:`~iondiff_core.pipeline.Session`s in
  memory; in a process that has none, it rebuilds one from the stored trajectory and the
  cached clustering (no k-means again).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from pathlib import Path

from iondiff_core import report
from iondiff_core.descriptors import family_of
from iondiff_core.errors import InputError
from iondiff_core.parameters import CLUSTERING_FIELDS, Parameters
from iondiff_core.pipeline import Session

from dashboard.config import Config
from dashboard.storage import Entry, Library, disk_full_as_input_error, maybe_cleanup, write_atomic

#: Fewer frames than this are refused: each ion's vibration centres are found by
#: clustering its positions over the run, which needs many frames at every site.

#: The parameters the sliders move (cheap stages only).
SLIDER_FIELDS = ("silhouette_threshold", "r_vib_A", "reference_level", "width_factor", "pair_distance_A", "n_max")


def file_digest(path: Path, extra: dict) -> str:
    """SHA-256 of the trajectory file(s) and the reading options."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def params_key(params: Parameters) -> str:
    return hashlib.sha256(json.dumps(params.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:24]


def material_name(path: Path, display_name: str | None = None) -> str:
    """Material label: from the uploaded file's name, else from the run folder's name."""
    from iondiff_core.batch import material_of
    from iondiff_core.io.xdatcar import strip_compression_suffix

    if display_name:
        name = re.sub(r"^XDATCAR[_.-]?", "", strip_compression_suffix(display_name), flags=re.I)
        name = re.sub(r"\.(xdatcar|extxyz|exyz|xyz|lammpstrj|dump|xml)$", "", name, flags=re.I) or display_name
    else:
        name = run_name(path)
    return material_of(name)


def run_name(path: Path) -> str:
    """A simulation's name: its folder for VASP runs (``LGPS_600K/XDATCAR``), else the file."""
    return path.name if path.is_dir() else path.parent.name if path.name.upper().startswith("XDATCAR") else path.name


def run_analysis(cfg: Config, source: Path, params: Parameters, timestep_fs=None, temperature_K=None, progress=None, name=None,
                 allow_truncated: bool = False) -> str:
    """Analyse one trajectory and store it in the library; returns the entry id.

    ``progress(fraction, message)`` is called by stage and by ion. ``allow_truncated``:
    analyse the complete frames of a damaged compressed file; the entry is then flagged
    ``"partial: ..."`` so that the library shows it and leaves it out of the cross-run views.
    """
    library = Library(cfg.library_db)
    reading = {"timestep_fs": timestep_fs, "temperature_K": temperature_K}
    if allow_truncated:  # only then, so that the digests of sound files stay as they were
        reading["allow_truncated"] = True
    digest = file_digest(source, reading)
    key = params_key(params)
    found = library.find(digest, key)
    if found is not None and Path(found.result).exists():
        library.opened(found.id)
        if progress:
            progress(1.0, "already analysed: loaded from the library")
        return found.id

    def each(stage, fraction, message):
        if progress:
            progress(fraction, message)

    from iondiff_core.io import read_trajectory
    from iondiff_core.pipeline import check_length

    each("read", 0.0, f"reading {source.name}")
    # Only the mobile species, in float32: the framework is never held (iondiff_core.io).
    traj = read_trajectory(source, timestep_fs=timestep_fs, temperature_K=temperature_K, keep="mobile",
                           mobile=params.species, dtype="float32", allow_truncated=allow_truncated)
    damaged = [w for w in traj.warnings if w.startswith("DAMAGED FILE")]
    check_length(traj, name or source.name)
    blocks = None
    if cfg.redis_url:  # a lab deployment: the clustering's ion blocks go to every Celery worker
        from dashboard.celery_app import CeleryBlockMap

        blocks = CeleryBlockMap(cfg.stages)
    with disk_full_as_input_error("the analysis's cache files"):
        session = Session.open(traj, params, cfg.stages, each, timestep_fs, temperature_K, map_blocks=blocks)
    result = session.result(params, each)
    doc = result.to_dict()
    name = name or run_name(source)
    doc["input"]["source"] = name
    out = cfg.results / f"{digest[:32]}-{key}.json"
    write_atomic(out, report.dumps(doc))
    species = result.prep.species
    desc = dict(doc["descriptors"])
    pdf = doc["pdf"]
    fit = pdf.get("fit") or {}  # the engine's JSON after issue 8 nests the fit (null when there is none)
    desc.update({"mean_n": pdf.get("mean_n"), "std_n": pdf.get("std_n"), "pdf_b": pdf.get("b", fit.get("b"))})
    entry = library.add(
        name=name,
        material=material_name(source, name),
        family=family_of(species),
        species=species,
        temperature_K=result.prep.trajectory.temperature_K,
        sha256=digest,
        params_key=key,
        params={**params.to_dict(), "timestep_fs": timestep_fs, "temperature_K": temperature_K,
                **({"allow_truncated": True} if damaged else {})},
        trajectory=str(source),
        result=str(out),
        descriptors=desc,
        flags=f"partial: {damaged[0].removeprefix('DAMAGED FILE: ')}" if damaged else "",
        stage_files=session.stage_files,
    )
    _SESSIONS.put(entry.id, session)
    maybe_cleanup(cfg, keep=(entry.id,))  # retention, quota and orphans (throttled over every process)
    return entry.id


class _SessionCache:
    """A small thread-safe LRU of open sessions (each holds a trajectory in memory)."""

    def __init__(self, size: int = 4):
        self.size = size
        self._d: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            s = self._d.get(key)
            if s is not None:
                self._d.move_to_end(key)
            return s

    def put(self, key, session):
        with self._lock:
            self._d[key] = session
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


_SESSIONS = _SessionCache()


def base_parameters(entry: Entry) -> Parameters:
    """The parameters the entry was analysed with (its clustering is cached under them)."""
    p = {k: v for k, v in entry.params.items() if k not in ("timestep_fs", "temperature_K", "allow_truncated")}
    return Parameters.from_dict(p)


def slider_parameters(entry: Entry, sliders: dict) -> Parameters:
    """The entry's parameters with the slider values applied (clustering ones refused)."""
    bad = set(sliders) - set(SLIDER_FIELDS)
    if bad & set(CLUSTERING_FIELDS) or bad:
        raise InputError(f"not a slider parameter: {', '.join(sorted(bad))}")
    return base_parameters(entry).replace(**sliders)


#: One session rebuilt at a time: concurrent views of an entry not in memory (one callback
#: per view, each thread) wait for the first to open it instead of each reading the file.
_OPENING = threading.Lock()


def session_for(cfg: Config, entry: Entry) -> Session:
    """The entry's session: from memory, or rebuilt from its file and the stage cache."""
    s = _SESSIONS.get(entry.id)
    if s is None:
        with _OPENING:
            s = _SESSIONS.get(entry.id)
            if s is None:
                p = entry.params
                s = Session.open(Path(entry.trajectory), base_parameters(entry), cfg.stages, None, p.get("timestep_fs"),
                                 p.get("temperature_K"), allow_truncated=bool(p.get("allow_truncated")))
                if s.stage_files != entry.stage_files:  # rebuilt, or an entry from before they were recorded
                    Library(cfg.library_db).set_stage_files(entry.id, s.stage_files)
                _SESSIONS.put(entry.id, s)
    return s


class _ResultCache:
    """The last few Results by (entry, slider values), computed once per key.

    A slider move fires one callback per view, concurrently; the first computes the
    cheap stages and the others wait for it on the key's lock instead of repeating them.
    """

    def __init__(self, size: int = 8):
        self.size = size
        self._d: OrderedDict[tuple, object] = OrderedDict()
        self._locks: dict[tuple, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key, compute):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._d:
                    return self._d[key]
            value = compute()
            with self._lock:
                self._d[key] = value
                self._locks.pop(key, None)
                while len(self._d) > self.size:
                    self._d.popitem(last=False)
            return value


_RESULTS = _ResultCache()


def result_for(cfg: Config, entry: Entry, sliders: dict | None = None):
    """The full engine Result of an entry at the given slider values (memoised in memory)."""
    params = slider_parameters(entry, sliders or {})
    key = (entry.id, json.dumps(params.to_dict(), sort_keys=True, default=str))
    return _RESULTS.get(key, lambda: session_for(cfg, entry).result(params))
