"""Mobile-only float32 analysis (issue 9, point 2): same results as reading every atom,
the file's composition still reported, float32 unwrapping without drift, the unwrapped
positions memory-mapped from the stage cache, and the memory peak bounded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from iondiff_core.cli import main
from iondiff_core.errors import InputError
from iondiff_core.io import read_trajectory, write_xdatcar
from iondiff_core.io.extxyz import write_extxyz
from iondiff_core.parameters import Parameters
from iondiff_core.pipeline import Session, analyze
from iondiff_core.synthetic import make_independent_walkers, match_hops
from iondiff_core.trajectory import Trajectory, unwrap


def walkers(n_frames=1200, n_mobile=6, seed=3, drift_frac_per_frame=2e-4) -> tuple[Trajectory, list]:
    """Independent walkers (8 S framework atoms after the Li) with a common drift of every
    atom (a thermostat's net translation), so drift removal has something to remove."""
    s = make_independent_walkers(n_frames=n_frames, n_mobile=n_mobile, hops_per_ion=4, n_framework=8, seed=seed)
    tr = s.trajectory
    # Framework first in the file, so that file indices of the Li are not 0..N-1.
    order = np.r_[np.arange(n_mobile, tr.n_atoms), np.arange(n_mobile)]
    pos = tr.positions_frac[:, order] + drift_frac_per_frame * np.arange(n_frames)[:, None, None]
    pos -= np.floor(pos)
    species = [tr.species[i] for i in order]
    return Trajectory(pos, tr.cells, species, timestep_fs=tr.timestep_fs, temperature_K=600.0), s.hops


def write(kind: str, traj: Trajectory, folder):
    if kind == "xdatcar":
        folder.mkdir()
        write_xdatcar(traj, folder / "XDATCAR", write_incar=True)
        return folder
    return write_extxyz(traj, folder.with_suffix(".extxyz"))


@pytest.mark.parametrize("kind", ["xdatcar", "extxyz"])
@pytest.mark.parametrize("drift", [False, True])
def test_mobile_only_equals_a_full_read(tmp_path, kind, drift):
    traj, planted = walkers(n_frames=2000, drift_frac_per_frame=2e-4 if drift else 0.0)
    path = write(kind, traj, tmp_path / "run")
    params = Parameters(remove_drift=drift, n_null=20)
    full = analyze(path, params, timestep_fs=10.0, mobile_only=False)
    mob = analyze(path, params, timestep_fs=10.0)  # the default
    assert full.prep.positions_A.dtype == np.float64 and mob.prep.positions_A.dtype == np.float32
    assert mob.prep.trajectory.n_atoms == 6 and full.prep.trajectory.n_atoms == 14  # framework never held
    # Read by the pipeline itself: the fractional positions are freed once unwrapped (frame 0 kept).
    assert mob.prep.trajectory.positions_released and mob.prep.trajectory.n_frames == 2000
    with pytest.raises(InputError, match="released"):
        unwrap(mob.prep.trajectory)
    np.testing.assert_allclose(mob.prep.positions_A, full.prep.positions_A, atol=1e-4)
    np.testing.assert_array_equal(mob.prep.file_atoms, np.arange(8, 14))
    np.testing.assert_array_equal(mob.prep.file_atoms, full.prep.file_atoms)
    # Same hops, and they are the planted ones.
    for k in ("ion", "start", "end", "centre_from", "centre_to"):
        np.testing.assert_array_equal(getattr(mob.hops, k), getattr(full.hops, k))
    np.testing.assert_allclose(mob.hops.origin_A, full.hops.origin_A, atol=1e-4)
    found = len(match_hops(mob.hops.ion, mob.hops.start, mob.hops.end, planted, tol=4))
    assert found >= 0.9 * len(planted) and found >= 0.9 * len(mob.hops), (found, len(planted), len(mob.hops))
    # D to float32 precision; the drift really is removed (else D is far larger).
    d_full, d_mob = full.transport.tracer.D_A2_ps, mob.transport.tracer.D_A2_ps
    assert d_mob == pytest.approx(d_full, rel=1e-4)
    a, b = full.to_dict(), mob.to_dict()
    for key in ("atoms", "species", "frames", "mobile_species", "mobile_ions", "variable_cell"):
        assert a["input"][key] == b["input"][key]
    assert b["input"]["atoms"] == 14 and b["input"]["species"] == {"S": 8, "Li": 6}
    assert [h["atom"] for h in a["hops"]] == [h["atom"] for h in b["hops"]]
    # Volume-based descriptors and the reference lattice (metastable centres) agree.
    for key, v in a["descriptors"].items():
        if isinstance(v, float):
            assert b["descriptors"][key] == pytest.approx(v, rel=1e-3, abs=1e-9), key
    assert [m.tolist() for m in mob.metastable] == [m.tolist() for m in full.metastable]


def test_drift_is_removed_from_a_mobile_only_read(tmp_path):
    traj, _ = walkers(drift_frac_per_frame=1e-3)
    path = write("extxyz", traj, tmp_path / "run")
    with_drift = analyze(path, Parameters(remove_drift=False, n_null=20), timestep_fs=10.0)
    without = analyze(path, Parameters(remove_drift=True, n_null=20), timestep_fs=10.0)
    # 1e-3 of a 15 Å cell per frame over 1200 frames is 18 Å of drift along each axis, removed
    # up to the noise of the framework mean (8 atoms vibrating 0.1 Å).
    shift = with_drift.prep.positions_A[-1] - without.prep.positions_A[-1]
    np.testing.assert_allclose(shift, np.broadcast_to(traj.cells[0].sum(axis=0) * 1e-3 * 1199, shift.shape), atol=0.2)  # framework noise: 8 atoms of 0.1 Å


def test_float32_unwrap_does_not_accumulate_rounding():
    rng = np.random.default_rng(0)
    T, N = 100_000, 3
    steps = rng.normal(scale=0.02, size=(T, N, 3))  # fractional steps: a long random walk
    u = np.cumsum(steps, axis=0) + 0.5
    cell = np.array([[12.0, 0, 0], [1.5, 11.0, 0], [0.5, 0.7, 10.0]])
    tr64 = Trajectory(u - np.floor(u), cell, ["Li"] * N)
    tr32 = Trajectory((u - np.floor(u)).astype(np.float32), cell, ["Li"] * N)
    truth = (u - u[0] + (u[0] - np.floor(u[0]))) @ cell
    x32 = unwrap(tr32, dtype=np.float32)
    assert x32.dtype == np.float32
    np.testing.assert_allclose(unwrap(tr64), truth, atol=1e-8)
    # One float32 rounding of the input and one of the output, whatever the run length.
    err = np.abs(x32 - truth).max()
    assert err < 2e-4 * np.abs(truth).max() / 100 + 1e-4, err


def test_cache_dir_memory_maps_the_unwrapped_positions(tmp_path):
    traj, _ = walkers()
    path = write("extxyz", traj, tmp_path / "run")
    cache = tmp_path / "stages"
    s1 = Session.open(path, Parameters(n_null=20), cache, timestep_fs=10.0)
    x = s1.prep.positions_A
    assert isinstance(x, np.memmap) and x.dtype == np.float32 and not x.flags.writeable
    files = sorted(cache.glob("unwrapped-*.npy"))
    assert len(files) == 1 and files[0].stat().st_size >= x.nbytes
    stamp = files[0].stat().st_mtime_ns
    s2 = Session.open(path, Parameters(n_null=20), cache, timestep_fs=10.0)  # written once, then reused
    assert files[0].stat().st_mtime_ns == stamp
    plain = Session.open(path, Parameters(n_null=20), timestep_fs=10.0)
    np.testing.assert_array_equal(np.asarray(s2.prep.positions_A), plain.prep.positions_A)
    np.testing.assert_array_equal(s2.result().hops.start, plain.result().hops.start)


def test_cli_reads_mobile_only_unless_all_atoms(tmp_path):
    traj, _ = walkers()
    folder = write("xdatcar", traj, tmp_path / "run")
    docs = []
    for extra in ([], ["--all-atoms"]):
        out = tmp_path / f"out{len(extra)}.json"
        assert main(["analyze", str(folder), "--out", str(out), "-q", "--n-null", "20", *extra]) == 0
        docs.append(json.loads(out.read_text()))
    a, b = docs
    assert a["input"]["species"] == b["input"]["species"] == {"S": 8, "Li": 6}
    assert [(h["atom"], h["start"], h["end"]) for h in a["hops"]] == [(h["atom"], h["start"], h["end"]) for h in b["hops"]]


def test_independent_walkers_are_written_a_chunk_at_a_time_into_a_memory_map(tmp_path):
    kw = dict(n_frames=3000, n_mobile=12, hops_per_ion=6, n_framework=4, seed=5)
    whole = make_independent_walkers(**kw)
    path = tmp_path / "walkers.npy"
    chunked = make_independent_walkers(**kw, out=path, chunk_bytes=20_000)  # 125 frames a chunk
    on_disk = np.load(path, mmap_mode="r")
    assert np.array_equal(on_disk, whole.trajectory.positions_frac)  # the same numbers, whatever the chunk
    assert np.array_equal(chunked.trajectory.positions_frac, whole.trajectory.positions_frac)
    assert [(h.ion, h.start, h.end) for h in chunked.hops] == [(h.ion, h.start, h.end) for h in whole.hops]
    assert float(np.min(on_disk)) >= 0 and float(np.max(on_disk)) < 1  # wrapped fractional coordinates


def test_reference_and_null_model_do_not_depend_on_how_many_pairs_are_held_at_once(monkeypatch):
    """The reference and the null model evaluate their overlapping pairs a sub-batch at a
    time (memory); the draws and so the answers are the same whatever the sub-batch."""
    from iondiff_core import correlations
    from iondiff_core.hops import Hops

    p = make_independent_walkers(n_frames=6000, n_mobile=40, hops_per_ion=12, seed=3).hops
    n = len(p)
    origin, target = np.array([x.origin_A for x in p]), np.array([x.target_A for x in p])
    h = Hops(np.array([x.ion for x in p]), np.array([x.start for x in p]), np.array([x.end for x in p]), np.zeros(n, int),
             np.ones(n, int), origin, target, np.linalg.norm(target - origin, axis=1), np.zeros(n, bool), np.ones(n, bool))
    sig = correlations.event_sigmas(h)

    def run():
        ref = correlations.random_reference(sig, 6000, 30, seed=2)
        null = correlations.null_replicas(h, sig, 6000, ref.level("mean"), 40, seed=2)
        return ref, null

    ref, null = run()
    monkeypatch.setattr(correlations, "_BATCH_PAIRS", 50)  # one replica per sub-batch
    assert len(correlations._sub_batches(30, sig, 6000)) == 30
    ref_small, null_small = run()
    assert ref_small.mean == pytest.approx(ref.mean, rel=1e-12, abs=1e-15)
    assert ref_small.level(0.95) == ref.level(0.95)
    assert np.array_equal(null_small, null)


def test_prepare_of_a_consumed_read_never_holds_two_copies_of_the_positions():
    # A mobile-only float32 read that nobody else holds (Session.open on a path) is unwrapped
    # in its own buffer: the allocations on top of it are a few fixed-size float64 blocks
    # (~8 MB), without the second (T, N, 3) array made when the trajectory is kept.
    import tracemalloc

    from iondiff_core.pipeline import prepare

    rng = np.random.default_rng(5)
    T, N = 30_000, 100
    frac = rng.uniform(size=(T, N, 3)).astype(np.float32)
    cell = np.eye(3) * 20.0
    size = frac.nbytes  # 36 MB
    peaks = {}
    for consume in (False, True):
        traj = Trajectory(frac.copy(), cell, ["Li"] * N, timestep_fs=10.0, framework_drift_A=np.zeros((T, 3)))
        tracemalloc.start()
        prep = prepare(traj, Parameters(remove_drift=True), digest="x", consume=consume)
        peaks[consume] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert prep.positions_A.dtype == np.float32 and traj.positions_released == consume
        if consume:
            np.testing.assert_array_equal(prep.positions_A, kept)
        kept = prep.positions_A
        del prep, traj
    assert peaks[False] > size and peaks[True] < peaks[False] - 0.95 * size, (peaks, size)
