"""One trajectory over several machines (issue 9, point 4): the clustering's ion blocks
run on two Celery workers through the shared stage store, with results identical to a
local run, and a worker killed mid-block loses nothing."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dashboard.storage import Library
from iondiff_core import pipeline
from iondiff_core.centres import Clustering, cluster_ions, write_ion_major
from iondiff_core.io import read_trajectory, write_xdatcar
from iondiff_core.parameters import Parameters
from iondiff_core.synthetic import make_synthetic
from iondiff_core.trajectory import unwrap

from .stack import ROOT, running_stack
from .test_stack import browser, run_in_browser, text, until

LOGS = ("worker", "worker2")


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    data, sims = tmp_path_factory.mktemp("shared-data"), tmp_path_factory.mktemp("lab-sims")
    with running_stack(data, sims, web_workers=1, workers=2, IONDIFF_BLOCK_IONS="2") as s:
        yield s


def log(stack, name: str) -> str:
    return (stack.data / f"{name}.log").read_text(errors="replace")


def computed(stack) -> dict[str, list[str]]:
    """Block keys computed, per worker log (a job's own lines and the helping caller's)."""
    return {name: re.findall(r"ion block (block-\w+) computed by", log(stack, name)) for name in LOGS}


def same(a: Clustering, b: Clustering) -> None:
    assert np.array_equal(a.atoms, b.atoms) and len(a.ions) == len(b.ions)
    for p, q in zip(a.ions, b.ions):
        assert np.array_equal(p.ks, q.ks) and np.array_equal(p.silhouette, q.silhouette)
        assert all(np.array_equal(u, v) for u, v in zip(p.centres, q.centres))


def test_one_analysis_in_the_app_is_split_over_both_workers(two_workers, tmp_path):
    stack = two_workers
    syn = make_synthetic(n_frames=8000, n_mobile=16, chain_sizes=(1, 2, 3, 4), seed=17)
    xd = tmp_path / "XDATCAR_LiSplit.gz"
    write_xdatcar(syn.trajectory, xd)
    driver = browser()
    try:
        run_in_browser(driver, stack.url, xd)
        until(driver, lambda: "hops" in text(driver, "#view-summary"), 240)
        summary = text(driver, "#view-summary")
    finally:
        driver.quit()
    # Both workers computed blocks: the one running the analysis helps, the other takes jobs.
    done = computed(stack)
    assert done["worker"] and done["worker2"], done
    keys = done["worker"] + done["worker2"]
    assert len(keys) == len(set(keys)) == 8  # 16 ions in blocks of 2, each computed once
    # The stored clustering equals a local run on the same upload, bit for bit.
    (entry,) = Library(stack.data / "library.sqlite").list()
    p = {k: v for k, v in entry.params.items() if k not in ("timestep_fs", "temperature_K")}
    params = Parameters.from_dict(p)
    # Read as the app reads it: the mobile species only, in float32.
    traj = read_trajectory(entry.trajectory, timestep_fs=entry.params["timestep_fs"], keep="mobile",
                           mobile=params.species, dtype="float32")
    prep = pipeline.prepare(traj, params)
    local = pipeline.clustering_stage(prep, params)
    key = pipeline.clustering_key(prep, params)
    stored = pipeline.StageCache(stack.data / "stages").load(key)
    assert stored is not None
    same(pipeline.clustering_from_record(stored, prep.atoms), local)
    n_hops = len(pipeline.hop_stage(prep, local, params)[1].hops)
    assert f"{n_hops} hops" in summary


CALLER = """
import sys, numpy as np
from dashboard.celery_app import CeleryBlockMap
from iondiff_core.centres import cluster_ions
from iondiff_core.parameters import Parameters
path, store, out = sys.argv[1:4]
atoms = np.load(out + ".atoms.npy")
got = cluster_ions(path, atoms, Parameters(), 10.0, map_blocks=CeleryBlockMap(store, help=False), block_ions=4)
np.savez(out, **got.to_arrays())
"""


def test_worker_killed_mid_block_loses_nothing(two_workers, tmp_path):
    """The caller only sends blocks (help=False), so every block runs as a Celery job; the
    pool process of a worker is SIGKILLed in the middle of a block after another block was
    finished. Celery redelivers the killed block; the finished ones are not computed again."""
    stack = two_workers
    syn = make_synthetic(n_frames=40000, n_mobile=24, chain_sizes=(1, 2, 3, 4), seed=23)
    t = syn.trajectory
    atoms = t.indices("Li")
    x = unwrap(t, atoms)
    store = stack.data / "stages" / "kill-test"
    store.mkdir()
    write_ion_major(x, store / "positions.npy")
    out = tmp_path / "result.npz"
    np.save(str(out) + ".atoms.npy", atoms)
    before = {name: len(log(stack, name)) for name in LOGS}
    caller = subprocess.Popen([sys.executable, "-c", CALLER, str(store / "positions.npy"), str(store), str(out)],
                              cwd=ROOT, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        victim, end = None, time.time() + 180
        while victim is None and time.time() < end and caller.poll() is None:
            new = {name: log(stack, name)[before[name]:] for name in LOGS}
            if any("computed by worker" in s for s in new.values()):
                for name in LOGS:
                    started = re.findall(r"ion block (block-\w+) started by worker", new[name])
                    finished = re.findall(r"ion block (block-\w+) computed by worker", new[name])
                    if started and started[-1] not in finished:
                        victim, killed_block = name, started[-1]
                        for pid in stack.worker_children(name):
                            os.kill(pid, signal.SIGKILL)  # the process running that block dies
                        break
            time.sleep(0.02)
        assert victim is not None, "no worker was caught in the middle of a block"
        stdout, _ = caller.communicate(timeout=240)
        assert caller.returncode == 0, stdout
    finally:
        if caller.poll() is None:
            caller.kill()
    new = {name: log(stack, name)[before[name]:] for name in LOGS}
    assert "WorkerLostError" in new[victim] or "exited" in new[victim]
    keys = [k for name in LOGS for k in re.findall(r"ion block (block-\w+) computed by worker", new[name])]
    assert len(keys) == len(set(keys)) == 6  # 24 ions in blocks of 4: none lost, none redone
    assert killed_block in keys
    with np.load(out) as z:
        got = Clustering.from_arrays({k: z[k] for k in z.files})
    same(got, cluster_ions(x, atoms, Parameters(), 10.0))


FAILING = """
import json, sys
from dashboard.celery_app import CeleryBlockMap
from iondiff_core.centres import cluster_block
from iondiff_core.parameters import Parameters
m = CeleryBlockMap(sys.argv[1], help=False, timeout_s=120)
try:
    m(json.dumps, [("x",)])
except ValueError as exc:
    print("refused:", exc)
try:
    m(cluster_block, [(sys.argv[1] + "/missing.npy", 0, 1, [0], Parameters().to_dict(), 1)])
except RuntimeError as exc:
    print("failed:", exc)
"""


def test_a_failing_block_fails_the_call_and_names_the_block(two_workers):
    """A block that raises on the worker is an error naming the block (no hang); a message
    cannot make a worker run anything but an engine function."""
    stack = two_workers
    store = stack.data / "stages" / "failing"
    store.mkdir()
    r = subprocess.run([sys.executable, "-c", FAILING, str(store)], cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=200)
    assert r.returncode == 0, r.stderr
    assert "refused: not an engine block function: 'json:dumps'" in r.stdout
    assert "failed: ion block 1 of 1 failed on a worker: FileNotFoundError" in r.stdout, r.stdout
