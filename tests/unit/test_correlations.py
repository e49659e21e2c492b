import numpy as np
import pytest

from iondiff_core import pipeline
from iondiff_core.correlations import (
    FWHM_TO_SIGMA,
    classify_pairs,
    correlate,
    event_sigmas,
    pearson,
    random_reference,
    smooth,
)
from iondiff_core.distribution import fit_exponential, n_distribution
from iondiff_core.hops import Hops
from iondiff_core.parameters import Parameters


def make_hops(ion, start, end, origin=None, target=None):
    n = len(ion)
    origin = np.zeros((n, 3)) if origin is None else np.asarray(origin, float)
    target = np.ones((n, 3)) if target is None else np.asarray(target, float)
    return Hops(
        np.asarray(ion), np.asarray(start), np.asarray(end), np.zeros(n, int), np.ones(n, int),
        origin, target, np.linalg.norm(target - origin, axis=1), np.zeros(n, bool), np.ones(n, bool),
    )


def dense_series(mids, sigmas, t):
    f = np.arange(t)
    return np.exp(-0.5 * ((f[None, :] - mids[:, None]) / sigmas[:, None]) ** 2)


def test_sparse_pearson_equals_dense_corrcoef():
    rng = np.random.default_rng(0)
    t = 3000
    mids = rng.uniform(0, t - 1, 40)
    sig = rng.uniform(0.4, 12, 40)
    s = smooth(mids, sig, t)
    assert np.allclose(s.matrix.toarray(), dense_series(mids, sig, t), atol=1e-7)
    assert np.allclose(pearson(s, t), np.corrcoef(dense_series(mids, sig, t)), atol=1e-6)


def test_fwhm_equals_hop_duration():
    h = make_hops([0], [10], [19])  # 10 frames
    sig = event_sigmas(h)
    assert sig[0] / FWHM_TO_SIGMA == pytest.approx(10)
    s = smooth(np.array([14.5]), sig, 40).matrix.toarray()[0]
    above = np.flatnonzero(s >= 0.5)
    assert above[-1] - above[0] + 1 == 10


def test_random_reference_mean_matches_brute_force():
    rng = np.random.default_rng(1)
    sig = rng.uniform(1, 6, 30)
    ref = random_reference(sig, 2000, repetitions=20, seed=5)
    rng = np.random.default_rng(5)
    vals = []
    for _ in range(20):
        mids = rng.uniform(0, 1999, 30)
        c = np.corrcoef(dense_series(mids, sig, 2000))
        vals.append(c[~np.eye(30, dtype=bool)])
    assert ref.mean == pytest.approx(np.mean(vals), abs=1e-6)
    assert ref.level(0.5) == pytest.approx(np.quantile(np.concatenate(vals), 0.5), abs=2e-4)


def test_groups_are_connected_components_ordered_in_time():
    # three overlapping hops (a chain), one isolated, two overlapping later.
    h = make_hops([0, 1, 2, 3, 4, 5], [100, 103, 106, 500, 900, 902], [109, 112, 115, 509, 909, 911])
    c = correlate(h, 1200, level=0.01)
    assert [g.tolist() for g in c.groups] == [[0, 1, 2], [3], [4, 5]]
    assert list(c.sizes) == [3, 1, 2]
    b = c.binary()
    assert b[0, 1] == b[1, 2] == 1 and b[0, 3] == 0
    assert list(c.order) == [0, 1, 2, 3, 4, 5]


def test_mechanisms_of_pairs():
    cell = np.eye(3) * 10
    # vacancy following: ion 1 ends where ion 0 started; knock-out: ion 2's end is ion 3's start.
    h = make_hops(
        [0, 1, 2, 3, 4, 5],
        [100, 104, 400, 403, 700, 703],
        [109, 113, 409, 412, 709, 712],
        origin=[[0, 0, 0], [2.5, 0, 0], [5, 5, 5], [7.5, 5, 5], [1, 1, 1], [8, 8, 8]],
        # ion 1 ends across the periodic boundary image of ion 0's start (10 Å away)
        target=[[-2.5, 0, 0], [10.2, 0, 0], [7.5, 5, 5], [10, 5, 5], [3, 1, 1], [6, 8, 8]],
    )
    c = correlate(h, 1000, level=0.01)
    m = classify_pairs(h, c, cell, 1.0)
    assert list(m.kind) == ["vacancy_following", "knock_out", "other"]
    assert m.counts()["vacancy_following"] == 1


def test_exponential_fit_recovers_parameters():
    n = np.arange(1, 21)
    p = 0.22 * np.exp(-0.25 * n)
    fit = fit_exponential(n, p)
    assert fit.A == pytest.approx(0.22, rel=1e-6) and fit.b == pytest.approx(0.25, rel=1e-6)
    assert fit.b_err < 1e-6


def test_n_distribution_counts_groups_and_overflow():
    d = n_distribution(np.array([1, 1, 1, 2, 2, 3, 25]), n_max=20)
    assert d.counts[:3].tolist() == [3, 2, 1] and d.overflow == 1
    assert d.p.sum() == pytest.approx(1.0)
    assert d.mean_n == pytest.approx(7 / 3)
    assert d.fit.n_points == 2 and d.fit.b == pytest.approx(np.log(2)) and np.isnan(d.fit.b_err)
    pooled = n_distribution(np.concatenate([[2] * 50, [3] * 30, [4] * 18, [5] * 11, [6] * 7]))
    assert pooled.fit.b > 0 and np.isfinite(pooled.fit.b_err)


def test_pipeline_groups_match_planted_chains(planted, tmp_path):
    sess = pipeline.Session.open(planted.trajectory, Parameters(), cache_dir=tmp_path)
    r = sess.result()
    assert [g.tolist() for g in r.correlations.groups] == planted.groups
    sizes = sorted(len(g) for g in planted.groups)
    assert sorted(r.correlations.sizes.tolist()) == sizes
    assert r.mechanisms.counts()["vacancy_following"] == sum(len(g) == 2 for g in planted.groups)
    cons = r.consistency.summary()
    assert cons["share_moved_with_hops"] == 1.0 and cons["residual_max_A"] < 1.5
    # A cheap parameter changes the result without reclustering; the cache is reused.
    again = pipeline.Session.open(planted.trajectory, Parameters(), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("clustering-*.npz"))) == 1
    strict = again.result(Parameters(reference_level=0.999))
    assert 0 < len(strict.correlations.edges) < len(r.correlations.edges)
    assert strict.reference_level > r.reference_level


def test_pair_distance_keeps_only_nearby_simultaneous_hops():
    cell = np.eye(3) * 20
    # Three simultaneous hops: two neighbours, one far away (across the boundary it is still far).
    h = make_hops(
        [0, 1, 2], [100, 101, 102], [109, 110, 111],
        origin=[[0, 0, 0], [2.5, 0, 0], [10, 10, 10]], target=[[-2.5, 0, 0], [0.1, 0, 0], [12.5, 10, 10]],
    )
    assert [g.tolist() for g in correlate(h, 500, 0.01).groups] == [[0, 1, 2]]
    near = correlate(h, 500, 0.01, cell=cell, pair_distance_A=3.0)
    assert [g.tolist() for g in near.groups] == [[0, 1], [2]]
