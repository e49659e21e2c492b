"""Caches that cannot go stale and are safe under threads (issue 11).

* The clustering's stage-cache key holds everything the stage reads: a change of any of
  them clusters again (counted by the calls of ``cluster_ions``), the same inputs do not.
* k-means never records K centres it does not have: an empty cluster is refilled, and
  a stored record is cut by the actual number of centres of each entry.
* The module memos (random reference, spatial pairs, null replicas, nearest centres)
  and a Session's hop memo compute each key once under 8 threads and never mix values.
"""

import dataclasses
import threading
import time

import numpy as np
import pytest

from iondiff_core import centres, pipeline
from iondiff_core.centres import Clustering, IonClustering, cluster_ions
from iondiff_core.parameters import Parameters
from iondiff_core.synthetic import make_synthetic


@pytest.fixture(scope="module")
def small():
    """A small planted run: 600 frames at 10 fs, 5 Li."""
    return make_synthetic(n_frames=600, n_mobile=5, chain_sizes=(1, 2), seed=5).trajectory


@pytest.fixture
def count_clusterings(monkeypatch):
    """The number of times the clustering stage actually runs k-means."""
    calls = []
    real = pipeline.centres_mod.cluster_ions

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline.centres_mod, "cluster_ions", counted)
    return calls


def _copy(traj, **changes):
    return dataclasses.replace(traj, warnings=list(traj.warnings), **changes)


# Each variant changes one input the clustering reads; (trajectory, parameters) of the run.
VARIANTS = {
    "timestep": lambda t, p: (_copy(t, timestep_fs=100.0), p),
    "frame range": lambda t, p: (_copy(t, positions_frac=t.positions_frac[:-20].copy(), cells=t.cells[:-20].copy()), p),
    "species names (type map)": lambda t, p: (_copy(t, species=["Li" if s == "Li" else "P" for s in t.species]), p),
    "dtype (mobile-only read)": lambda t, p: (_copy(t, positions_frac=t.positions_frac.astype(np.float32)), p),
    "unwrapping": lambda t, p: (_copy(t), p.replace(remove_drift=True)),
    "denoising": lambda t, p: (_copy(t), p.replace(denoise_fs=50.0)),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_changed_input_clusters_again(small, tmp_path, count_clusterings, variant):
    params = Parameters(species="Li")
    base = _copy(small, timestep_fs=10.0)
    pipeline.Session.open(base, params, tmp_path)
    pipeline.Session.open(_copy(small, timestep_fs=10.0), params, tmp_path)
    assert len(count_clusterings) == 1  # same inputs: loaded from the cache
    other, other_params = VARIANTS[variant](small, params)
    if other.timestep_fs is None:
        other.timestep_fs = 10.0
    session = pipeline.Session.open(other, other_params, tmp_path)
    assert len(count_clusterings) == 2, f"a different {variant} reused the cached clustering"
    # ... and what was computed is that of the new inputs, as a run without a cache finds it.
    fresh = pipeline.Session.open(_copy(other), other_params)
    for a, b in zip(session.clustering.ions, fresh.clustering.ions):
        assert len(a.centres) == len(b.centres) and all(np.array_equal(u, v) for u, v in zip(a.centres, b.centres))


def test_the_timestep_sets_the_denoising_window_of_the_clustering(small, tmp_path):
    """The reported case: a run opened at 100 fs and again at 10 fs."""
    params = Parameters(species="Li")
    assert centres.denoise_window(params.denoise_fs, 100.0) != centres.denoise_window(params.denoise_fs, 10.0)
    coarse = pipeline.Session.open(_copy(small, timestep_fs=100.0), params, tmp_path).clustering
    fine = pipeline.Session.open(_copy(small, timestep_fs=10.0), params, tmp_path).clustering
    alone = pipeline.Session.open(_copy(small, timestep_fs=10.0), params).clustering
    assert Clustering.to_arrays(fine)["centres"].tolist() == Clustering.to_arrays(alone)["centres"].tolist()
    assert Clustering.to_arrays(coarse)["centres"].tolist() != Clustering.to_arrays(fine)["centres"].tolist()


def test_new_clustering_code_does_not_read_old_entries(small, tmp_path, count_clusterings, monkeypatch):
    params = Parameters(species="Li")
    pipeline.Session.open(_copy(small, timestep_fs=10.0), params, tmp_path)
    monkeypatch.setattr(pipeline, "CLUSTERING_VERSION", pipeline.CLUSTERING_VERSION + 1)
    pipeline.Session.open(_copy(small, timestep_fs=10.0), params, tmp_path)
    assert len(count_clusterings) == 2


def test_a_record_of_the_old_layout_or_inconsistent_is_recomputed(small, tmp_path, count_clusterings):
    params = Parameters(species="Li")
    traj = _copy(small, timestep_fs=10.0)
    session = pipeline.Session.open(traj, params, tmp_path)
    cache = pipeline.StageCache(tmp_path)
    key = pipeline.clustering_key(session.prep, params)
    record = cache.load(key)
    assert record is not None and "n_centres" in record
    old = {k: v for k, v in record.items() if k != "n_centres"}
    cache.save(key, old)
    pipeline.Session.open(_copy(small, timestep_fs=10.0), params, tmp_path)
    assert len(count_clusterings) == 2  # no count of centres per entry: not trusted
    bad = dict(cache.load(key))
    bad["n_centres"] = bad["n_centres"].copy()
    bad["n_centres"][0] += 1  # claims a centre the arrays do not hold
    cache.save(key, bad)
    pipeline.Session.open(_copy(small, timestep_fs=10.0), params, tmp_path)
    assert len(count_clusterings) == 3


# ----------------------------------------------------------------------------- empty clusters
def _empty_cluster_ion(offset_A: float) -> np.ndarray:
    """Frames (T, 3) whose 3-means on the 0.1 Å voxel histogram leaves a cluster empty.

    Three voxels: 40 frames at x = -0.02, one at 0.01 and one at 0.09, 40 at 0.12 Å. The
    histogram's 3-means puts a centre on each voxel mean (-0.02, 0.05, 0.12); labelling
    every frame to its nearest centre sends 0.01 to -0.02 and 0.09 to 0.12: the middle
    centre has no frame.
    """
    x = np.concatenate([np.full(40, -0.02), [0.01, 0.09], np.full(40, 0.12)]) + offset_A
    out = np.full((len(x), 3), 0.05)
    out[:, 0] = x
    return out


def test_kmeans_with_an_empty_cluster_returns_k_centres():
    x = _empty_cluster_ion(0.0)
    params = Parameters(voxel_A=0.1)
    points, weights = centres._voxel_histogram(x, params.voxel_A)
    assert len(points) == 3
    mu0 = centres.weighted_kmeans(points, weights, 3, params.kmeans_n_init, params.seed)
    first = np.argmin(centres._sqdist(x, mu0), axis=1)
    assert len(np.unique(first)) == 2  # the data make one of the 3 clusters empty
    mu, labels, counts, _ = centres._label_frames(x, mu0)
    assert len(mu) == 3 and np.bincount(labels, minlength=3).min() >= 1 and np.array_equal(counts, np.bincount(labels))
    np.testing.assert_allclose(mu, centres._cluster_means(x, labels, np.bincount(labels, minlength=3)))


def _two_ions():
    # The second ion's positions are those of an ordinary two-site ion.
    a = _empty_cluster_ion(0.0)
    b = np.full_like(a, 5.0)
    b[len(b) // 2 :, 0] += 2.5
    b[:, 0] += np.tile([-0.03, 0.0, 0.03], len(b))[: len(b)]
    return np.stack([a, b], axis=1)  # (T, 2, 3)


def test_every_entry_holds_as_many_centres_as_its_k_and_the_record_round_trips(tmp_path):
    x = _two_ions()
    params = Parameters(voxel_A=0.1, k_max=3, denoise_fs=0.0)
    local = cluster_ions(x, np.array([0, 1]), params)
    for ion in local.ions:
        assert [len(c) for c in ion.centres] == list(ion.ks)
    back = Clustering.from_arrays(local.to_arrays())
    for p, q in zip(local.ions, back.ions):
        assert all(np.array_equal(u, v) for u, v in zip(p.centres, q.centres))


def test_a_record_with_fewer_centres_than_k_is_read_back_aligned():
    """An entry with fewer centres than its K (as k-means returned before, and still may
    with fewer distinct frames than K) does not shift the centres of later ions."""
    one = IonClustering(np.array([2, 3]), np.array([0.5, 0.4]), [np.zeros((2, 3)), np.ones((2, 3))])
    two = IonClustering(np.array([2, 3]), np.array([0.6, 0.7]), [np.full((2, 3), 7.0), np.full((3, 3), 9.0)])
    cl = Clustering(np.array([4, 9]), [one, two], "squared")
    back = pipeline.clustering_from_record(pipeline.clustering_record(cl), np.array([4, 9]))
    assert back is not None
    for p, q in zip(cl.ions, back.ions):
        assert np.array_equal(p.ks, q.ks) and [c.tolist() for c in p.centres] == [c.tolist() for c in q.centres]
        assert all(np.array_equal(u, v) for u, v in zip(p.sizes, q.sizes))
    # For other ions than the run's, the record is refused.
    assert pipeline.clustering_from_record(pipeline.clustering_record(cl), np.array([4, 8])) is None


# ----------------------------------------------------------------------------- threads
def _hammer(n_threads: int, work) -> list:
    """Run ``work(i)`` for i in 0..n_threads-1, all released at once; their results."""
    out, errors = [None] * n_threads, []
    start = threading.Barrier(n_threads)

    def run(i):
        start.wait()
        try:
            out[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return out


def test_memo_computes_each_key_once_under_8_threads():
    memo = pipeline.Memo(size=64)
    calls: dict = {}
    lock = threading.Lock()

    def compute(key):
        def f():
            with lock:
                calls[key] = calls.get(key, 0) + 1
            time.sleep(0.02)  # long enough for every thread to ask while it runs
            return np.full(1000, float(key))
        return f

    for _ in range(3):  # equal keys (all threads, twice) and distinct keys (two threads each)
        got = _hammer(8, lambda i: memo.get(("k", i % 4, np.arange(3)), compute(i % 4)))
        for i, v in enumerate(got):
            assert np.array_equal(v, np.full(1000, float(i % 4)))
        got = _hammer(8, lambda i: memo.get(("same",), compute(99)))
        assert all(v is got[0] for v in got)
    assert calls == {0: 1, 1: 1, 2: 1, 3: 1, 99: 1}


def test_memo_key_tells_arrays_of_other_dtype_or_shape_apart():
    a = np.zeros(4)
    assert pipeline.Memo.key((a,)) != pipeline.Memo.key((a.reshape(2, 2),))
    assert pipeline.Memo.key((a,)) != pipeline.Memo.key((a.view(np.int64),))


def test_a_failed_computation_is_not_stored_and_others_still_compute():
    memo = pipeline.Memo()

    def fail():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        memo.get(("x",), fail)
    assert memo.get(("x",), lambda: 3) == 3


def test_session_results_under_8_threads_compute_the_hop_stage_once_per_setting(small, monkeypatch):
    params = Parameters(species="Li")
    session = pipeline.Session.open(_copy(small, timestep_fs=10.0), params)
    calls = []
    real = pipeline.hop_stage

    def counted(prep, clustering, p):
        calls.append(p.r_vib_A)
        time.sleep(0.05)
        return real(prep, clustering, p)

    monkeypatch.setattr(pipeline, "hop_stage", counted)
    # Fresh module memos: the reference, pairs and null replicas are computed here too.
    monkeypatch.setattr(pipeline, "_MEMO", pipeline.Memo())
    monkeypatch.setattr(pipeline, "_NEAREST", pipeline.Memo(size=2))
    r_vibs = [0.45, 0.55]
    got = _hammer(8, lambda i: session.result(params.replace(r_vib_A=r_vibs[i % 2])))
    assert sorted(calls) == r_vibs  # once per setting, not once per thread
    alone = {r: pipeline.Session.open(_copy(small, timestep_fs=10.0), params).result(params.replace(r_vib_A=r)) for r in r_vibs}
    for i, res in enumerate(got):
        ref = alone[r_vibs[i % 2]]
        assert np.array_equal(res.hops.mid_frame, ref.hops.mid_frame) and np.array_equal(res.hops.ion, ref.hops.ion)
        assert np.array_equal(res.correlations.sizes, ref.correlations.sizes)


def test_a_timestep_given_as_int_or_float_is_one_key(small, tmp_path, count_clusterings):
    params = Parameters(species="Li")
    pipeline.Session.open(_copy(small, timestep_fs=10), params, tmp_path)
    pipeline.Session.open(_copy(small, timestep_fs=10.0), params, tmp_path)
    assert len(count_clusterings) == 1


def test_ion_blocks_are_keyed_on_the_clustering_version(small, tmp_path, monkeypatch):
    """Block executors store each block's result under a key of its arguments, which name
    the positions file: that name follows the code version, so no block of older code is reused."""
    seen = []

    def serial(fn, blocks, done=None):
        seen.append(blocks[0][0])
        return [fn(*b) for b in blocks]

    params = Parameters(species="Li")
    pipeline.Session.open(_copy(small, timestep_fs=10.0), params, tmp_path, map_blocks=serial)
    monkeypatch.setattr(pipeline, "CLUSTERING_VERSION", pipeline.CLUSTERING_VERSION + 1)
    pipeline.Session.open(_copy(small, timestep_fs=10.0), params, tmp_path, map_blocks=serial)
    assert len(seen) == 2 and seen[0] != seen[1]


def test_dashboard_views_under_8_threads_open_an_evicted_entry_once(small, tmp_path, monkeypatch):
    """Eight view callbacks at once, four slider settings, on an entry whose session is not
    in memory: the session is rebuilt once and each setting computed once."""
    from dashboard import analysis
    from dashboard.config import Config
    from dashboard.storage import Library
    from iondiff_core.io.xdatcar import write_xdatcar

    src = tmp_path / "run" / "XDATCAR"
    src.parent.mkdir()
    write_xdatcar(_copy(small, timestep_fs=10.0), src)
    cfg = Config.from_env(data_dir=tmp_path / "data", roots=[])
    entry = Library(cfg.library_db).get(analysis.run_analysis(cfg, src, Parameters(species="Li"), timestep_fs=10.0))
    monkeypatch.setattr(analysis, "_SESSIONS", analysis._SessionCache())
    monkeypatch.setattr(analysis, "_RESULTS", analysis.Memo(size=8, weigh=analysis.resident_bytes))
    opened, computed = [], []
    real_open, real_result = analysis.Session.open, analysis.Session.result

    def slow_open(*args, **kwargs):
        opened.append(1)
        time.sleep(0.05)
        return real_open(*args, **kwargs)

    def counted_result(self, params=None, progress=None):
        computed.append(params.r_vib_A)
        return real_result(self, params, progress)

    monkeypatch.setattr(analysis.Session, "open", slow_open)
    monkeypatch.setattr(analysis.Session, "result", counted_result)
    r_vibs = [0.45, 0.5, 0.55, 0.6]
    got = _hammer(8, lambda i: analysis.result_for(cfg, entry, {"r_vib_A": r_vibs[i % 4]}))
    assert len(opened) == 1 and sorted(computed) == r_vibs
    assert [g.params.r_vib_A for g in got] == [r_vibs[i % 4] for i in range(8)]
    assert all(got[i] is got[i + 4] for i in range(4))
