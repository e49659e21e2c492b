import numpy as np
import pytest

from iondiff_core.errors import InputError
from iondiff_core.synthetic import skewed_cell
from iondiff_core.trajectory import Trajectory, minimum_image, unwrap, unwrap_in_place


def test_unwrap_recovers_a_path_across_boundaries_in_a_skewed_cell():
    cell = skewed_cell(6.0, 0.4)
    t = np.arange(500)
    true_frac = np.stack([0.9 + 0.013 * t, 0.1 - 0.007 * t, 0.5 + 0.002 * np.sin(t)], axis=1)[:, None, :]
    wrapped = true_frac - np.floor(true_frac)
    traj = Trajectory(wrapped, cell, ["Li"])
    assert np.allclose(unwrap(traj), true_frac @ cell - (true_frac[0] - wrapped[0]) @ cell, atol=1e-9)


def test_unwrap_variable_cell_converts_each_step_with_its_frames_cell():
    # METHOD.md section 1: a homogeneous expansion (fixed fractional position) is no displacement.
    frac = np.full((4, 1, 3), 0.25)
    frac[:, 0, 0] = [0.25, 0.35, 0.45, 0.55]
    cells = np.stack([np.eye(3) * a for a in (10.0, 10.5, 11.0, 11.5)])
    traj = Trajectory(frac, cells, ["Na"])
    assert traj.variable_cell
    assert np.allclose(unwrap(traj)[:, 0, 0], [2.5, 2.5 + 1.05, 2.5 + 1.05 + 1.1, 2.5 + 1.05 + 1.1 + 1.15])
    assert np.allclose(unwrap(traj)[:, 0, 1], 2.5)


def test_remove_drift_of_the_framework():
    frac = np.zeros((3, 2, 3))
    frac[:, 1, 0] = [0.0, 0.1, 0.2]  # framework drifts along a
    frac[:, 0, 0] = [0.5, 0.6, 0.7]  # the mobile ion drifts with it
    traj = Trajectory(frac, np.eye(3) * 10, ["Li", "S"])
    assert np.allclose(unwrap(traj, np.array([0]), remove_drift=True)[:, 0, 0], 5.0)


def test_minimum_image_is_the_shortest_image():
    cell = skewed_cell(5.0, 0.5)
    rng = np.random.default_rng(0)
    v = rng.uniform(-12, 12, (200, 3))
    got = minimum_image(v, cell)
    shifts = np.array(np.meshgrid(*[np.arange(-4, 5)] * 3, indexing="ij")).reshape(3, -1).T @ cell
    best = np.min(np.linalg.norm(v[:, None, :] + shifts[None], axis=2), axis=1)
    assert np.allclose(np.linalg.norm(got, axis=1), best)


def test_species_selection_and_errors():
    traj = Trajectory(np.zeros((2, 3, 3)), np.eye(3), ["S", "Na", "Li"], source="x")
    assert traj.default_mobile_species() == "Li"
    assert traj.mobile_species("Na") == "Na"
    with pytest.raises(InputError, match="species 'K' is not in the file"):
        traj.mobile_species("K")
    with pytest.raises(InputError, match="none of"):
        Trajectory(np.zeros((2, 1, 3)), np.eye(3), ["Zr"]).default_mobile_species()
    with pytest.raises(InputError, match="timestep is unknown"):
        traj.timestep_ps


def _reference_unwrap(frac, cells):
    """METHOD.md section 1 over the whole array at once, in float64."""
    frac = frac.astype(np.float64)
    steps = np.diff(frac, axis=0)
    steps -= np.floor(steps + 0.5)
    cart = np.concatenate([(frac[0] @ cells[0])[None], np.einsum("tnj,tjk->tnk", steps, cells[1:])])
    return np.cumsum(cart, axis=0)


@pytest.mark.parametrize("npt", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unwrap_in_place_equals_unwrap_on_a_walk_crossing_the_box_many_times(npt, dtype):
    # 12,000 frames x 40 ions: several unwrapping blocks (2^16 positions each), and each ion
    # crosses the (skewed) box tens of times; NPT: the cell breathes frame by frame.
    rng = np.random.default_rng(21)
    T, N = 12_000, 40
    steps = rng.normal(scale=0.02, size=(T, N, 3)) + 0.004  # fractional, with a net flow
    true = rng.uniform(size=(1, N, 3)) + np.cumsum(steps, axis=0)
    assert np.abs(true[-1] - true[0]).max() > 20  # crosses the box many times
    base = skewed_cell(8.0, 0.3)
    cells = base * (1 + 0.03 * np.sin(np.arange(T) / 50.0))[:, None, None] if npt else base
    frac = (true - np.floor(true)).astype(dtype)
    drift = np.cumsum(rng.normal(scale=0.01, size=(T, 3)), axis=0)
    drift -= drift[0]
    a = Trajectory(frac.copy(), cells, ["Li"] * N, framework_drift_A=drift)
    b = Trajectory(frac.copy(), cells, ["Li"] * N, framework_drift_A=drift)
    for remove in (False, True):
        old = unwrap(a, remove_drift=remove, dtype=dtype)
        ref = _reference_unwrap(frac, np.broadcast_to(cells, (T, 3, 3))) - (drift[:, None] if remove else 0)
        np.testing.assert_allclose(old, ref, rtol=0, atol=1e-9 if dtype == np.float64 else 2e-3)
        if remove:
            new = unwrap_in_place(b, remove_drift=True)
            assert new.dtype == dtype and new.shape == (T, N, 3)
            np.testing.assert_array_equal(new, old)  # the same numbers, bit for bit
    # The buffer was reused, frame 0 as read kept, and the positions released.
    assert b.positions_released and b.n_frames == T
    np.testing.assert_array_equal(b.positions_frac[-1], frac[0])
    with pytest.raises(InputError, match="released"):
        unwrap_in_place(b)


def test_unwrap_in_place_of_image_flag_positions_and_of_a_read_only_buffer():
    rng = np.random.default_rng(22)
    T, N = 300, 5
    cells = np.eye(3) * 7.0 * (1 + 0.02 * np.cos(np.arange(T) / 9.0))[:, None, None]
    frac = rng.normal(scale=2.0, size=(T, N, 3)).astype(np.float32)  # already unwrapped
    a = Trajectory(frac.copy(), cells, ["Li"] * N, unwrapped=True)
    old = unwrap(a, dtype=np.float32)
    np.testing.assert_allclose(old, np.einsum("tnj,tjk->tnk", frac.astype(np.float64), cells), atol=1e-4)
    b = Trajectory(frac.copy(), cells, ["Li"] * N, unwrapped=True)
    np.testing.assert_array_equal(unwrap_in_place(b), old)
    ro = frac.copy()
    ro.flags.writeable = False
    c = Trajectory(ro, cells, ["Li"] * N, unwrapped=True)
    np.testing.assert_array_equal(unwrap_in_place(c), old)  # a new array: the buffer is not written
    np.testing.assert_array_equal(ro, frac)
    assert c.positions_released
