"""No file descriptor leaks per analysis (issue 11: 9 -> 410 descriptors after 200
analyses; with ``ulimit -n 256`` every analysis failed from about the 120th).

The leak was the job processes of the default (disk-cache) job manager: Dash reaps a
finished job through psutil, after which ``multiprocess`` kept its two pipe ends open.
Each test runs 50 analyses, none of them a cache hit (each at its own timestep, which
is part of every cache key), and counts this process's open descriptors.
"""

import gc
import os
import time
from pathlib import Path

import pytest

from dashboard.analysis import run_analysis
from dashboard.app_factory import make_manager
from dashboard.config import Config
from dashboard.storage import Library
from iondiff_core.io.xdatcar import write_xdatcar
from iondiff_core.parameters import Parameters
from iondiff_core.synthetic import make_synthetic

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc/self/fd (Linux)")

N = 50


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def run(tmp_path):
    """A small planted XDATCAR (200 frames, 4 Li) and an app configuration around it."""
    syn = make_synthetic(n_frames=200, n_mobile=4, chain_sizes=(2,), seed=1)
    src = tmp_path / "run" / "XDATCAR"
    src.parent.mkdir()
    write_xdatcar(syn.trajectory, src)
    return Config.from_env(data_dir=tmp_path / "data", roots=[]), src


def test_analyses_in_process_hold_no_more_descriptors(run):
    """Analyses, and the views of older ones (their sessions rebuilt from the file and
    the stage cache, as a web process does), in this process."""
    from dashboard import analysis

    cfg, src = run
    params = Parameters(species="Li")
    lib = Library(cfg.library_db)
    counts, ids = [], []
    start = open_fds()
    for i in range(N):
        ids.append(run_analysis(cfg, src, params, timestep_fs=5.0 + i))
        if i % 5 == 4:  # an entry whose session has left the in-memory cache
            analysis.result_for(cfg, lib.get(ids[i - 4]), {"r_vib_A": 0.6})
        counts.append(open_fds())
    # Only the in-memory caches of recent sessions and results hold files (memory-mapped
    # positions, one descriptor each); once they are dropped, nothing is left open.
    assert max(counts) - start <= analysis._SESSIONS.size + analysis._RESULTS.size, counts
    analysis._SESSIONS._d.clear()
    analysis._RESULTS._d.clear()
    gc.collect()
    assert open_fds() <= start, f"{open_fds() - start} descriptors left open after {N} analyses"
    assert len(Library(cfg.library_db).list()) == N  # 50 analyses, none found in the library


def test_analyses_as_background_jobs_leave_no_descriptors(run):
    """As the app runs them: each analysis a job process of the app's job manager,
    collected (and ended) by the manager as Dash does when the page polls the result."""
    cfg, src = run
    manager = make_manager(cfg)
    params = Parameters(species="Li")

    def job(key, progress_key, args, context):
        manager.handle.set(key, run_analysis(cfg, src, params, timestep_fs=args[0]))

    before = None
    for i in range(N):
        pid = manager.call_job_fn(f"job-{i}", job, (5.0 + i,), {})
        end = time.monotonic() + 60
        while (entry := manager.get_result(f"job-{i}", pid)) is manager.UNDEFINED:
            assert time.monotonic() < end, f"job {i} did not finish"
            time.sleep(0.005)
        assert isinstance(entry, str)
        if i == 1:
            before = open_fds()
    assert open_fds() <= before, f"{open_fds() - before} descriptors more after {N - 2} analyses"
    assert len(Library(cfg.library_db).list()) == N
