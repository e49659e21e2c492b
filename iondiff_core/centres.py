"""Vibration centres of each mobile ion: k-means over K and the silhouette rule
(METHOD.md section 2; paper section 5.5, eqs 7-9).

This is the expensive stage. Its result, :class:`Clustering`, keeps for every ion the
centres and the mean silhouette of *every* K tried, so the silhouette threshold (a
slider) picks K afterwards without clustering again (:func:`select`).

Time windows: k-means over K = 2, 3, ... on a whole run costs O(T K^2) per ion, and K
is the number of sites the ion visits, so a long MLIP run whose ions visit a hundred
sites costs a hundred times more per frame than one whose ions stay home. The paper's
rule is well posed where an ion visits a few sites, so each ion's run is cut into time
windows of at most ``window_frames`` frames (shorter where the ion dwells at more than
``window_sites`` sites, :func:`window_bounds`), the K search runs in each window, and
:func:`select` stitches the windows' chosen centres into one set per ion (centres of
one site seen in several windows are merged) and refines them on all of the ion's frames
(:func:`refine`). An ion that dwells at no more than ``window_sites`` sites over its whole
run is one window. The cost per ion-frame is then that of
a window with a few sites, whatever the number of sites visited, and no cap on K is
needed. A run no longer than one window is clustered exactly as before.

Speed: an ion's cloud has far fewer distinct places than frames. k-means runs on a
weighted histogram of the cloud (voxels of ``voxel_A``, weight = frames in the voxel,
position = the frames' mean), then every frame is labelled to its nearest centre and the
centres become their frames' means. The paper's silhouette uses squared distances, which
gives an exact O(T K) closed form (:func:`squared_silhouette`). The restarts of one K run
as one array computation, and every table of distances is laid out centre-major, so
that its reductions over centres run over the first axis (:func:`weighted_kmeans_scan`).
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.ndimage import uniform_filter1d
from sklearn.metrics import silhouette_score
from threadpoolctl import ThreadpoolController

from iondiff_core.parameters import Parameters


@dataclass
class IonClustering:
    """k-means results of one ion for every K tried.

    Attributes
    ----------
    ks : ndarray of int, shape (M,)
        The K values tried (2, 3, ...).
    silhouette : ndarray, shape (M,)
        Mean silhouette of each K.
    centres : list of ndarray, each (K, 3), Å
        Cluster centres (means of the frames labelled to them) of each K.
    sizes : list of ndarray, each (K,)
        Frames labelled to each centre (weights when windows are stitched).
    window : ndarray of int, shape (M,)
        Time window of each entry (index into ``bounds``).
    bounds : ndarray of int, shape (W + 1,) or None
        Frame bounds of the W windows (window w is frames ``bounds[w]:bounds[w+1]``);
        None = one window, the whole run.
    radius : list of ndarray, each (K,), Å
        Root-mean-square distance of each centre's frames to it (the cluster's size).
    """

    ks: np.ndarray
    silhouette: np.ndarray
    centres: list[np.ndarray]
    sizes: list[np.ndarray] | None = None
    window: np.ndarray | None = None
    bounds: np.ndarray | None = None
    radius: list[np.ndarray] | None = None

    def __post_init__(self):
        if self.sizes is None:
            self.sizes = [np.ones(len(c)) for c in self.centres]
        if self.radius is None:
            self.radius = [np.zeros(len(c)) for c in self.centres]
        if self.window is None:
            self.window = np.zeros(len(self.ks), dtype=int)


@dataclass
class Clustering:
    """Clustering of all mobile ions (the cached expensive stage)."""

    atoms: np.ndarray  # file indices of the mobile ions
    ions: list[IonClustering]
    silhouette_kind: str
    denoise_frames: int = 1  # positions were averaged over this many frames (:func:`denoise`)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays for ``np.savez`` (see :meth:`from_arrays`)."""
        ks = [c.ks for c in self.ions]
        # Window bounds: -1 marks "one window, the whole run" (bounds None).
        bounds = [c.bounds if c.bounds is not None else np.array([-1]) for c in self.ions]

        def cat(parts, empty):
            return np.concatenate(parts) if parts else empty

        return {
            "atoms": self.atoms,
            "n_k": np.array([len(k) for k in ks], dtype=int),
            "ks": cat(ks, np.zeros(0, int)),
            "silhouette": cat([c.silhouette for c in self.ions], np.zeros(0)),
            "centres": cat([np.concatenate(c.centres) for c in self.ions if c.centres], np.zeros((0, 3))),
            "sizes": cat([np.concatenate(c.sizes) for c in self.ions if c.sizes], np.zeros(0)),
            "radius": cat([np.concatenate(c.radius) for c in self.ions if c.radius], np.zeros(0)),
            "window": cat([c.window for c in self.ions], np.zeros(0, int)),
            "n_bounds": np.array([len(b) for b in bounds], dtype=int),
            "bounds": cat(bounds, np.zeros(0, int)),
            "kind": np.array(self.silhouette_kind),
            "denoise_frames": np.array(self.denoise_frames),
        }

    @classmethod
    def concatenate(cls, parts: list["Clustering"]) -> "Clustering":
        """The clustering of consecutive blocks of ions, in order (one silhouette kind)."""
        kinds = {p.silhouette_kind for p in parts}
        if len(kinds) != 1:
            raise ValueError(f"cannot join clusterings of silhouette kinds {sorted(kinds)}")
        frames = {p.denoise_frames for p in parts}
        if len(frames) != 1:
            raise ValueError(f"cannot join clusterings of positions averaged over {sorted(frames)} frames")
        return cls(np.concatenate([p.atoms for p in parts]), [i for p in parts for i in p.ions], kinds.pop(), frames.pop())

    @classmethod
    def from_arrays(cls, a) -> "Clustering":
        ions, ko, co, bo = [], 0, 0, 0
        n_bounds = a["n_bounds"] if "n_bounds" in a else np.ones(len(a["n_k"]), dtype=int)
        for m, nb in zip(a["n_k"], n_bounds):
            ks = a["ks"][ko : ko + m].astype(int)
            cents, sizes, radius = [], [], []
            for k in ks:
                cents.append(a["centres"][co : co + k])
                sizes.append(a["sizes"][co : co + k] if "sizes" in a else np.ones(k))
                radius.append(a["radius"][co : co + k] if "radius" in a else np.zeros(k))
                co += k
            window = a["window"][ko : ko + m].astype(int) if "window" in a else None
            bounds = a["bounds"][bo : bo + nb].astype(int) if "bounds" in a else np.array([-1])
            ions.append(
                IonClustering(ks, a["silhouette"][ko : ko + m], cents, sizes, window, None if bounds[0] < 0 else bounds, radius)
            )
            ko += m
            bo += nb
        return cls(np.asarray(a["atoms"]), ions, str(a["kind"]), int(a["denoise_frames"]) if "denoise_frames" in a else 1)


@dataclass
class Centres:
    """The centres chosen for every ion at one silhouette threshold."""

    centres: list[np.ndarray]  # per ion (K, 3), Å
    k: np.ndarray  # K per ion
    best_silhouette: np.ndarray  # best mean silhouette over K >= 2 per ion (frame-weighted over windows)


def squared_silhouette(x: np.ndarray, labels: np.ndarray, n_clusters: int) -> float:
    """Mean silhouette with squared Euclidean distances (paper eqs 7-9), exact in O(T K).

    The mean squared distance from r_i to the points of cluster J is
    |r_i - mu_J|^2 + s_J, with s_J the mean squared distance of J's points to mu_J;
    for i's own cluster the mean excludes i, so it is scaled by M_I / (M_I - 1).
    Points alone in their cluster score 0 (scikit-learn's convention).
    """
    counts = np.bincount(labels, minlength=n_clusters).astype(float)
    return _squared_silhouette_kt(_sqdist_kt(x, _cluster_means(x, labels, counts)), labels, counts)


def _squared_silhouette_kt(d2: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> float:
    """:func:`squared_silhouette` from the squared distances (K, T) of every point to every
    cluster mean and the cluster sizes (K,)."""
    t = np.arange(d2.shape[1])
    own = d2[labels, t]
    s = np.bincount(labels, weights=own, minlength=len(counts)) / np.maximum(counts, 1)
    m_own = counts[labels]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = m_own / (m_own - 1) * (own + s[labels])
    other = d2 + s[:, None]
    other[labels, t] = np.inf
    other[counts == 0] = np.inf
    b = other.min(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sil = (b - a) / np.maximum(a, b)
    sil[m_own <= 1] = 0.0
    return float(np.nan_to_num(sil, nan=0.0).mean())


def euclidean_silhouette(x: np.ndarray, labels: np.ndarray, n_clusters: int) -> float:
    """scikit-learn's silhouette (plain Euclidean distances), as IonDiff uses: O(T^2)."""
    if len(np.unique(labels)) < 2:
        return 0.0
    return float(silhouette_score(x, labels))


SILHOUETTES = {"squared": squared_silhouette, "euclidean": euclidean_silhouette}


def cluster_ion(x: np.ndarray, params: Parameters) -> IonClustering:
    """k-means of one ion's unwrapped positions (T, 3) in Å for K = 2, 3, ..., per time window.

    The run is cut into windows (:func:`window_bounds`; one window when
    ``params.window_frames`` is 0 or the run is no longer than it). In each window, with
    ``params.k_max`` set, K runs to it. Otherwise K runs at least to 10 and to the
    number of sites the ion dwells at in the window (:func:`count_dwell_sites`) plus
    ``k_patience``, and is raised further while the best silhouette lies within
    ``k_patience`` of the largest K tried (up to ``k_max_limit`` if set, and the number
    of distinct places), so a window with many sites is not capped.
    """
    # One thread: the histograms are small, and OpenMP threads oversubscribed by a
    # busy machine (or parallel workers) slow k-means down twentyfold.
    with _one_thread():
        x = np.ascontiguousarray(x, dtype=np.float64)
        bounds = window_bounds(x, params)
        parts = [_cluster_window(x[a:b], params) for a, b in zip(bounds[:-1], bounds[1:])]
    ks = np.array([k for p in parts for k in p[0]], dtype=int)
    sils = np.array([v for p in parts for v in p[1]], dtype=float)
    window = np.repeat(np.arange(len(parts)), [len(p[0]) for p in parts]).astype(int)
    return IonClustering(
        ks, sils, [c for p in parts for c in p[2]], [n for p in parts for n in p[3]], window, bounds if len(parts) > 1 else None,
        [r for p in parts for r in p[4]],
    )


_CONTROLLER: list = []


def _one_thread():
    """BLAS/OpenMP limited to one thread (the controller, which inspects the loaded
    libraries, is built once: building it costs milliseconds per ion)."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1)


def window_bounds(x: np.ndarray, params: Parameters) -> np.ndarray:
    """Frame bounds (W + 1,) of the time windows one ion's run is clustered in.

    One window when the ion dwells at no more than ``params.window_sites`` sites over the
    whole run. Otherwise equal windows of at most ``params.window_frames`` frames; a window in which the ion
    dwells at more than ``params.window_sites`` sites (:func:`count_dwell_sites`, O(frames))
    is cut into equal parts with about that many sites each, none shorter than
    ``params.window_min_frames``; every inner bound is then moved to a frame where the
    ion rests (:func:`_snap_to_rest`). ``window_frames = 0``: one window, the whole run.
    """
    n = len(x)
    # An ion that dwells at no more sites over the whole run than a window may hold is
    # clustered as one window: its K search costs per frame what a window's would, and
    # one clustering of all its frames places each site once (no stitching needed).
    if not params.window_frames or n <= params.window_frames or count_dwell_sites(x) <= params.window_sites:
        coarse = np.array([0, n])
    else:
        coarse = np.linspace(0, n, -(-n // params.window_frames) + 1).astype(int)
    if not params.window_frames:
        return coarse
    out = [0]
    for a, b in zip(coarse[:-1], coarse[1:]):
        parts = 1
        if b - a >= 2 * params.window_min_frames:
            sites = count_dwell_sites(x[a:b])
            parts = max(1, min(-(-sites // params.window_sites), (b - a) // params.window_min_frames))
        out.extend(np.linspace(a, b, parts + 1).astype(int)[1:].tolist())
    return _snap_to_rest(x, np.array(out, dtype=int), params.window_min_frames)


def _snap_to_rest(x: np.ndarray, bounds: np.ndarray, min_frames: int) -> np.ndarray:
    """Move each inner window bound, within a quarter of ``min_frames``, to the frame where
    the ion moves least (displacement over +-min_frames/20 frames), so that no window
    ends in the middle of a hop: a transit cut in two makes a cluster of its own, off
    every site."""
    h = max(1, min_frames // 20)
    r = max(1, min_frames // 4)
    out = bounds.copy()
    for w in range(1, len(bounds) - 1):
        t = np.arange(max(h, bounds[w] - r), min(len(x) - h, bounds[w] + r + 1))
        if t.size:
            move = np.einsum("td,td->t", x[t + h] - x[t - h], x[t + h] - x[t - h])
            out[w] = t[int(np.argmin(move))]
    return out


def _cluster_window(x: np.ndarray, params: Parameters):
    """The K search on one window: (ks, silhouettes, centres, sizes, rms radii)."""
    points, weights = _voxel_histogram(x, params.voxel_A)
    n_distinct = len(points)
    silhouette = SILHOUETTES[params.silhouette]
    limit = params.k_max if params.k_max else (params.k_max_limit or n_distinct)
    limit = min(limit, n_distinct, len(x) - 1)
    hi = min(limit, params.k_max or max(10, count_dwell_sites(x) + params.k_patience))
    ks, sils, cents, sizes, radii = [], [], [], [], []
    lo = 2
    while lo <= hi:
        # Every K of the range in one batched k-means (the same centres as one K at a time).
        for k, mu in zip(range(lo, hi + 1), weighted_kmeans_scan(points, weights, range(lo, hi + 1), params.kmeans_n_init, params.seed)):
            centres, labels, counts, d2 = _label_frames(x, mu)
            kk = len(centres)
            ks.append(k)
            if kk < 2:
                sils.append(-1.0)
            elif params.silhouette == "squared":  # from the distances already at hand
                sils.append(_squared_silhouette_kt(d2, labels, counts))
            else:
                sils.append(silhouette(x, labels, kk))
            cents.append(centres)
            sizes.append(counts)
            own = d2[labels, np.arange(len(x))]
            radii.append(np.sqrt(np.bincount(labels, weights=own, minlength=kk) / np.maximum(counts, 1)))
        lo = hi + 1
        if params.k_max is None:
            best = ks[int(np.argmax(sils))]
            if best > hi - params.k_patience and hi < limit:
                hi = min(limit, hi + max(params.k_patience, 5))
    return ks, sils, cents, sizes, radii


def denoise_window(denoise_fs: float, timestep_fs: float | None) -> int:
    """Odd number of frames spanning about ``denoise_fs`` (1 = no averaging)."""
    if not denoise_fs or not timestep_fs:
        return 1
    w = int(round(denoise_fs / timestep_fs))
    return max(1, w + (w % 2 == 0))


def denoise(positions_A: np.ndarray, window_frames: int) -> np.ndarray:
    """Sliding mean over ``window_frames`` frames (axis 0); the ends use the edge frame."""
    if window_frames <= 1:
        return np.ascontiguousarray(positions_A)
    return uniform_filter1d(positions_A, window_frames, axis=0, mode="nearest")


def count_dwell_sites(x: np.ndarray, cell_A: float = 0.5) -> int:
    """Number of places an ion dwells at: connected blobs of the 0.5 Å grid cells that
    hold at least 0.2 % of its frames (and 3). Transit frames are too sparse to count,
    so sites farther apart than about a cell and a half are told apart."""
    rel = x - x.min(axis=0)
    while True:
        idx = np.floor(rel / cell_A).astype(np.int64)
        shape = idx.max(axis=0) + 1
        if np.prod(shape) <= 4_000_000:
            break
        cell_A *= 2  # a very long walk: coarser cells
    counts = np.zeros(shape, dtype=np.int32)
    np.add.at(counts, tuple(idx.T), 1)
    dense = counts >= max(3, 0.002 * len(x))
    return int(ndimage.label(dense, structure=np.ones((3, 3, 3)))[1])


def cluster_ions(
    positions_A: np.ndarray | str | os.PathLike,
    atoms: np.ndarray,
    params: Parameters,
    timestep_fs: float | None = None,
    progress=None,
    n_jobs: int = 1,
    map_blocks=None,
    block_ions: int | None = None,
) -> Clustering:
    """Cluster every mobile ion.

    Parameters
    ----------
    positions_A : ndarray (T, N_mobile, 3) or path
        Unwrapped positions in Å, or the path of the ion-major ``.npy`` (N_mobile, T, 3)
        that :func:`write_ion_major` wrote (read memory-mapped: a block reads its ions only).
    progress : callable, optional
        ``progress(done, total)``, called as ions finish.
    n_jobs : int
        Without ``map_blocks``: > 1 clusters blocks of ions in that many processes (not
        from inside a daemonic process, e.g. a Celery prefork worker, where it runs
        sequentially).
    map_blocks : callable, optional
        The block executor: ``map_blocks(fn, blocks, done)`` returns ``[fn(*b) for b in
        blocks]`` in order, computed anywhere, and calls ``done(k)`` as block k finishes.
        ``fn`` is the module-level :func:`cluster_block`; it returns a dict of arrays. When
        ``positions_A`` is a path the arguments are plain (path, ints, a dict), so the
        blocks may run on other machines (``dashboard.celery_app.CeleryBlockMap``).
    block_ions : int, optional
        Ions per block. Default: 4 blocks per process; with ``map_blocks``, its attribute
        ``block_ions`` if set, else at most 64 blocks of at least 10^5 ion-frames each.

    Positions are first averaged over ``params.denoise_fs`` (needs ``timestep_fs``). The
    result does not depend on ``n_jobs``, ``map_blocks`` or ``block_ions``.
    """
    window = denoise_window(params.denoise_fs, timestep_fs)
    atoms = np.asarray(atoms)
    on_disk = isinstance(positions_A, (str, os.PathLike))
    x = np.load(positions_A, mmap_mode="r") if on_disk else positions_A
    n = x.shape[0] if on_disk else x.shape[1]
    parallel = n_jobs > 1 and n > 1 and not multiprocessing.current_process().daemon
    if n == 0 or (map_blocks is None and not parallel):
        ions = []
        for i in range(n):
            # Averaged one ion at a time: no second copy of every trajectory in memory.
            ions.append(cluster_ion(denoise(x[i] if on_disk else x[:, i, :], window), params))
            if progress is not None:
                progress(i + 1, n)
        return Clustering(np.asarray(atoms), ions, params.silhouette, window)
    if map_blocks is None:
        map_blocks = ProcessPoolMap(min(n_jobs, n))
        # Small blocks keep the progress bar moving and the processes evenly loaded.
        block_ions = block_ions or -(-n // min(n, 4 * n_jobs))
    # At most 64 blocks, each of at least 10^5 ion-frames (a few tenths of a second):
    # enough to share among workers, few enough that the per-job overhead stays small.
    t = x.shape[1] if on_disk else x.shape[0]
    block_ions = block_ions or getattr(map_blocks, "block_ions", None) or max(-(-n // 64), -(-100_000 // max(t, 1)))
    bounds = list(range(0, n, block_ions)) + [n]
    spans = list(zip(bounds[:-1], bounds[1:]))
    settings = params.to_dict()
    blocks = []
    for a, b in spans:
        ids = [int(v) for v in atoms[a:b]]
        if on_disk:
            blocks.append((str(positions_A), a, b, ids, settings, window))
        else:  # ion-major, as cluster_block reads it
            blocks.append((np.ascontiguousarray(np.moveaxis(x[:, a:b], 1, 0)), 0, b - a, ids, settings, window))
    finished = [0]

    def done(k):
        finished[0] += spans[k][1] - spans[k][0]
        if progress is not None:
            progress(finished[0], n)

    results = map_blocks(cluster_block, blocks, done)
    return Clustering.concatenate([Clustering.from_arrays(r) for r in results])


def cluster_block(source, start: int, stop: int, atoms: list, params: dict, window: int) -> dict[str, np.ndarray]:
    """Cluster ions ``start:stop`` of ion-major positions (N, T, 3) in Å: ``source`` is the
    array or the path of the ``.npy`` (opened memory-mapped). ``params`` is
    :meth:`Parameters.to_dict`; the result is :meth:`Clustering.to_arrays` of the block."""
    x = np.load(source, mmap_mode="r") if isinstance(source, (str, os.PathLike)) else source
    p = Parameters.from_dict(params)
    ions = [cluster_ion(denoise(x[i], window), p) for i in range(start, stop)]
    return Clustering(np.asarray(atoms, dtype=int), ions, p.silhouette, window).to_arrays()


class ProcessPoolMap:
    """The local block executor: ``n_jobs`` spawned processes (see :func:`cluster_ions`)."""

    def __init__(self, n_jobs: int):
        self.n_jobs = n_jobs

    def __call__(self, fn, blocks, done=None) -> list:
        out: list = [None] * len(blocks)
        with ProcessPoolExecutor(max_workers=self.n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(fn, *b): k for k, b in enumerate(blocks)}
            for fut in as_completed(futures):
                k = futures[fut]
                out[k] = fut.result()
                if done is not None:
                    done(k)
        return out


def write_npy(path: str | os.PathLike, dtype, shape: tuple, fill: Callable[[np.ndarray], None]) -> None:
    """Write an ``.npy`` of ``shape`` by letting ``fill`` write into it memory-mapped (no
    copy in memory), under a temporary name then renamed: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    need = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if shutil.disk_usage(path.parent).free < need:  # a memory map on a full disk is a SIGBUS, not an error
        raise OSError(errno.ENOSPC, f"No space left on device: {need / 1e9:.2f} GB needed for {path.name}")
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        fill(out)
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_ion_major(positions_A: np.ndarray, path: str | os.PathLike) -> None:
    """Save positions (T, N, 3) as an ion-major ``.npy`` (N, T, 3), same dtype, so that a
    block of ions is one contiguous read, written about 16 MB at a time (:func:`write_npy`)."""
    t, n = positions_A.shape[:2]
    step = max(1, (16 << 20) // max(1, t * 3 * positions_A.dtype.itemsize))

    def fill(out):
        for a in range(0, n, step):
            out[a : a + step] = np.moveaxis(positions_A[:, a : a + step], 1, 0)

    write_npy(path, positions_A.dtype, (n, t, 3), fill)


def select(
    clustering: Clustering,
    positions_A: np.ndarray,
    threshold: float,
    min_separation_A: float = 0.0,
    merge_A: float | None = None,
    max_radius_A: float | None = None,
) -> Centres:
    """Pick K per ion and window: the K of best mean silhouette, or 1 if that is below
    ``threshold``; then stitch the windows' centres into one set per ion.

    Only K whose centres are all at least ``min_separation_A`` apart are eligible:
    the hop rule cannot tell apart two centres whose vibration spheres overlap
    (pass 2 r_vib), and such a split is a single site wandering, not two sites.
    Nor are K whose clusters have a root-mean-square radius above ``max_radius_A``
    (default 2 ``min_separation_A``, i.e. 4 r_vib): such a cluster is a group of sites,
    not a vibration centre. The squared silhouette rates a split of a long walk into
    two far-apart halves highly, so without this rule a window (or a whole run) in
    which an ion roams far gets two "centres" that are no site at all.
    A window with K = 1 contributes the mean of its frames. Centres of different
    windows are merged (complete linkage, so no chains) when they lie within
    ``merge_A`` of each other (default ``min_separation_A``, or 1 Å if that is 0),
    as frame-weighted means; centres are numbered by the first window that holds them.
    The stitched centres are then refined on all of the ion's frames (:func:`refine`:
    Lloyd passes over its whole-run histogram, merges within ``merge_A`` or by the pair
    silhouette at ``threshold``), so that one site seen a little apart in different
    windows becomes one centre. An ion clustered as one window gets its window's centres
    unchanged.
    """
    merge_A = merge_A if merge_A is not None else (min_separation_A or 1.0)
    max_radius_A = max_radius_A if max_radius_A is not None else (2 * min_separation_A or np.inf)
    n_frames = positions_A.shape[0]
    centres, ks, best = [], [], []
    for i, c in enumerate(clustering.ions):
        bounds = c.bounds if c.bounds is not None else np.array([0, n_frames])
        picks, weights, sils = [], [], []
        for w, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            m = np.flatnonzero(c.window == w)
            ok = (_separations(c)[m] >= min_separation_A) & (_radii(c)[m] <= max_radius_A)
            sil = np.where(ok, c.silhouette[m], -np.inf)
            j = int(np.argmax(sil)) if len(sil) and np.isfinite(sil).any() else -1
            s = float(sil[j]) if j >= 0 else -1.0
            sils.append(s)
            if j < 0 or s < threshold:
                picks.append(_window_mean(c, positions_A, i, w, a, b))
                weights.append(np.array([float(b - a)]))
            else:
                picks.append(c.centres[m[j]])
                weights.append(c.sizes[m[j]])
        lengths = np.diff(bounds).astype(float)
        best.append(float(np.dot(sils, lengths) / lengths.sum()))
        if len(picks) == 1:
            centres.append(picks[0])
        else:
            stitched = stitch(np.concatenate(picks), np.concatenate(weights), merge_A)
            centres.append(_refined(c, clustering, positions_A, i, stitched, merge_A, threshold))
        ks.append(len(centres[-1]))
    return Centres(centres, np.array(ks), np.array(best))


def _separations(c) -> np.ndarray:
    """Smallest centre-centre distance of each (window, K) candidate of one ion, computed
    once per clustering (it does not depend on the slider values)."""
    if getattr(c, "_min_sep", None) is None:
        c._min_sep = np.array([_min_separation(mu) for mu in c.centres], float)
    return c._min_sep


def _window_mean(c, positions_A: np.ndarray, ion: int, w: int, a: int, b: int) -> np.ndarray:
    """Mean position (1, 3) of ion ``ion`` over window ``w`` (frames a..b-1), computed once
    per clustering: the single centre of a window where the ion stays put."""
    cache = c.__dict__.setdefault("_means", {})
    if w not in cache:
        cache[w] = positions_A[a:b, ion, :].mean(axis=0, keepdims=True)
    return cache[w]


def _refined(c, clustering: "Clustering", positions_A: np.ndarray, ion: int, stitched: np.ndarray, merge_A: float,
             threshold: float) -> np.ndarray:
    """:func:`refine` of one ion's stitched centres on its whole-run histogram (of the
    positions averaged as the clustering saw them), both the histogram and the result kept
    per clustering (a slider move changes the stitched set of a few ions only)."""
    cache = c.__dict__.setdefault("_refined", {})
    key = (stitched.tobytes(), merge_A, threshold)
    if key not in cache:
        if getattr(c, "_hist", None) is None:
            x = denoise(np.asarray(positions_A[:, ion, :], dtype=np.float64), clustering.denoise_frames)
            c._hist = _voxel_histogram(x, REFINE_VOXEL_A)
        if len(cache) > 8:
            cache.clear()
        cache[key] = refine(*c._hist, stitched, merge_A, threshold)
    return cache[key]


#: Voxel (Å) of the whole-run histogram the stitched centres are refined on: a voxel's
#: frames go to one centre, so a cluster boundary is placed to within 0.1 Å.
REFINE_VOXEL_A = 0.2


def refine(points: np.ndarray, weights: np.ndarray, centres_A: np.ndarray, merge_A: float, threshold: float,
           rounds: int = 6, max_iter: int = 20) -> np.ndarray:
    """Stitched centres (K, 3) of one ion refined on all of its frames.

    ``points`` (P, 3) Å and ``weights`` (P,) frames are the ion's whole-run histogram. Each
    round: weighted Lloyd iterations from the current centres (at most ``max_iter``), then
    merges by the two rules under which the paper's method would not have separated two
    centres: complete-linkage groups within ``merge_A`` (2 r_vib, as :func:`stitch` and
    the separation rule of :func:`select`), and neighbouring centres (nearest and second
    nearest of some voxel) whose joint frames split in two have a mean squared silhouette
    below ``threshold`` (the paper's K = 1 against K = 2 decision on those frames; pairs
    merged in order of lowest silhouette, each centre once per round). Rounds repeat until
    nothing merges (at most ``rounds``).

    Why: in each window an ion's cloud around a site is split according to what else it
    visits there, so the windows' estimates of one site lie up to ~1 Å apart, and those
    beyond ``merge_A`` survive stitching as two centres with spurious short hops between
    them. On all the frames, two centres of one site share its cloud, and the paper's
    silhouette rule says whether that cloud is one site or two.
    A centre that no voxel is nearest to is dropped (it holds no frame).

    Nearest centres by a k-d tree: a pass costs O(P log K), so the cost per ion-frame
    hardly depends on the number of sites (at most ``rounds * (max_iter + 2)`` passes).
    Centres keep their order (a merged centre takes its first member's place).
    """
    from scipy.spatial import cKDTree

    origin = points.mean(axis=0)
    pts = points - origin
    mu = np.asarray(centres_A, dtype=np.float64) - origin
    tol2 = (1e-4) ** 2  # Å^2: a centre moving less than 1e-4 Å has converged
    for _ in range(rounds):
        for _ in range(max_iter):
            labels = cKDTree(mu).query(pts)[1]
            mass = np.bincount(labels, weights=weights, minlength=len(mu))
            keep = mass > 0
            new = _weighted_means(pts, weights, labels, len(mu))[keep]
            moved = len(new) != len(mu) or np.max(np.sum((new - mu) ** 2, axis=1)) > tol2
            mu = new
            if not moved:
                break
        if len(mu) < 2:
            break
        near = cKDTree(mu).query(pts, k=2)[1]
        labels = near[:, 0]
        mass = np.bincount(labels, weights=weights, minlength=len(mu))
        group = fcluster(linkage(mu, method="complete"), t=merge_A, criterion="distance") - 1
        if len(np.unique(group)) == len(mu):  # none within merge_A: the silhouette rule
            group = _silhouette_merges(pts, weights, labels, near[:, 1], len(mu), threshold)
        if len(np.unique(group)) == len(mu):
            break
        mu = _merge(mu, mass, group)
    return mu + origin


def _weighted_means(pts, weights, labels, k):
    mass = np.bincount(labels, weights=weights, minlength=k)
    sums = np.stack([np.bincount(labels, weights=weights * pts[:, d], minlength=k) for d in range(3)], axis=1)
    return sums / np.maximum(mass, 1e-300)[:, None]


def _merge(mu, mass, group):
    """Centres merged by ``group`` (K,) as ``mass``-weighted means, numbered by first member."""
    _, first, inverse = np.unique(group, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))[inverse]
    n = len(first)
    w = np.maximum(mass, 1e-12)
    sums = np.stack([np.bincount(rank, weights=w * mu[:, d], minlength=n) for d in range(3)], axis=1)
    return sums / np.bincount(rank, weights=w, minlength=n)[:, None]


def _pair_silhouette(pts: np.ndarray, weights: np.ndarray, second: np.ndarray) -> float:
    """Weighted mean squared silhouette (:func:`squared_silhouette`, voxels standing for
    their ``weights`` frames) of voxels ``pts`` split in two by the bool ``second``."""
    lab = second.astype(int)
    mass = np.bincount(lab, weights=weights, minlength=2)
    if (mass <= 1).any():
        return -1.0  # a cluster of at most one frame is no site
    mu = _weighted_means(pts, weights, lab, 2)
    d2 = np.stack([np.einsum("pd,pd->p", pts - m, pts - m) for m in mu])  # (2, P)
    t = np.arange(len(pts))
    own, other = d2[lab, t], d2[1 - lab, t]
    spread = np.bincount(lab, weights=weights * own, minlength=2) / mass
    m_own = mass[lab]
    a = m_own / (m_own - 1) * (own + spread[lab])
    b = other + spread[1 - lab]
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-300)
    return float(np.sum(weights * s) / np.sum(weights))


def _silhouette_merges(pts, weights, labels, second, k, threshold) -> np.ndarray:
    """Merge groups (K,) of the neighbouring centre pairs (a voxel's nearest ``labels`` and
    second nearest ``second``) whose joint voxels, split between the two, have a weighted
    mean squared silhouette below ``threshold``: lowest first, each centre once."""
    pairs = np.unique(np.sort(np.stack([labels, second], axis=1), axis=1), axis=0)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(k + 1))
    sil = np.empty(len(pairs))
    for j, (a, b) in enumerate(pairs):
        idx = np.concatenate([order[starts[a] : starts[a + 1]], order[starts[b] : starts[b + 1]]])
        sil[j] = _pair_silhouette(pts[idx], weights[idx], labels[idx] == b)
    group = np.arange(k)
    used = np.zeros(k, bool)
    for j in np.argsort(sil, kind="stable"):
        a, b = pairs[j]
        if sil[j] >= threshold:
            break
        if not used[a] and not used[b]:
            group[b] = a
            used[a] = used[b] = True
    return group


def _radii(c) -> np.ndarray:
    """Largest cluster rms radius of each (window, K) candidate of one ion, computed once."""
    if getattr(c, "_max_radius", None) is None:
        c._max_radius = np.array([r.max(initial=0) for r in c.radius], float)
    return c._max_radius


def stitch(centres_A: np.ndarray, weights: np.ndarray, merge_A: float) -> np.ndarray:
    """Merge centres (n, 3) of one ion found in different windows into one site set.

    Complete linkage: a merged group's centres all lie within ``merge_A`` (Å) of each
    other, so a row of sites closer than that to their neighbours is not chained into
    one. Each group becomes the ``weights``-weighted mean (frames) of its centres; groups
    are returned in the order of their first member in ``centres_A``.
    """
    if len(centres_A) < 2:
        return centres_A
    return _merge(centres_A, weights, fcluster(linkage(centres_A, method="complete"), t=merge_A, criterion="distance"))


def _min_separation(mu: np.ndarray) -> float:
    if len(mu) < 2:
        return np.inf
    d = np.sqrt(_sqdist(mu, mu))
    return float(d[np.triu_indices(len(mu), 1)].min())


def _voxel_histogram(x: np.ndarray, voxel_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Distinct places of a cloud: voxel means and frame counts."""
    if voxel_A <= 0:
        return x, np.ones(len(x))
    cells = np.floor(x / voxel_A).astype(np.int64)
    cells -= cells.min(axis=0)
    span = cells.max(axis=0) + 1
    keys = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]  # one integer per voxel
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    means = np.stack([np.bincount(inverse, weights=x[:, d]) for d in range(3)], axis=1) / counts[:, None]
    return means, counts.astype(float)


def weighted_kmeans(points: np.ndarray, weights: np.ndarray, k: int, n_init: int = 10, seed: int = 0, max_iter: int = 300) -> np.ndarray:
    """k-means of weighted points, all ``n_init`` restarts at once; the centres (k, 3)
    of the restart with the lowest weighted inertia (:func:`weighted_kmeans_scan` of one K)."""
    return weighted_kmeans_scan(points, weights, [k], n_init, seed, max_iter)[0]


def weighted_kmeans_scan(points: np.ndarray, weights: np.ndarray, ks, n_init: int = 10, seed: int = 0,
                         max_iter: int = 300) -> list[np.ndarray]:
    """k-means of weighted points (P, 3) for every K in ``ks``: per K, the centres (K, 3) of
    the restart of lowest weighted inertia.

    Each K is as if run alone: ``n_init`` restarts seeded by k-means++ (D^2-weighted
    sampling) from ``default_rng(seed)``, refined by Lloyd iterations until no centre moves
    by more than 1e-6 of the data's spread. The seeds of K are the first K of the seeds of
    the largest K (the same random draws in the same order), so they are drawn once for
    all K. The restarts of one K iterate together, and a restart leaves once converged
    (it would not move again); the histograms are small, so one K costs about a millisecond.
    """
    rng = np.random.default_rng(seed)
    # About the points' mean: k-means is translation invariant, and the expanded
    # distances below lose no precision on unwrapped positions far from the origin.
    origin = points.mean(axis=0)
    points = points - origin
    p = len(points)
    ks = [int(k) for k in ks]
    w = weights / weights.sum()
    seeds = np.empty((n_init, max(ks), 3))
    seeds[:, 0] = points[rng.choice(p, size=n_init, p=w)]
    d2 = _sqdist_batch(points, seeds[:, :1])[..., 0]  # (n_init, P)
    for j in range(1, max(ks)):
        prob = d2 * w
        total = prob.sum(axis=1, keepdims=True)
        prob = np.where(total > 0, prob / np.where(total > 0, total, 1), 1.0 / p)
        pick = np.minimum((np.cumsum(prob, axis=1) < rng.random((n_init, 1))).sum(axis=1), p - 1)
        seeds[:, j] = points[pick]
        d2 = np.minimum(d2, _sqdist_batch(points, seeds[:, j : j + 1])[..., 0])
    tol = 1e-12 * max(float(np.sum(np.var(points, axis=0))), 1e-12)
    # Weighted points with their weight as a 4th column: one matrix product per
    # iteration gives every cluster's weighted sum and total weight.
    wp = np.concatenate([points * weights[:, None], weights[:, None]], axis=1)  # (P, 4)
    minus_2pt = np.concatenate([-2.0 * points.T, np.ones((1, p))])  # (4, P): -2 p and a row of ones
    pp = np.einsum("pd,pd->p", points, points)
    out = []
    for k in ks:
        centres = seeds[:, :k].copy()
        active = np.arange(n_init)
        for _ in range(max_iter):
            c = centres[active]
            n = len(active)
            nearest, _ = _nearest(c, minus_2pt)
            sums = (nearest.reshape(n * k, p).astype(float) @ wp).reshape(n, k, 4)
            wsum = sums[..., 3]
            empty = wsum == 0
            new = np.where(empty[..., None], c, sums[..., :3] / np.where(empty, 1, wsum)[..., None])
            shift = np.max(np.sum((new - c) ** 2, axis=2), axis=1)
            centres[active] = new
            active = active[shift > tol]
            if not len(active):
                break
        _, low = _nearest(centres, minus_2pt)
        inertia = np.sum(np.maximum(low + pp, 0.0) * weights, axis=1)
        out.append(centres[int(np.argmin(inertia))] + origin)
    return out


def _nearest(centres: np.ndarray, minus_2pt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each point's nearest centre per restart: a one-hot table (n, k, P) of bool (the first
    centre on a tie, as argmin) and the smallest |c|^2 - 2 p.c (n, P), from centres (n, k, 3)
    and -2 times the points, transposed, over a row of ones (4, P). The reductions run over the middle axis:
    numpy's argmin over a short last axis is many times slower."""
    n, k, _ = centres.shape
    flat = centres.reshape(n * k, 3)
    # |c|^2 as a 4th column against a row of ones: the whole score in one matrix product.
    score = (np.concatenate([flat, np.einsum("cd,cd->c", flat, flat)[:, None]], axis=1) @ minus_2pt).reshape(n, k, -1)
    low = score.min(axis=1)
    onehot = score == low[:, None, :]
    if np.count_nonzero(onehot) != low.size:  # a point equidistant from two centres
        onehot = score.argmin(axis=1)[:, None, :] == np.arange(k)[None, :, None]
    return onehot, low


def _sqdist_batch(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared distances (n_init, P, k) from points (P, 3) to each restart's centres (n_init, k, 3)."""
    # Per axis, summed in the same order as before: no (n_init, P, k, 3) temporary.
    out = None
    for d in range(3):
        diff = points[None, :, None, d] - centres[:, None, :, d]
        diff *= diff
        out = diff if out is None else out + diff
    return out


def _label_frames(x, mu):
    """Every frame labelled to its nearest centre of the histogram's k-means ``mu``; the
    centres become the means of their frames. Returns (centres (K, 3), labels (T,), frames
    per centre (K,), squared distances (K, T) of every frame to every centre).

    Voxel positions are the exact means of their frames, so the histogram's weighted
    centroids are the frames' centroids; the only approximation is that one voxel's
    frames cannot be split between clusters (voxels are 0.1 Å).

    A centre that no frame is nearest to (its voxels' frames all lie nearer other centres)
    is moved to the frame farthest from its own cluster's mean, as scikit-learn's k-means
    relocates empty clusters, so that K centres come back for every K tried (the K
    recorded with them). Only with fewer than K distinct frames can one stay empty; it
    is then dropped, and the entry has fewer centres than its K.
    """
    k = len(mu)
    labels = _argmin0(_sqdist_kt(x, mu))
    counts = np.bincount(labels, minlength=k).astype(float)
    for _ in range(2 * k):
        empty = np.flatnonzero(counts == 0)
        if not len(empty):
            break
        mu = _cluster_means(x, labels, counts)
        own = np.einsum("td,td->t", x - mu[labels], x - mu[labels])
        far = int(np.argmax(own))
        if own[far] <= 0:
            break  # every frame sits on its centre: fewer distinct frames than K
        mu[empty[0]] = x[far]
        labels = _argmin0(_sqdist_kt(x, mu))
        counts = np.bincount(labels, minlength=k).astype(float)
    if not (counts > 0).all():
        mu = mu[counts > 0]
        labels = _argmin0(_sqdist_kt(x, mu))
        counts = np.bincount(labels, minlength=len(mu)).astype(float)
    centres = _cluster_means(x, labels, counts)
    return centres, labels, counts, _sqdist_kt(x, centres)


def _sqdist_kt(x, mu):
    """Squared distances (K, T) between centres and points, as :func:`_sqdist` (transposed):
    centre-major, so that the reductions over centres run over the first axis (numpy's
    reductions over a short last axis are many times slower)."""
    o = mu.mean(axis=0)
    xc, mc = x - o, mu - o
    d = np.einsum("td,td->t", xc, xc)[None, :] - 2.0 * (mc @ xc.T) + np.einsum("kd,kd->k", mc, mc)[:, None]
    return np.maximum(d, 0.0)


def _argmin0(d):
    """``d.argmin(axis=0)`` of a (K, T) table, by a min over the first axis (the first
    index on a tie, as argmin)."""
    low = d.min(axis=0)
    eq = d == low
    if np.count_nonzero(eq) != d.shape[1]:
        return d.argmin(axis=0)
    return np.arange(len(d)) @ eq


def _cluster_means(x, labels, counts):
    k = len(counts)
    sums = np.stack([np.bincount(labels, weights=x[:, d], minlength=k) for d in range(3)], axis=1)
    return sums / np.maximum(counts, 1)[:, None]


def _sqdist(x, mu):
    """Squared distances (T, K) between points and centres.

    Expanded as |x|^2 - 2 x.mu + |mu|^2 (one matrix product) around the centres' mean,
    so the cancellation error stays far below the Å^2 scales compared here.
    """
    o = mu.mean(axis=0)
    xc, mc = x - o, mu - o
    d = np.einsum("td,td->t", xc, xc)[:, None] - 2.0 * (xc @ mc.T) + np.einsum("kd,kd->k", mc, mc)[None, :]
    return np.maximum(d, 0.0)
