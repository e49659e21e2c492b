import numpy as np
import pytest

from iondiff_core.errors import InputError
from iondiff_core.synthetic import skewed_cell
from iondiff_core.trajectory import Trajectory, minimum_image, unwrap


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
