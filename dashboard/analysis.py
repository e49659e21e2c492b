"""The analysis model: run a job, store it in the library, and recompute the cheap
stages when a slider moves.

* :func:`run_analysis` is what a background job runs (a Dash background callback, a
  Celery worker): it reads the trajectory, runs the expensive stages with the engine's
  disk cache (``<data>/stages``, keyed by content hash), writes the result JSON and
  inserts the library entry last. Opening the same file with the same parameters again
  returns the stored entry at once.
* :func:`session_for` keeps recently used :class:`~iondiff_core.pipeline.Session`s in
  memory, within ``IONDIFF_SESSION_CACHE_MB`` of arrays held in memory (the unwrapped
  positions are memory-mapped from the stage cache and count nothing: the kernel pages
  them in and out); in a process that has none, it rebuilds one from the stored
  trajectory and the cached clustering (no k-means again).
* Every read is bounded by ``IONDIFF_MAX_TEXT_MB`` and ``IONDIFF_MAX_ATOM_FRAMES``
  (:func:`read_limits`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from iondiff_core import report
from iondiff_core.descriptors import family_of
from iondiff_core.errors import InputError
from iondiff_core.parameters import CLUSTERING_FIELDS, Parameters
from iondiff_core.pipeline import Memo, Session

from dashboard.config import Config
from dashboard.storage import Entry, Library, disk_full_as_input_error, maybe_cleanup, write_atomic

log = logging.getLogger(__name__)

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


def read_limits(cfg: Config):
    """The engine's :class:`~iondiff_core.io.ReadLimits` from the settings
    (IONDIFF_MAX_TEXT_MB, IONDIFF_MAX_ATOM_FRAMES): every read of a trajectory here goes
    through them, in jobs and when the web process rebuilds a session."""
    from iondiff_core.io import ReadLimits

    return ReadLimits(max_text_bytes=cfg.max_text_bytes, max_atom_frames=cfg.max_atom_frames)


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
                           mobile=params.species, dtype="float32", allow_truncated=allow_truncated,
                           limits=read_limits(cfg))
    damaged = [w for w in traj.warnings if w.startswith("DAMAGED FILE")]
    check_length(traj, name or source.name)
    blocks = None
    if cfg.redis_url:  # a lab deployment: the clustering's ion blocks go to every Celery worker
        from dashboard.celery_app import CeleryBlockMap

        blocks = CeleryBlockMap(cfg.stages)
    with disk_full_as_input_error("the analysis's cache files"):
        session = Session.open(traj, params, cfg.stages, each, timestep_fs, temperature_K, map_blocks=blocks)
    traj.release_positions()  # unwrapped (memory-mapped from the stage cache): the frames are not needed again
    result = session.result(params, each)
    from dashboard.views import public_data

    name = name or run_name(source)
    doc = result.to_dict()
    doc["input"]["source"] = name
    doc = public_data(cfg, doc)  # the stored result is downloaded as it is: no server path in it
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
    _SESSIONS.put(entry.id, session, cfg.session_cache_bytes)
    maybe_cleanup(cfg, keep=(entry.id,))  # retention, quota and orphans (throttled over every process)
    return entry.id


def resident_bytes(obj, _seen: set | None = None) -> int:
    """Bytes of the numpy arrays reachable from ``obj`` that live in this process's memory:
    each buffer counted once (views share their base's), memory-mapped files count 0 (the
    kernel pages them in and out), broadcast views count the data they really hold."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        owner = obj  # what holds the memory: follow the view chain (broadcast_to's wrapper too)
        while getattr(owner, "base", None) is not None:
            owner = owner.base
        if owner is not obj:
            if id(owner) in seen:
                return 0
            seen.add(id(owner))
        if isinstance(owner, np.ndarray):
            return owner.nbytes
        return len(owner) if isinstance(owner, (bytes, bytearray)) else 0  # an mmap: paged by the kernel
    if isinstance(obj, dict):
        return sum(resident_bytes(k, seen) + resident_bytes(v, seen) for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(resident_bytes(v, seen) for v in obj)
    if isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return 0
    fields = getattr(obj, "__dict__", None)
    if fields is None and hasattr(obj, "__slots__"):
        fields = {k: getattr(obj, k, None) for k in obj.__slots__}
    return resident_bytes(fields, seen) if fields else 0


class _SessionCache:
    """A thread-safe LRU of at most ``size`` values (each session keeps memory-mapped files
    open) and at most ``max_bytes`` held in memory (:func:`resident_bytes`, given at each
    :meth:`put`); a value larger than the whole budget is not kept."""

    def __init__(self, size: int = 4):
        self.size = size
        self._d: OrderedDict = OrderedDict()  # key -> (value, bytes)
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            hit = self._d.get(key)
            if hit is not None:
                self._d.move_to_end(key)
            return None if hit is None else hit[0]

    def put(self, key, value, max_bytes: int):
        size = resident_bytes(value)
        with self._lock:
            self._d.pop(key, None)
            if size > max_bytes:
                log.info("not kept in memory: %s holds %.0f MB, over IONDIFF_SESSION_CACHE_MB", key, size / 1e6)
                return
            # A session grows as slider moves memoise hop stages: measure the kept ones again.
            self._d = OrderedDict((k, (v, resident_bytes(v))) for k, (v, _) in self._d.items())
            while self._d and (len(self._d) >= self.size or sum(b for _, b in self._d.values()) + size > max_bytes):
                self._d.popitem(last=False)
            self._d[key] = (value, size)

    def nbytes(self) -> int:
        with self._lock:
            return sum(b for _, b in self._d.values())

    def clear(self):
        with self._lock:
            self._d.clear()


#: Open sessions of this process (each holds its clustering, hop stages, MSD in memory;
#: its positions are memory-mapped), within ``cfg.session_cache_bytes``.
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
    """The entry's session: from memory, or rebuilt from its file (within the read limits)
    and the stage cache, whose positions it maps from disk."""
    s = _SESSIONS.get(entry.id)
    if s is None:
        with _OPENING:
            s = _SESSIONS.get(entry.id)
            if s is None:
                p = entry.params
                s = Session.open(Path(entry.trajectory), base_parameters(entry), cfg.stages, None, p.get("timestep_fs"),
                                 p.get("temperature_K"), allow_truncated=bool(p.get("allow_truncated")),
                                 limits=read_limits(cfg))
                if s.stage_files != entry.stage_files:  # rebuilt, or an entry from before they were recorded
                    Library(cfg.library_db).set_stage_files(entry.id, s.stage_files)
                _SESSIONS.put(entry.id, s, cfg.session_cache_bytes)
    return s


#: The last few Results by (entry, slider values), at most ``IONDIFF_SESSION_CACHE_MB`` of
#: arrays (:func:`resident_bytes`). A slider move fires one callback per view, concurrently:
#: the first computes the cheap stages and the others wait for it instead of repeating them.
_RESULTS = Memo(size=8, weigh=lambda value: resident_bytes(value))


def result_for(cfg: Config, entry: Entry, sliders: dict | None = None):
    """The full engine Result of an entry at the given slider values (memoised in memory)."""
    params = slider_parameters(entry, sliders or {})
    key = (entry.id, json.dumps(params.to_dict(), sort_keys=True, default=str))
    return _RESULTS.get(key, lambda: session_for(cfg, entry).result(params), cfg.session_cache_bytes)
