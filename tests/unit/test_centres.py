import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from iondiff_core.centres import (
    Clustering,
    IonClustering,
    _voxel_histogram,
    refine,
    cluster_ion,
    cluster_ions,
    count_dwell_sites,
    denoise_window,
    euclidean_silhouette,
    select,
    squared_silhouette,
    stitch,
    window_bounds,
)
from iondiff_core.parameters import Parameters
from iondiff_core.trajectory import unwrap


def blobs(centres, n, sigma, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([c + rng.normal(scale=sigma, size=(n, 3)) for c in centres])


@pytest.mark.parametrize("k", [2, 3, 5])
def test_squared_silhouette_closed_form_equals_brute_force(k):
    x = blobs(np.random.default_rng(1).uniform(0, 6, (k, 3)), 150, 0.5)
    labels = KMeans(k, n_init=2, random_state=0).fit_predict(x)
    brute = silhouette_score(cdist(x, x, "sqeuclidean"), labels, metric="precomputed")
    assert squared_silhouette(x, labels, k) == pytest.approx(brute, abs=1e-12)


def test_squared_silhouette_singleton_cluster_scores_zero():
    x = np.array([[0.0, 0, 0], [0.1, 0, 0], [5.0, 0, 0]])
    labels = np.array([0, 0, 1])
    brute = silhouette_score(cdist(x, x, "sqeuclidean"), labels, metric="precomputed")
    assert squared_silhouette(x, labels, 2) == pytest.approx(brute)


def test_euclidean_variant_is_sklearns():
    x = blobs([[0, 0, 0], [2, 0, 0]], 100, 0.4)
    labels = (x[:, 0] > 1).astype(int)
    assert euclidean_silhouette(x, labels, 2) == pytest.approx(silhouette_score(x, labels))


def test_histogram_kmeans_matches_full_kmeans():
    x = blobs([[0, 0, 0], [2.5, 0, 0], [2.5, 2.5, 0], [0, 2.5, 2.5]], 2000, 0.15)
    ion = cluster_ion(x, Parameters(k_max=6, window_frames=0))  # one window: the whole cloud
    j = list(ion.ks).index(4)
    full = KMeans(4, n_init=10, random_state=0).fit(x).cluster_centers_
    got = ion.centres[j]
    d = cdist(got, full)
    assert np.all(d.min(axis=1) < 1e-6)
    assert ion.ks[np.argmax(ion.silhouette)] == 4


def test_k_max_grows_past_ten_for_a_long_walker():
    centres = np.stack([np.arange(15) * 2.5, np.zeros(15), np.zeros(15)], axis=1)
    x = blobs(centres, 300, 0.12)
    ion = cluster_ion(x, Parameters(window_frames=0))
    assert ion.ks.max() > 15
    assert ion.ks[np.argmax(ion.silhouette)] == 15
    capped = cluster_ion(x, Parameters(k_max=10, window_frames=0))
    assert capped.ks.max() == 10
    limited = cluster_ion(x, Parameters(k_max_limit=12, window_frames=0))
    assert limited.ks.max() == 12  # the old hard cap, kept only as an option


def walker(n_sites, frames_per_site, sigma=0.12, spacing=2.5, seed=0):
    """An ion that dwells at n_sites sites in a row, one after the other (time-ordered)."""
    rng = np.random.default_rng(seed)
    steps = np.eye(3)[rng.integers(0, 3, n_sites - 1)] * spacing
    sites = np.concatenate([np.zeros((1, 3)), np.cumsum(steps, axis=0)])
    return sites, blobs(sites, frames_per_site, sigma, seed)


def test_windows_find_every_site_of_a_hundred_site_walker_with_no_cap():
    sites, x = walker(100, 300)
    p = Parameters()
    ion = cluster_ion(x, p)
    assert ion.bounds is not None and np.diff(ion.bounds).max() <= p.window_frames
    assert ion.ks.max() < 30  # every window's K search stays small
    cen = select(Clustering(np.array([0]), [ion], p.silhouette), x[:, None, :], 0.7, 2 * p.r_vib_A)
    got = cen.centres[0]
    assert len(got) == 100
    assert cdist(sites, got).min(axis=1).max() < 0.05
    assert len(np.unique(cdist(sites, got).argmin(axis=1))) == 100  # one centre per site


def test_window_bounds():
    p = Parameters(window_frames=5000, window_sites=6, window_min_frames=1000)
    _, short = walker(3, 1000)  # 3000 frames, 3 sites: one window
    assert window_bounds(short, p).tolist() == [0, 3000]
    _, still = walker(1, 12000)  # one site over 12000 frames: one window (no more sites than a window holds)
    assert window_bounds(still, p).tolist() == [0, 12000]
    _, long = walker(12, 1000)  # 12 sites over 12000 frames: three windows of about 4000 (4 sites each)
    b = window_bounds(long, p)
    assert len(b) == 4 and b[0] == 0 and b[-1] == 12000 and np.abs(b[1:3] - [4000, 8000]).max() <= 250
    _, busy = walker(24, 200)  # 24 sites in 4800 frames: four windows of about 6 sites
    b = window_bounds(busy, p)
    assert len(b) == 5 and b[0] == 0 and b[-1] == 4800 and np.diff(b).min() >= 1000
    assert window_bounds(busy, p.replace(window_frames=0)).tolist() == [0, 4800]


def test_window_bounds_avoid_a_hop():
    # One hop whose 40-frame transit is centred on the nominal bound (frame 4000 of 12000).
    t = np.arange(12000)
    x = np.zeros((12000, 3))
    x[:, 0] = np.clip((t - 3980) / 40, 0, 1) * 2.5
    x += np.random.default_rng(0).normal(scale=0.02, size=x.shape)
    b = window_bounds(x, Parameters(window_sites=1))  # two sites over the run: windows
    assert len(b) == 4
    assert b[1] < 3980 - 40 or b[1] > 4020 + 40  # at rest, away from the transit


def test_one_window_is_the_whole_run_clustering():
    _, x = walker(4, 800, seed=2)
    a, b = cluster_ion(x, Parameters()), cluster_ion(x, Parameters(window_frames=0))
    assert a.bounds is None
    assert np.array_equal(a.ks, b.ks) and np.array_equal(a.silhouette, b.silhouette)
    assert all(np.array_equal(p, q) for p, q in zip(a.centres, b.centres))


def test_stitch_merges_one_site_seen_twice_but_does_not_chain_a_row():
    # Site A seen in two windows (0.1 Å apart), B 2.5 Å away.
    got = stitch(np.array([[0.0, 0, 0], [2.5, 0, 0], [0.1, 0, 0]]), np.array([100.0, 50, 300]), 1.0)
    assert np.allclose(got, [[0.075, 0, 0], [2.5, 0, 0]])
    # A row 0.6 Å apart: single linkage would merge all five; complete linkage keeps 1.2 Å groups apart.
    row = np.stack([np.arange(5) * 0.6, np.zeros(5), np.zeros(5)], axis=1)
    assert len(stitch(row, np.ones(5), 1.0)) >= 3


def test_refinement_gives_one_centre_per_site_where_windows_place_it_differently():
    # An ion hopping between two sites 2.5 Å apart in each of four windows; each window's
    # centres are shifted 0.6 Å (as a window's K search places a site according to what
    # else the ion visits there), so one site's window centres lie up to 1.2 Å apart:
    # beyond the 1 Å stitching distance, so stitching alone keeps more than two.
    sites = np.array([[0.0, 0, 0], [2.5, 0, 0]])
    x = np.concatenate([blobs(sites, 500, 0.15, seed=w) for w in range(4)])  # (4000, 3)
    shifts = np.array([[0, 0.6, 0], [0, -0.6, 0], [0, 0, 0.6], [0, 0, -0.6]])
    ion = IonClustering(
        ks=np.full(4, 2), silhouette=np.full(4, 0.9), centres=[sites + s for s in shifts],
        sizes=[np.array([500.0, 500.0])] * 4, window=np.arange(4), bounds=np.arange(5) * 1000,
        radius=[np.full(2, 0.26)] * 4,
    )
    stitched = stitch(np.concatenate(ion.centres), np.full(8, 500.0), 1.0)
    assert len(stitched) > 2
    cen = select(Clustering(np.array([0]), [ion], "squared"), x[:, None, :], 0.7, 1.0)
    got = cen.centres[0]
    assert len(got) == 2 and cen.k[0] == 2
    assert cdist(sites, got).min(axis=1).max() < 0.05  # the sites' frame means
    # Two real sites 1.2 Å apart, each a tight cloud, stay two (their split scores high).
    near = np.array([[0.0, 0, 0], [1.2, 0, 0]])
    y = blobs(near, 2000, 0.06)
    kept = refine(*_voxel_histogram(y, 0.2), near + [0, 0.05, 0], 1.0, 0.7)
    assert len(kept) == 2 and cdist(near, kept).min(axis=1).max() < 0.05


def test_single_site_ion_gets_k_1_and_still_ion_does_not_crash():
    x = blobs([[1, 1, 1]], 3000, 0.15)
    still = np.zeros((3000, 3))  # IonDiff crashes on a perfectly still atom
    pos = np.stack([x, still], axis=1)
    cl = cluster_ions(pos, np.array([0, 1]), Parameters())
    chosen = select(cl, pos, 0.7)
    assert list(chosen.k) == [1, 1]
    assert np.allclose(chosen.centres[1], 0)


def test_threshold_picks_k_without_reclustering(planted):
    t = planted.trajectory
    x = unwrap(t, t.indices("Li"))
    whole = cluster_ions(x, t.indices("Li"), Parameters(window_frames=0), t.timestep_fs)
    assert (select(whole, x, 0.999).k == 1).all()
    assert (select(whole, x, 0.0).k >= 2).all()
    # Per window: at most one centre per window at a threshold no K reaches.
    cl = cluster_ions(x, t.indices("Li"), Parameters(), t.timestep_fs)
    n_windows = np.array([1 if c.bounds is None else len(c.bounds) - 1 for c in cl.ions])
    assert n_windows.max() > 1
    strict = select(cl, x, 0.999)
    assert (strict.k <= n_windows).all()
    assert (select(cl, x, 0.0).k >= strict.k).all()


def test_clustering_round_trips_through_arrays(planted):
    t = planted.trajectory
    x = unwrap(t, t.indices("Li"))[:, :4]
    cl = cluster_ions(x, np.arange(4), Parameters(k_max=4), timestep_fs=t.timestep_fs)
    back = Clustering.from_arrays(cl.to_arrays())
    assert cl.denoise_frames > 1 and back.denoise_frames == cl.denoise_frames  # refinement sees the same averages
    for a, b in zip(cl.ions, back.ions):
        assert np.array_equal(a.ks, b.ks)
        assert np.allclose(a.silhouette, b.silhouette)
        assert all(np.allclose(p, q) for p, q in zip(a.centres, b.centres))
        assert all(np.array_equal(p, q) for p, q in zip(a.sizes, b.sizes))
        assert np.array_equal(a.window, b.window)
        assert (a.bounds is None and b.bounds is None) or np.array_equal(a.bounds, b.bounds)
    assert any(c.bounds is not None for c in back.ions)  # 6000 frames: windows were stored


def test_deterministic():
    x = blobs([[0, 0, 0], [2, 1, 0], [0, 3, 1]], 500, 0.3, seed=4)
    a, b = cluster_ion(x, Parameters()), cluster_ion(x, Parameters())
    assert np.array_equal(a.silhouette, b.silhouette)


def test_denoise_window_is_odd_frames():
    assert denoise_window(300, 100) == 3
    assert denoise_window(300, 10) == 31
    assert denoise_window(0, 10) == 1
    assert denoise_window(300, None) == 1


def test_parallel_clustering_gives_the_same_result(planted):
    t = planted.trajectory
    atoms = t.indices("Li")[:6]
    x = unwrap(t, atoms)
    one = cluster_ions(x, atoms, Parameters(), t.timestep_fs, n_jobs=1)
    seen = []
    two = cluster_ions(x, atoms, Parameters(), t.timestep_fs, progress=lambda d, n: seen.append(d), n_jobs=2)
    assert seen[-1] == 6
    for a, b in zip(one.ions, two.ions):
        assert np.array_equal(a.ks, b.ks) and np.array_equal(a.silhouette, b.silhouette)


def test_count_dwell_sites():
    centres = np.stack([np.arange(15) * 2.5, np.zeros(15), np.zeros(15)], axis=1)
    assert count_dwell_sites(blobs(centres, 300, 0.12)) == 15
    assert count_dwell_sites(blobs([[0, 0, 0]], 2000, 0.2)) == 1


def test_wide_clusters_are_not_centres():
    # A row of four sites 2.5 Å apart, and another 60 Å away: the squared silhouette
    # rates the split into the two far rows (K = 2, clusters 2.8 Å rms wide) best.
    row = np.array([[0, 0, 0], [0, 2.5, 0], [0, 5, 0], [0, 7.5, 0]], float)
    sites = np.concatenate([row, row + [60.0, 0, 0]])
    x = blobs(sites, 400, 0.15)
    p = Parameters(window_frames=0)
    cl = cluster_ions(x[:, None, :], np.array([0]), p)
    assert select(cl, x[:, None, :], 0.7, 1.0, max_radius_A=np.inf).k[0] == 2  # halves, not sites
    got = select(cl, x[:, None, :], 0.7, 1.0)  # default: clusters wider than 2 Å rms are not centres
    assert got.k[0] == 8
    assert cdist(sites, got.centres[0]).min(axis=1).max() < 0.05


def test_kmeans_scan_gives_each_k_as_if_run_alone():
    """The scan draws the seeds of every K at once (those of K are the first K of the
    largest K's) and iterates K by K: each K's centres are exactly those of a run of that K alone."""
    from iondiff_core.centres import weighted_kmeans, weighted_kmeans_scan

    rng = np.random.default_rng(4)
    pts = blobs(rng.uniform(0, 8, (6, 3)), 60, 0.3, seed=4)
    w = rng.integers(1, 20, len(pts)).astype(float)
    scan = weighted_kmeans_scan(pts, w, range(2, 9))
    for k, c in zip(range(2, 9), scan):
        assert c.shape == (k, 3)
        assert np.array_equal(c, weighted_kmeans(pts, w, k))


def test_nearest_centre_ties_go_to_the_first_centre_as_argmin():
    from iondiff_core.centres import _argmin0, _nearest

    d = np.array([[1.0, 2.0, 0.5], [1.0, 0.5, 0.5]])  # (K, T): frames 0 and 2 tie
    assert _argmin0(d).tolist() == np.argmin(d, axis=0).tolist() == [0, 1, 0]
    pts = np.array([[0.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]])
    centres = np.array([[[0.5, 0, 0], [0.5, 0, 0], [3.0, 0, 0]]])  # a duplicated centre
    onehot, low = _nearest(centres, np.concatenate([-2.0 * pts.T, np.ones((1, 3))]))
    assert onehot[0].astype(int).tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1]]
    assert np.allclose(low[0] + (pts ** 2).sum(axis=1), [0.25, 0.25, 0.0])
