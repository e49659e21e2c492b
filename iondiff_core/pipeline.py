"""The staged analysis and its cache.

Stages and what they depend on::

    prepare      trajectory + species + drift          -> unwrapped mobile positions
    clustering   prepare + clustering parameters        (EXPENSIVE, disk-cached)
    transport    prepare + MSD window                   (MSD, D, van Hove; cached)
    cheap        clustering + silhouette threshold, r_vib, reference level,
                 widths, n_max ...                      -> hops, groups, pdf, descriptors

:func:`analyze` runs them all; :class:`Session` keeps the expensive results of one
trajectory in memory so that changing a cheap parameter (a dashboard slider) reruns
only :func:`cheap_stages`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from iondiff_core import centres as centres_mod
from iondiff_core import consistency, correlations, descriptors, distribution, hops as hops_mod, transport
from iondiff_core.errors import InputError
from iondiff_core.parameters import Parameters
from iondiff_core.trajectory import Trajectory, unwrap, unwrap_in_place

#: ``progress(stage, fraction, message)``; fraction in [0, 1] over the whole run.
Progress = Callable[[str, float, str], None]

# Share of the progress bar each stage takes.
_SPAN = {"read": (0.0, 0.05), "clustering": (0.05, 0.85), "transport": (0.85, 0.93), "hops": (0.93, 1.0)}


def _report(progress: Progress | None, stage: str, within: float, message: str = ""):
    if progress is not None:
        a, b = _SPAN[stage]
        progress(stage, a + (b - a) * min(max(within, 0.0), 1.0), message)


# --------------------------------------------------------------------------- cache
class StageCache:
    """Stage results on disk, keyed by the hash of what they depend on.

    Files are written to a temporary name and renamed, so a reader never sees a
    half-written result, and any number of processes may share the folder.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.used: set[str] = set()  # names of the files handed out: what an analysis depends on (its library entry lists them)

    @staticmethod
    def key(stage: str, parts: dict) -> str:
        blob = json.dumps({"stage": stage, **parts}, sort_keys=True, default=str)
        return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:32]}"

    def path(self, key: str, suffix: str = ".npz") -> Path:
        self.used.add(f"{key}{suffix}")
        return self.folder / f"{key}{suffix}"

    def load(self, key: str) -> dict | None:
        p = self.path(key)
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError):
            return None  # unreadable entry: recompute

    def save(self, key: str, arrays: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, self.path(key))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def content_hash(traj: Trajectory) -> str:
    """SHA-256 of the trajectory's numbers and species (identifies it in caches)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(traj.positions_frac).view(np.uint8))
    h.update(np.ascontiguousarray(traj.cells[:: max(1, traj.n_frames // 64)]).view(np.uint8))
    h.update(" ".join(traj.species).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- stages
@dataclass
class Prepared:
    """The mobile ions' unwrapped positions and what identifies them."""

    trajectory: Trajectory
    species: str
    atoms: np.ndarray  # indices of the mobile ions among the atoms held (= file indices unless read mobile-only)
    positions_A: np.ndarray  # (T, N_mobile, 3), unwrapped, Å
    digest: str  # content hash of the trajectory

    @property
    def file_atoms(self) -> np.ndarray:
        """File indices (0-based) of the mobile ions, also for a mobile-only read."""
        return self.trajectory.file_indices(self.atoms)


#: Fewer frames than this is too short for the method (see :func:`check_length`).
MIN_FRAMES = 20


def check_length(traj: Trajectory, name: str | None = None) -> None:
    """Refuse a run too short for the method, saying why: vibration centres are found by
    clustering each ion's positions (averaged over 300 fs) over the run, and D is fitted
    over 20-100 % of lags up to half the run, which needs enough frames for both."""
    if traj.n_frames < MIN_FRAMES:
        raise InputError(
            f"{name or traj.source}: {traj.n_frames} frame(s) is too short for the method: vibration centres "
            f"are found by clustering each ion's positions over the run, and D by fitting the MSD over lags up "
            f"to half the run; at least {MIN_FRAMES} frames are needed"
        )


def prepare(traj: Trajectory, params: Parameters, digest: str | None = None, store: StageCache | None = None,
            consume: bool = False) -> Prepared:
    """Unwrap the mobile ions (the ``prepare`` stage).

    The unwrapped positions take the trajectory's dtype (float32 for a mobile-only read,
    summed in float64 block by block, see :func:`~iondiff_core.trajectory.unwrap`). With
    ``store``, they are written once into it as a ``.npy`` and memory-mapped read-only from
    there (a later run on the same data maps the same file), so the kernel can page them out.
    ``consume``: the trajectory is nobody else's; without ``store``, and when every atom held
    is mobile (a mobile-only read), it is unwrapped in its own buffer and its positions
    released (:func:`~iondiff_core.trajectory.unwrap_in_place`), so the read and the unwrapped
    positions are never held side by side.
    """
    if traj.positions_released:
        raise InputError(f"{traj.source}: the positions were released after unwrapping; read the trajectory again")
    species = traj.mobile_species(params.species)
    atoms = traj.indices(species)
    check_length(traj)
    if digest is None:
        digest = content_hash(traj)
        if traj.framework_drift_A is not None:  # a mobile-only read: the dropped framework's drift counts too
            digest = hashlib.sha256((digest + hashlib.sha256(np.ascontiguousarray(traj.framework_drift_A)).hexdigest()).encode()).hexdigest()
    dtype = np.float32 if traj.positions_frac.dtype == np.float32 else np.float64
    if store is None and consume and len(atoms) == traj.n_atoms:  # atoms: all held, in order
        pos = unwrap_in_place(traj, remove_drift=params.remove_drift)
    elif store is None:
        pos = unwrap(traj, atoms, remove_drift=params.remove_drift, dtype=dtype)
    else:
        which = {"digest": digest, "species": species, "remove_drift": params.remove_drift, "dtype": np.dtype(dtype).name}
        path = store.path(StageCache.key("unwrapped", which), ".npy")
        if not path.exists():
            centres_mod.write_npy(path, dtype, (traj.n_frames, len(atoms), 3),
                                  lambda out: unwrap(traj, atoms, remove_drift=params.remove_drift, out=out))
        pos = np.load(path, mmap_mode="r")
    return Prepared(traj, species, atoms, pos, digest)


def clustering_stage(
    prep: Prepared,
    params: Parameters,
    cache: StageCache | None = None,
    progress: Progress | None = None,
    n_jobs: int = 1,
    map_blocks=None,
) -> centres_mod.Clustering:
    """k-means of every mobile ion for every K (the expensive stage), cached on disk.

    ``n_jobs``: processes for the clustering. ``map_blocks``: a block executor (see
    :func:`~iondiff_core.centres.cluster_ions`), e.g. Celery workers on other machines;
    it needs ``cache`` on a folder they share: the positions are written there once as
    an ion-major ``.npy`` that each block reads memory-mapped. The result depends on
    neither.
    """
    key = clustering_key(prep, params)
    if cache is not None and (hit := clustering_from_record(cache.load(key), prep.atoms)) is not None:
        _report(progress, "clustering", 1.0, "clustering loaded from cache")
        return hit
    n = len(prep.atoms)

    def each(done, total):
        _report(progress, "clustering", done / total, f"clustering ion {done} of {total}")

    _report(progress, "clustering", 0.0, f"clustering {n} {prep.species} ions")
    positions = prep.positions_A
    if map_blocks is not None:
        if cache is None:
            raise ValueError("map_blocks needs a stage cache folder that the block workers share")
        # The clustering version names the file too: the blocks' results are stored under
        # keys of their arguments (this path among them), so they follow the code's version.
        which = {"digest": prep.digest, "species": prep.species, "remove_drift": params.remove_drift,
                 "dtype": prep.positions_A.dtype.name, "shape": list(prep.positions_A.shape), "version": CLUSTERING_VERSION}
        pkey = StageCache.key("positions", which)
        positions = cache.path(pkey, ".npy").resolve()
        if not positions.exists():
            centres_mod.write_ion_major(prep.positions_A, positions)
    timestep = prep.trajectory.timestep_fs
    result = centres_mod.cluster_ions(positions, prep.atoms, params, timestep, each, n_jobs, map_blocks)
    if cache is not None:
        cache.save(key, clustering_record(result))
    return result


#: Version of what the clustering stage computes and stores: part of its cache key, so
#: that a change of the k-means, the silhouette, the windows or the record's layout never
#: reads an entry written by older code. Bump it with any such change.
CLUSTERING_VERSION = 4  # 3: batched K scan, empty clusters relocated; 4: refined stitching, few-site ions one window


def clustering_key(prep: Prepared, params: Parameters) -> str:
    """The stage cache key of the clustering, from everything :func:`clustering_stage` reads.

    The positions are identified by the content digest of the trajectory as read (so
    the frames kept, e.g. of a damaged file, the atom types a type map named, a
    mobile-only read and its framework drift, and the dtype are in it), with the mobile
    species, its ions, the unwrapping (``remove_drift``) and the array's shape and dtype;
    then the clustering parameters, the timestep (fs) and the denoising window in frames
    it makes (``denoise_fs`` / timestep), and :data:`CLUSTERING_VERSION`.
    """
    timestep = float(prep.trajectory.timestep_fs) if prep.trajectory.timestep_fs else None  # 10 and 10.0 alike
    return StageCache.key("clustering", {
        "digest": prep.digest, **params.clustering_key(), "species": prep.species,
        "atoms": hashlib.sha256(np.ascontiguousarray(prep.atoms, dtype=np.int64)).hexdigest(),
        "shape": list(prep.positions_A.shape), "dtype": prep.positions_A.dtype.name,
        "timestep_fs": timestep, "denoise_frames": centres_mod.denoise_window(params.denoise_fs, timestep),
        "version": CLUSTERING_VERSION,
    })


def clustering_record(clustering: centres_mod.Clustering) -> dict[str, np.ndarray]:
    """The arrays stored for a clustering: :meth:`~iondiff_core.centres.Clustering.to_arrays`
    and the number of centres of every (ion, window, K) entry, which k-means may make
    smaller than K (see :func:`clustering_from_record`)."""
    arrays = clustering.to_arrays()
    arrays["n_centres"] = np.array([len(c) for ion in clustering.ions for c in ion.centres], dtype=np.int64)
    return arrays


def clustering_from_record(a: dict | None, atoms: np.ndarray) -> centres_mod.Clustering | None:
    """The clustering of a stored record, or None (recompute) when the record is absent,
    of another layout, or inconsistent: its centres, sizes and radii must add up to the
    recorded number of centres of every entry, and its ions must be ``atoms``.

    Entries are cut by their actual number of centres, never by K: an entry whose
    k-means came out with fewer centres than K would otherwise shift every later one.
    """
    if a is None or "n_centres" not in a:
        return None
    n_k, ks, n_c = a["n_k"].astype(int), a["ks"].astype(int), a["n_centres"].astype(int)
    total = int(n_c.sum())
    if (len(n_k) != len(atoms) or int(n_k.sum()) != len(ks) or len(n_c) != len(ks) or (n_c < 1).any()
            or len(a["centres"]) != total or len(a.get("sizes", [])) != total or len(a.get("radius", [])) != total
            or not np.array_equal(np.asarray(a["atoms"]).astype(int), np.asarray(atoms).astype(int))):
        return None
    clustering = centres_mod.Clustering.from_arrays({**a, "ks": n_c})
    starts = np.concatenate([[0], np.cumsum(n_k)])
    for ion, lo, hi in zip(clustering.ions, starts[:-1], starts[1:]):
        ion.ks = ks[lo:hi]
    return clustering


@dataclass
class TransportResult:
    msd: transport.MSDResult
    tracer: transport.DiffusionFit
    collective: transport.DiffusionFit
    van_hove: transport.VanHove | None

    @property
    def warnings(self) -> list[str]:
        """Not yet diffusive; D not distinguished from 0; Haven ratio undetermined (and why)."""
        return transport.transport_warnings(self.tracer, self.collective)


def transport_stage(prep: Prepared, params: Parameters, progress: Progress | None = None) -> TransportResult | None:
    """MSD, tracer and collective D, van Hove; None when the timestep is unknown."""
    traj = prep.trajectory
    if not traj.timestep_fs:
        return None
    _report(progress, "transport", 0.0, "mean squared displacement")
    dt = traj.timestep_ps
    m = transport.msd(prep.positions_A, dt)
    tr, co = transport.diffusion_fits(m, params.msd_fit_start, params.msd_fit_end)
    _report(progress, "transport", 0.5, "van Hove correlation functions")
    t = traj.n_frames
    lags = np.unique(np.linspace(0, (t - 1) // 2, 12).astype(int))
    vh = transport.van_hove(prep.positions_A, traj.cells[0], dt, lags)
    _report(progress, "transport", 1.0, "transport done")
    return TransportResult(m, tr, co, vh)


@dataclass
class Result:
    """Everything the analysis found for one trajectory and one set of parameters."""

    params: Parameters
    prep: Prepared
    centres: centres_mod.Centres
    hop_analysis: hops_mod.HopAnalysis
    reference_level: float
    correlations: correlations.Correlations
    mechanisms: correlations.Mechanisms
    distribution: distribution.NDistribution
    concertedness: correlations.Concertedness
    consistency: consistency.Consistency
    transport: TransportResult | None
    descriptors: dict
    metastable: list[np.ndarray]  # per ion, True for each centre off the reference lattice
    warnings: list[str] = field(default_factory=list)

    @property
    def hops(self) -> hops_mod.Hops:
        return self.hop_analysis.hops

    @property
    def excursions(self) -> hops_mod.Hops:
        """Unfinished excursions (in transit at the last frame): listed apart, never hops."""
        return self.hop_analysis.excursions

    def to_dict(self) -> dict:
        """The JSON document of ``python -m iondiff_core analyze`` (see README)."""
        from iondiff_core.report import result_to_dict

        return result_to_dict(self)


class Memo:
    """Small in-memory memo of derived results keyed by the arrays and values they depend
    on (random references, spatial pair sets, null replicas), so a slider move that does
    not change them does not recompute them.

    Thread-safe (gunicorn threads share it): each key is computed once, by the first
    caller; the others asking for it meanwhile wait for that result (one lock per key
    being computed), while other keys are computed in parallel. The oldest entry goes
    when ``size`` are held.
    """

    def __init__(self, size: int = 32, weigh: Callable[[object], int] | None = None):
        self._d: OrderedDict[str, object] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self._computing: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.size = size
        self.weigh = weigh

    @staticmethod
    def key(parts: tuple) -> str:
        """Digest of the parts: arrays by their dtype, shape and bytes, anything else by its repr."""
        h = hashlib.sha1()
        for p in parts:
            if isinstance(p, np.ndarray):
                h.update(f"{p.dtype.str}{p.shape}".encode())
                h.update(np.ascontiguousarray(p).tobytes())
            else:
                h.update(repr(p).encode())
            h.update(b"\x00")
        return h.hexdigest()

    def get(self, parts: tuple, compute: Callable[[], object], max_bytes: float = float("inf")):
        """The value of ``parts``, computed once (other threads asking meanwhile wait for it).
        With ``weigh`` and a finite ``max_bytes``, the values held weigh at most that much
        (oldest out first); a value heavier alone is returned but not kept."""
        key = self.key(parts)
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
            pending = self._computing.setdefault(key, threading.Lock())
        with pending:
            with self._lock:
                if key in self._d:
                    return self._d[key]
            try:
                value = compute()
                weight = self.weigh(value) if self.weigh is not None and max_bytes < float("inf") else 0
                with self._lock:
                    if weight <= max_bytes:
                        self._d[key], self._bytes[key] = value, weight
                        while len(self._d) > self.size or sum(self._bytes[k] for k in self._d) > max_bytes:
                            old, _ = self._d.popitem(last=False)
                            self._bytes.pop(old, None)
            finally:
                with self._lock:
                    if self._computing.get(key) is pending:
                        del self._computing[key]
        return value


_MEMO = Memo()
#: Nearest-centre tables are T x N: keep only the last two.
_NEAREST = Memo(size=2)


def hop_stage(prep: Prepared, clustering: centres_mod.Clustering, params: Parameters):
    """Centres at the silhouette threshold, then hops at r_vib."""
    cen = centres_mod.select(clustering, prep.positions_A, params.silhouette_threshold, 2 * params.r_vib_A)
    flat = np.concatenate([np.asarray(m, float).ravel() for m in cen.centres]) if len(cen.centres) else np.zeros(0)
    where = (prep.digest, prep.species, params.remove_drift, prep.positions_A.shape, prep.positions_A.dtype.str)
    nearest = _NEAREST.get(("nearest", *where, cen.k, flat, params.cloud_quantile),
                           lambda: hops_mod.nearest_centres(prep.positions_A, cen, params.cloud_quantile))
    return cen, hops_mod.find_hops(prep.positions_A, cen, params.r_vib_A, params.hop_rule, params.cloud_quantile, nearest)


def cheap_stages(
    prep: Prepared,
    clustering: centres_mod.Clustering,
    transport_result: TransportResult | None,
    params: Parameters,
    progress: Progress | None = None,
    hop_result=None,
) -> Result:
    """Everything after the clustering: fast enough to rerun on every slider move.

    ``hop_result``: the (centres, hops) of :func:`hop_stage` for these parameters, if known.
    """
    _report(progress, "hops", 0.0, "hops and correlations")
    traj = prep.trajectory
    cen, ha = hop_result or hop_stage(prep, clustering, params)
    hops = ha.hops
    t = traj.n_frames
    sig = correlations.event_sigmas(hops, params.width_factor, params.width_rule)
    rand = (t, params.n_random, params.seed, params.random_width)
    ref = _MEMO.get(("reference", np.round(sig, 9), rand), lambda: correlations.random_reference(sig, t, *rand[1:]))
    level = max(ref.level(params.reference_level), 0.0)  # only overlapping pairs (C > 0) can be concerted
    cell = traj.cells[0]
    near = None
    if params.pair_distance_A is not None and len(hops):
        near = _MEMO.get(("near", hops.origin_A, hops.target_A, cell, params.pair_distance_A),
                         lambda: correlations.SpatialPairs(hops, cell, params.pair_distance_A))
    corr = correlations.correlate(hops, t, level, params.width_factor, cell, params.pair_distance_A, params.width_rule, near)
    mech = correlations.classify_pairs(hops, corr, cell, params.mechanism_distance_A)
    dist = distribution.n_distribution(corr.sizes, params.n_max, params.seed)
    _report(progress, "hops", 0.5, "null model")
    null = _MEMO.get(
        # The spatial pairs (hop ends) count only with a pair distance.
        ("null", hops.mid_frame, hops.ion, sig, t, level, params.n_null, params.seed, cell, params.pair_distance_A,
         *((hops.origin_A, hops.target_A) if params.pair_distance_A is not None else ())),
        lambda: correlations.null_replicas(hops, sig, t, level, params.n_null, params.seed, cell, params.pair_distance_A, near),
    )
    conc = correlations.concertedness(corr.sizes, null, params.n_max)
    cons = consistency.check(prep.positions_A, hops, vibration_radii_A=ha.radius_A)
    meta = descriptors.metastable_centres(prep, cen, params.metastable_distance_A, params.reference_structure)
    desc = descriptors.simulation_descriptors(prep, cen, ha, transport_result, params, meta)
    warns = list(traj.warnings) + (transport_result.warnings if transport_result is not None else [])
    unresolved = int(np.sum(~hops.resolved))
    if unresolved:
        warns.append(
            f"{unresolved} of {len(hops)} hops took less than one frame ({traj.timestep_fs or '?'} fs): "
            "the sampling is too coarse to time them; their duration is set to one frame"
        )
    if len(ha.excursions):
        warns.append(
            f"{len(ha.excursions)} unfinished excursion(s): ions still in transit at the last frame are listed "
            "apart and not counted as hops"
        )
    if conc.verdict == "percolated":
        per_frame = hops.duration_frames.sum() / t
        warns.append(f"{conc.message} ({per_frame:.1f} ions in transit per frame on average)")
    if dist.fit_note:
        warns.append(f"pdf of n: {dist.fit_note}")
    failed = [c["message"] for c in cons.checks() if c["passed"] is False]
    if failed:
        warns.append("hops do not add up to the displacements (consistency, METHOD.md section 7): " + "; ".join(failed))
    _report(progress, "hops", 1.0, "done")
    return Result(params, prep, cen, ha, level, corr, mech, dist, conc, cons, transport_result, desc, meta, warns)


def analyze(
    source: Trajectory | str | os.PathLike,
    params: Parameters | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    timestep_fs: float | None = None,
    temperature_K: float | None = None,
    n_jobs: int = 1,
    *,
    type_map=None,
    mobile_only: bool = True,
    map_blocks=None,
    allow_truncated: bool = False,
    limits=None,
) -> Result:
    """Run the whole analysis on a trajectory or a path (folder with XDATCAR, or a file).

    ``type_map`` names numeric atom types (``'1=Li,2=P'``); ``mobile_only`` (default)
    reads only the mobile species of a file, in float32 (False: every atom, float64);
    ``map_blocks`` runs the clustering's ion blocks elsewhere (see :meth:`Session.open`);
    ``limits``: :class:`iondiff_core.io.ReadLimits` of the read.
    """
    session = Session.open(
        source, params, cache_dir, progress, timestep_fs, temperature_K, n_jobs,
        type_map=type_map, mobile_only=mobile_only, map_blocks=map_blocks, allow_truncated=allow_truncated,
        limits=limits,
    )
    return session.result(params, progress)


class Session:
    """One trajectory with its expensive stages done; :meth:`result` for any cheap parameters.

    Examples
    --------
    >>> s = Session.open("sims/LGPS_600K", Parameters(species="Li"))   # doctest: +SKIP
    >>> s.result(Parameters(species="Li", r_vib_A=0.6)).distribution   # doctest: +SKIP
    """

    def __init__(self, prep: Prepared, clustering: centres_mod.Clustering, transport_result: TransportResult | None, params: Parameters):
        self.prep = prep
        self.clustering = clustering
        self.transport = transport_result
        self.params = params
        self._hops = Memo(size=16)  # (centres, hops) by the hop-stage parameters; shared by threads
        self.stage_files: list[str] = []  # the stage cache's files this session read or wrote

    @classmethod
    def open(
        cls, source, params=None, cache_dir=None, progress=None, timestep_fs=None, temperature_K=None, n_jobs=1,
        *, type_map=None, mobile_only=True, map_blocks=None, allow_truncated=False, limits=None,
    ) -> "Session":
        """Read (if a path), unwrap, cluster (or load the clustering from ``cache_dir``), transport.

        ``type_map``: species of numeric atom types (LAMMPS, H5MD), ``'1=Li,2=P,...'``.
        ``mobile_only`` (default): read only the mobile species of a file (``params.species``,
        else the default one), as float32 -- the framework is never held (its drift, the
        file's composition and atom indices are kept); the unwrapped positions are float32
        too, memory-mapped from ``cache_dir`` when given. False: every atom in float64.
        ``map_blocks``: where the clustering's ion blocks run (see :func:`clustering_stage`).
        ``allow_truncated``: analyse the complete frames of a damaged compressed file.
        ``limits``: :class:`iondiff_core.io.ReadLimits` of the read (decompressed bytes, atoms x frames).
        """
        params = params or Parameters()
        if isinstance(source, Trajectory):
            traj = source
            if timestep_fs:
                traj.timestep_fs = timestep_fs
            if temperature_K:
                traj.temperature_K = temperature_K
        else:
            from iondiff_core.io import read_trajectory

            _report(progress, "read", 0.0, f"reading {Path(source).name}")
            opts = {"keep": "mobile", "mobile": params.species, "dtype": np.float32} if mobile_only else {}
            traj = read_trajectory(source, timestep_fs=timestep_fs, temperature_K=temperature_K, type_map=type_map,
                                   allow_truncated=allow_truncated, limits=limits, **opts)
        _report(progress, "read", 1.0, f"read {traj.n_frames} frames of {traj.n_atoms} atoms")
        cache = StageCache(cache_dir) if cache_dir else None
        prep = prepare(traj, params, store=cache, consume=not isinstance(source, Trajectory))
        if not isinstance(source, Trajectory):
            # Read here, so nobody else holds it: only the unwrapped positions are needed
            # from now on (frame 0 stays for the reference lattice).
            traj.release_positions()
        clustering = clustering_stage(prep, params, cache, progress, n_jobs, map_blocks)
        tr = transport_stage(prep, params, progress)
        session = cls(prep, clustering, tr, params)
        session.stage_files = sorted(cache.used) if cache else []
        return session

    def result(self, params: Parameters | None = None, progress: Progress | None = None) -> Result:
        params = params or self.params
        fixed = self.params.clustering_key()
        changed = [k for k, v in params.clustering_key().items() if v != fixed[k] and k != "species"]
        if changed or (params.species and params.species != self.prep.species):
            raise InputError(f"parameters {changed or ['species']} change the clustering: open a new Session")
        tr = self.transport
        if tr is not None and (params.msd_fit_start, params.msd_fit_end) != (self.params.msd_fit_start, self.params.msd_fit_end):
            m = tr.msd
            tr = TransportResult(m, *transport.diffusion_fits(m, params.msd_fit_start, params.msd_fit_end), tr.van_hove)
        key = (params.silhouette_threshold, params.r_vib_A, params.hop_rule, params.cloud_quantile)
        hop_result = self._hops.get(key, lambda: hop_stage(self.prep, self.clustering, params))
        return cheap_stages(self.prep, self.clustering, tr, params, progress, hop_result)
