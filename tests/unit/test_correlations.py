import numpy as np
import pytest

from iondiff_core import pipeline
from iondiff_core.correlations import (
    FWHM_TO_SIGMA,
    classify_pairs,
    concertedness,
    correlate,
    event_sigmas,
    null_replicas,
    pearson_matrix,
    random_reference,
)
from iondiff_core.distribution import n_distribution
from iondiff_core.hops import Hops
from iondiff_core.parameters import Parameters
from iondiff_core.synthetic import make_independent_walkers, make_synthetic


def make_hops(ion, start, end, origin=None, target=None):
    n = len(ion)
    origin = np.zeros((n, 3)) if origin is None else np.asarray(origin, float)
    target = np.ones((n, 3)) if target is None else np.asarray(target, float)
    return Hops(
        np.asarray(ion), np.asarray(start), np.asarray(end), np.zeros(n, int), np.ones(n, int),
        origin, target, np.linalg.norm(target - origin, axis=1), np.zeros(n, bool), np.ones(n, bool),
    )


def planted_hops(syn) -> Hops:
    """The planted (true) hops of a synthetic trajectory as a Hops table."""
    p = syn.hops
    return make_hops([h.ion for h in p], [h.start for h in p], [h.end for h in p],
                     [h.origin_A for h in p], [h.target_A for h in p])


def brute_pearson(mids, sigmas, t, pad=200):
    """Pearson matrix of the Gaussian series summed over a padded frame axis, normalised by T
    (the Gaussians are not cut at the ends of the run)."""
    f = np.arange(-pad, t + pad)
    g = np.exp(-0.5 * ((f[None, :] - mids[:, None]) / sigmas[:, None]) ** 2)
    mean = g.sum(1) / t
    cov = g @ g.T / t - np.outer(mean, mean)
    sd = np.sqrt(np.diag(cov))
    return cov / np.outer(sd, sd)


def test_pearson_matrix_equals_brute_force_for_narrow_and_wide_events():
    rng = np.random.default_rng(0)
    t = 3000
    mids = rng.uniform(0, t - 1, 60)
    mids[:10] = mids[10:20] + rng.uniform(-3, 3, 10)  # force overlaps
    sig = rng.uniform(0.15, 12, 60)
    fast, brute = pearson_matrix(mids, sig, t), brute_pearson(mids, sig, t)
    # Pairs beyond their reach are given C = -z z exactly (the true overlap term is < 1e-6).
    assert np.allclose(fast, brute, atol=1e-6)
    assert np.array_equal(fast > 0, brute > 0)


def test_fwhm_equals_hop_duration_and_padded_rule_adds_two_frames():
    h = make_hops([0], [10], [19])  # 10 frames
    assert event_sigmas(h, rule="duration")[0] / FWHM_TO_SIGMA == pytest.approx(10)
    assert event_sigmas(h)[0] / FWHM_TO_SIGMA == pytest.approx(12)  # default: padded
    g = np.exp(-0.5 * ((np.arange(40) - 14.5) / event_sigmas(h, rule="duration")[0]) ** 2)
    above = np.flatnonzero(g >= 0.5)
    assert above[-1] - above[0] + 1 == 10


def test_random_reference_mean_and_quantiles_are_exact():
    rng = np.random.default_rng(1)
    sig = rng.uniform(1, 6, 30)
    ref = random_reference(sig, 400, repetitions=20, seed=5)
    rng = np.random.default_rng(5)
    vals = []
    for _ in range(20):
        c = brute_pearson(rng.uniform(0, 399, 30), sig, 400)
        vals.append(c[np.triu_indices(30, 1)])
    vals = np.concatenate(vals)
    assert ref.mean == pytest.approx(vals.mean(), abs=1e-7)  # tails beyond the reach: < 1e-7
    for q in (0.9, 0.95, 0.99, 0.999):
        exact = np.quantile(vals, q, method="inverted_cdf")
        assert ref.level(q) == pytest.approx(max(exact, 0.0), abs=1e-9), q


def test_higher_quantile_is_always_stricter():
    rng = np.random.default_rng(2)
    sig = rng.uniform(1, 6, 400)
    ref = random_reference(sig, 20000, repetitions=50, seed=0)
    levels = [ref.level(q) for q in (0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999)]
    assert levels == sorted(levels) and levels[-1] > levels[-2] > 0


def test_non_overlapping_hops_are_never_concerted_whatever_the_level():
    # Two hops 200 frames apart: C = -z z < 0; a negative level must not link them.
    h = make_hops([0, 1], [100, 300], [109, 309])
    c = correlate(h, 1000, level=-0.5)
    assert len(c.edges) == 0 and list(c.sizes) == [1, 1]
    assert c.matrix[0, 1] < 0


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


def test_pipeline_groups_match_planted_chains(planted, tmp_path):
    sess = pipeline.Session.open(planted.trajectory, Parameters(), cache_dir=tmp_path)
    r = sess.result()
    # The planted hop cut by the end of the run is an unfinished excursion, not a hop.
    finished = [g for g in planted.groups if not any(planted.hops[k].open_ended for k in g)]
    assert len(finished) == len(planted.groups) - 1 and len(r.excursions) == 1
    assert [g.tolist() for g in r.correlations.groups] == finished
    sizes = sorted(len(g) for g in finished)
    assert sorted(r.correlations.sizes.tolist()) == sizes
    assert r.mechanisms.counts()["vacancy_following"] == sum(len(g) == 2 for g in finished)
    cons = r.consistency.summary()
    assert cons["share_moved_with_hops"] == 1.0 and cons["residual_max_A"] < 1.5
    # A cheap parameter changes the result without reclustering; the cache is reused.
    again = pipeline.Session.open(planted.trajectory, Parameters(), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("clustering-*.npz"))) == 1
    strict = again.result(Parameters(reference_level=0.999))
    assert 0 < len(strict.correlations.edges) <= len(r.correlations.edges)
    assert strict.reference_level > r.reference_level
    assert r.concertedness.verdict == "beyond_chance" and r.concertedness.p_value < 0.01
    planted_share = sum(len(g) for g in planted.groups if len(g) > 1) / len(r.hops)
    assert r.concertedness.observed_fraction == pytest.approx(planted_share)


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


def test_dense_and_sparse_paths_give_the_same_groups():
    syn = make_independent_walkers(n_frames=6000, n_mobile=40, hops_per_ion=12, seed=3)
    h = planted_hops(syn)
    for level in (0.0, 0.1, 0.3):
        c = correlate(h, 6000, level)
        iu = np.triu_indices(len(h), 1)
        from_matrix = np.stack([iu[0], iu[1]], 1)[c.matrix[iu] > max(level, 0)]  # the dense path
        assert np.array_equal(from_matrix, c.edges[np.lexsort((c.edges[:, 1], c.edges[:, 0]))])
        # Groups of the dense binarised matrix = groups of the sparse pairs.
        from scipy.sparse.csgraph import connected_components
        dense_labels = connected_components(c.matrix > max(level, 0), directed=False)[1]
        assert len(set(zip(dense_labels, c.group_of))) == len(set(dense_labels)) == len(set(c.group_of))


def test_groups_do_not_depend_on_the_seed(planted):
    """The reference's seed changes only its sampling: the groups stay the planted chains
    (the mean level is ~0 and only overlapping pairs can be concerted)."""
    h = planted_hops(planted)
    sig = event_sigmas(h)
    groups = set()
    for seed in range(8):
        ref = random_reference(sig, 6000, 100, seed)
        assert abs(ref.mean) < 1e-3
        for spec in ("mean", 0.95):
            groups.add(tuple(tuple(g.tolist()) for g in correlate(h, 6000, ref.level(spec)).groups))
    assert groups == {tuple(tuple(g) for g in planted.groups)}


def test_independent_walkers_are_chance_and_the_test_is_calibrated():
    """64 uncoupled random walkers, 20 hops each: chance at (almost) every seed, and the
    p-values spread uniformly, so the verdict's false-positive rate is its alpha."""
    verdicts, pvals = [], []
    for seed in range(12):
        syn = make_independent_walkers(n_frames=20000, n_mobile=64, hops_per_ion=20, seed=seed)
        h = planted_hops(syn)
        sig = event_sigmas(h)
        level = random_reference(sig, 20000, 100, seed).level("mean")
        obs = correlate(h, 20000, level)
        conc = concertedness(obs.sizes, null_replicas(h, sig, 20000, level, 200, seed))
        verdicts.append(conc.verdict)
        pvals.append(conc.p_value)
        assert abs(conc.excess) < 0.03
    assert verdicts.count("chance") >= 11, list(zip(verdicts, pvals))
    assert 0.3 < np.mean(pvals) < 0.85  # uniform, with ties counted as ">=" (conservative)


def test_planted_chains_are_beyond_chance_and_each_chain_one_group():
    syn = make_synthetic(n_frames=20000, n_mobile=40, grid=5, chain_sizes=(1, 2, 3, 4, 2, 3, 5, 1, 2, 3) * 3, seed=4)
    h = planted_hops(syn)
    sig = event_sigmas(h)
    level = random_reference(sig, 20000, 100, 0).level("mean")
    obs = correlate(h, 20000, level)
    assert [g.tolist() for g in obs.groups] == syn.groups
    conc = concertedness(obs.sizes, null_replicas(h, sig, 20000, level, 200, 0))
    assert conc.verdict == "beyond_chance" and conc.excess > 0.3, conc.message


def test_percolated_verdict_and_null_pdf_shape():
    # Everything overlaps everything: one group of all hops.
    h = make_hops(list(range(30)), [100 + i for i in range(30)], [140 + i for i in range(30)])
    sig = event_sigmas(h)
    obs = correlate(h, 2000, 0.0)
    conc = concertedness(obs.sizes, null_replicas(h, sig, 2000, 0.0, 50, 0), n_max=20)
    assert conc.verdict == "percolated" and "spatial criterion" in conc.message
    assert conc.null_p.shape == (20,) and conc.null_p_ci95.shape == (2, 20)
    assert conc.null_p.sum() + conc.null_overflow == pytest.approx(1.0)


def test_n_distribution_overflow_bin_is_counted_not_dropped():
    d = n_distribution(np.array([143, 75, 75, 1]), n_max=20)
    assert d.p[0] == pytest.approx(0.25) and d.overflow == pytest.approx(0.75) and d.overflow_count == 3
    assert d.p.sum() + d.overflow == pytest.approx(1.0)
    assert not d.percolated and d.fit is None and "n_max = 20" in d.fit_note  # 143 of 294: not over half
    assert d.mean_n == pytest.approx((143 + 75 + 75) / 3)
    perc = n_distribution(np.array([300, 5, 2, 2, 3, 1, 1]), n_max=20)
    assert perc.percolated and perc.fit is None and "percolate" in perc.fit_note


def test_no_fit_on_fewer_than_three_sizes():
    d = n_distribution(np.array([1] * 20 + [2] * 5 + [3] * 2), n_max=20)
    assert d.fit is None and "at least 3" in d.fit_note


def test_exponential_fit_recovers_b_within_its_interval():
    hits = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = rng.geometric(0.3, 400) + 1  # p(n) ~ 0.7^n for n >= 2
        d = n_distribution(np.concatenate([np.ones(300, int), n[n <= 20]]), seed=seed)
        lo, hi = d.fit.b_ci95
        hits += lo <= -np.log(0.7) <= hi
        assert lo < d.fit.b < hi
    assert hits >= 34  # ~95 % coverage, bootstrap over groups


def test_many_hops_use_fewer_replicas_and_a_normal_p_value():
    from iondiff_core.correlations import EVENT_BUDGET, MIN_NULL_REPLICAS, replicas_for

    assert replicas_for(200, 2200, MIN_NULL_REPLICAS) == 200
    assert replicas_for(200, 50_000, MIN_NULL_REPLICAS) == max(MIN_NULL_REPLICAS, EVENT_BUDGET // 50_000)
    syn = make_synthetic(n_frames=20000, n_mobile=40, grid=5, chain_sizes=(2, 3, 4) * 8, seed=2)
    h = planted_hops(syn)
    sig = event_sigmas(h)
    obs = correlate(h, 20000, 0.0)
    table = null_replicas(h, sig, 20000, 0.0, 30, 0)
    conc = concertedness(obs.sizes, table)
    assert conc.replicas == 30 and conc.p_method == "normal" and conc.p_value < 1e-3
    assert conc.verdict == "beyond_chance"


@pytest.mark.parametrize("table_limit", [8000, 0])  # boolean table, sorted keys
def test_spatial_pairs_equal_brute_force_minimum_image(monkeypatch, table_limit):
    from iondiff_core import correlations
    from iondiff_core.correlations import SpatialPairs

    monkeypatch.setattr(correlations, "_TABLE_LIMIT", table_limit)
    from iondiff_core.synthetic import skewed_cell
    from iondiff_core.trajectory import minimum_image

    rng = np.random.default_rng(4)
    cell = skewed_cell(12.0, 0.3)
    origin = rng.uniform(-5, 20, (80, 3))
    h = make_hops(list(range(80)), [10] * 80, [20] * 80, origin, origin + rng.normal(scale=2, size=(80, 3)))
    near = SpatialPairs(h, cell, 3.0)
    i, j = np.triu_indices(80, 1)
    ends = np.stack([h.origin_A, h.target_A], axis=1)
    d = np.linalg.norm(minimum_image(ends[i][:, :, None, :] - ends[j][:, None, :, :], cell), axis=-1)
    brute = d.reshape(len(i), -1).min(axis=1) < 3.0
    assert brute.sum() > 20 and np.array_equal(near.close(i, j), brute)
    assert np.array_equal(near.close(i + 80, j + 160), brute)  # events are hops modulo H (null replicas)
