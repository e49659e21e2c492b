import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from iondiff_core.centres import (
    Clustering,
    cluster_ion,
    cluster_ions,
    count_dwell_sites,
    denoise_window,
    euclidean_silhouette,
    select,
    squared_silhouette,
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
    ion = cluster_ion(x, Parameters(k_max=6))
    j = list(ion.ks).index(4)
    full = KMeans(4, n_init=10, random_state=0).fit(x).cluster_centers_
    got = ion.centres[j]
    d = cdist(got, full)
    assert np.all(d.min(axis=1) < 1e-6)
    assert ion.ks[np.argmax(ion.silhouette)] == 4


def test_k_max_grows_past_ten_for_a_long_walker():
    centres = np.stack([np.arange(15) * 2.5, np.zeros(15), np.zeros(15)], axis=1)
    x = blobs(centres, 300, 0.12)
    ion = cluster_ion(x, Parameters())
    assert ion.ks.max() > 15
    assert ion.ks[np.argmax(ion.silhouette)] == 15
    capped = cluster_ion(x, Parameters(k_max=10))
    assert capped.ks.max() == 10


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
    cl = cluster_ions(x, t.indices("Li"), Parameters(), t.timestep_fs)
    strict = select(cl, x, 0.999)
    loose = select(cl, x, 0.0)
    assert (strict.k == 1).all()
    assert (loose.k >= 2).all()


def test_clustering_round_trips_through_arrays(planted):
    t = planted.trajectory
    x = unwrap(t, t.indices("Li"))[:, :4]
    cl = cluster_ions(x, np.arange(4), Parameters(k_max=4))
    back = Clustering.from_arrays(cl.to_arrays())
    for a, b in zip(cl.ions, back.ions):
        assert np.array_equal(a.ks, b.ks)
        assert np.allclose(a.silhouette, b.silhouette)
        assert all(np.allclose(p, q) for p, q in zip(a.centres, b.centres))


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
