"""The clustering split into ion blocks run by any executor (issue 9, point 4)."""

import json

import numpy as np
import pytest

from iondiff_core import pipeline
from iondiff_core.centres import Clustering, cluster_block, cluster_ions, write_ion_major
from iondiff_core.parameters import Parameters
from iondiff_core.synthetic import make_synthetic
from iondiff_core.trajectory import unwrap


class FakeWorkers:
    """An in-process block executor that behaves like remote workers: the arguments go
    through JSON (as through Redis), blocks finish in reverse order, the results come back
    through an .npz round trip (as through the stage store)."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.calls = []

    def __call__(self, fn, blocks, done=None):
        out = [None] * len(blocks)
        for k in reversed(range(len(blocks))):
            args = json.loads(json.dumps(list(blocks[k])))
            self.calls.append(args)
            path = self.tmp / f"block-{k}.npz"
            np.savez(path, **fn(*args))
            with np.load(path) as z:
                out[k] = {name: z[name] for name in z.files}
            if done is not None:
                done(k)
        return out


def same(a: Clustering, b: Clustering) -> None:
    assert np.array_equal(a.atoms, b.atoms) and a.silhouette_kind == b.silhouette_kind
    assert len(a.ions) == len(b.ions)
    for p, q in zip(a.ions, b.ions):
        assert np.array_equal(p.ks, q.ks)
        assert np.array_equal(p.silhouette, q.silhouette)  # bit for bit, not approximately
        assert len(p.centres) == len(q.centres) and all(np.array_equal(u, v) for u, v in zip(p.centres, q.centres))


@pytest.fixture(scope="module")
def seven_ions():
    syn = make_synthetic(n_frames=1200, n_mobile=7, chain_sizes=(1, 2, 3), seed=3)
    t = syn.trajectory
    atoms = t.indices("Li")
    return t, atoms, unwrap(t, atoms)


@pytest.mark.parametrize("block_ions", [1, 2, 3, 7, 50])
def test_block_mapped_clustering_equals_the_local_run(seven_ions, tmp_path, block_ions):
    t, atoms, x = seven_ions
    params = Parameters()
    local = cluster_ions(x, atoms, params, t.timestep_fs)
    store = tmp_path / "positions.npy"
    write_ion_major(x, store)
    workers, seen = FakeWorkers(tmp_path), []
    mapped = cluster_ions(str(store), atoms, params, t.timestep_fs, lambda d, n: seen.append(d), map_blocks=workers, block_ions=block_ions)
    same(local, mapped)
    assert len(workers.calls) == -(-7 // block_ions)
    assert all(isinstance(c[0], str) for c in workers.calls)  # blocks carry the path, not the positions
    assert sorted(seen) == seen and seen[-1] == 7


def test_blocks_of_arrays_equal_the_local_run(seven_ions):
    t, atoms, x = seven_ions
    local = cluster_ions(x, atoms, Parameters(k_max=5), t.timestep_fs)
    mapped = cluster_ions(x, atoms, Parameters(k_max=5), t.timestep_fs, map_blocks=lambda fn, bl, done: [fn(*b) for b in bl], block_ions=3)
    same(local, mapped)


def test_ion_major_file_holds_the_positions(seven_ions, tmp_path):
    _, _, x = seven_ions
    write_ion_major(x, tmp_path / "p.npy")
    back = np.load(tmp_path / "p.npy", mmap_mode="r")
    assert back.shape == (7, len(x), 3) and back.dtype == x.dtype
    assert np.array_equal(np.moveaxis(back, 0, 1), x)
    assert [p.name for p in tmp_path.iterdir()] == ["p.npy"]  # no temporary left behind


def test_one_block_is_the_clustering_of_its_ions(seven_ions, tmp_path):
    t, atoms, x = seven_ions
    write_ion_major(x, tmp_path / "p.npy")
    part = Clustering.from_arrays(cluster_block(str(tmp_path / "p.npy"), 2, 4, [int(a) for a in atoms[2:4]], Parameters().to_dict(), 1))
    same(part, cluster_ions(x[:, 2:4], atoms[2:4], Parameters()))


def test_concatenate_refuses_mixed_silhouettes(seven_ions):
    t, atoms, x = seven_ions
    a = cluster_ions(x[:, :1], atoms[:1], Parameters(k_max=3))
    b = cluster_ions(x[:, 1:2], atoms[1:2], Parameters(k_max=3, silhouette="euclidean"))
    with pytest.raises(ValueError, match="silhouette kinds"):
        Clustering.concatenate([a, b])
    same(Clustering.concatenate([a]), a)


def test_clustering_stage_with_an_executor_uses_the_shared_store(seven_ions, tmp_path):
    t, _, _ = seven_ions
    params = Parameters()
    prep = pipeline.prepare(t, params)
    local = pipeline.clustering_stage(prep, params)
    workers = FakeWorkers(tmp_path)
    cache = pipeline.StageCache(tmp_path / "stages")
    mapped = pipeline.clustering_stage(prep, params, cache, map_blocks=workers)
    same(local, mapped)
    (npy,) = (tmp_path / "stages").glob("positions-*.npy")
    assert workers.calls and all(c[0] == str(npy) for c in workers.calls)
    with pytest.raises(ValueError, match="stage cache"):
        pipeline.clustering_stage(prep, params, None, map_blocks=workers)
