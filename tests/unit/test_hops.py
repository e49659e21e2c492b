import numpy as np

from iondiff_core.centres import Centres, cluster_ions, select
from iondiff_core.hops import find_hops, hop_path, timeline
from iondiff_core.parameters import Parameters
from iondiff_core.trajectory import unwrap

from iondiff_core.synthetic import match_hops


def _hops(syn, **kw):
    t = syn.trajectory
    atoms = t.indices(syn.mobile)
    x = unwrap(t, atoms)
    p = Parameters(**kw)
    cl = cluster_ions(x, atoms, p, t.timestep_fs)
    cen = select(cl, x, p.silhouette_threshold, 2 * p.r_vib_A)
    return x, find_hops(x, cen, p.r_vib_A, p.hop_rule, p.cloud_quantile)


def test_planted_hops_found_with_boundaries(planted):
    for rule in ("cloud", "paper"):
        _, ha = _hops(planted, hop_rule=rule)
        h = ha.hops
        pairs = match_hops(h.ion, h.start, h.end, planted.hops, tol=3)
        recall = len(pairs) / len(planted.hops)
        precision = len(pairs) / len(h)
        assert recall >= 0.95 and precision >= 0.95, (rule, recall, precision)


def test_long_walker_and_open_hop(planted):
    x, ha = _hops(planted)
    h = ha.hops
    walker = max(set(p.ion for p in planted.hops), key=lambda i: sum(p.ion == i for p in planted.hops))
    assert np.sum(h.ion == walker) == sum(p.ion == walker for p in planted.hops) >= 14
    # The planted hop still under way at the last frame is an unfinished excursion, not a hop.
    assert not h.open_ended.any() and len(ha.excursions) == 1
    e = ha.excursions
    assert e.end[0] == x.shape[0] - 1 and e.centre_to[0] == -1 and e.open_ended[0]
    assert np.allclose(h.length_A, 2.5, atol=0.1)


def _two_site(states, sep=2.5, noise=0.05, seed=0):
    """An ion following a prescribed state string: 'A', 'B' vibrating, '.' halfway."""
    rng = np.random.default_rng(seed)
    where = {"A": 0.0, "B": sep, ".": sep / 2, "a": 0.9}  # 'a': excursion 0.9 Å out of A
    x = np.array([[where[s], 0.0, 0.0] for s in states]) + rng.normal(scale=noise, size=(len(states), 3))
    return x[:, None, :]


def test_hop_failed_attempt_open_end_and_unresolved():
    states = "AAAAA..BBBBBaaBBBBB" "AAAAAA" "BBBB...."
    x = _two_site(states)
    cen = Centres([np.array([[0.0, 0, 0], [2.5, 0, 0]])], np.array([2]), np.array([1.0]))
    ha = find_hops(x, cen, 0.5, "paper")
    h = ha.hops
    # A->B (frames 5-6), B->A with no transit frame (placed on arrival 19), A->B unresolved at 25;
    # the transit from frame 29 to the end is an unfinished excursion, listed apart.
    assert list(h.start) == [5, 19, 25]
    assert list(h.end) == [6, 19, 25]
    assert list(h.resolved) == [True, False, False]
    assert list(h.centre_to) == [1, 0, 1]
    assert list(ha.excursions.start) == [29] and list(ha.excursions.end) == [32]
    assert len(ha.failed) == 1 and ha.failed.start[0] == 12 and ha.failed.end[0] == 13
    assert (ha.state[5:7, 0] == -1).all() and ha.state[0, 0] == 0
    path = hop_path(x, h, 0)
    assert len(path) == 4  # last frame at A, two transit frames, first frame at B


def test_cloud_rule_does_not_call_vibration_a_transit():
    rng = np.random.default_rng(3)
    hot = np.concatenate([rng.normal(scale=0.35, size=(400, 3)), [2.8, 0, 0] + rng.normal(scale=0.35, size=(400, 3))])
    x = hot[:, None, :]
    cen = Centres([np.array([[0.0, 0, 0], [2.8, 0, 0]])], np.array([2]), np.array([1.0]))
    paper = find_hops(x, cen, 0.5, "paper")
    cloud = find_hops(x, cen, 0.5, "cloud")
    assert len(cloud.hops) == 1 and cloud.hops.centre_to[0] == 1
    assert len(paper.failed) > 3 * len(cloud.failed)


def test_timeline_marks_transit_frames():
    states = "AAA..BBB...AAA"
    x = _two_site(states)
    cen = Centres([np.array([[0.0, 0, 0], [2.5, 0, 0]])], np.array([2]), np.array([1.0]))
    h = find_hops(x, cen, 0.5, "paper").hops
    tl = timeline(h, len(states), 1)
    assert "".join(map(str, tl[0])) == "00011000111000"


def test_excursion_at_last_frame_is_not_a_hop_even_with_one_centre():
    """An ion with a single centre cannot hop: its excursion at the end is listed apart."""
    x = _two_site("AAAAAAAAAA" + "....", sep=1.6)
    cen = Centres([np.array([[0.0, 0, 0]])], np.array([1]), np.array([0.0]))
    ha = find_hops(x, cen, 0.5, "paper")
    assert len(ha.hops) == 0 and len(ha.excursions) == 1
    assert ha.excursions.start[0] == 10 and ha.excursions.centre_from[0] == 0
