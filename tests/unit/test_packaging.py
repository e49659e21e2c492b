"""The engine stands alone: no module of ``iondiff_core`` imports the app, it imports
and runs with the app's packages missing, and ``pip install .`` gives the engine and an
``iondiff`` command; the dashboard, in the same wheel, runs as ``iondiff-dashboard`` once
its dependencies (the ``app`` extra) are there."""

import ast
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP_PACKAGES = ("dashboard", "pages", "app", "dash", "flask", "celery", "plotly", "dash_ag_grid", "redis")


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, also inside functions (the top package of each)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def test_no_engine_module_imports_the_app():
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p) if m.split(".")[0] in APP_PACKAGES)
        for p in (ROOT / "iondiff_core").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_app_uses_the_engine_not_its_command_line():
    """The dashboard takes what it shares with ``batch`` from iondiff_core.batch, never from the CLI."""
    users = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "dashboard").rglob("*.py")
        if "iondiff_core.cli" in _imported_modules(p) and p.name != "__main__.py"
    }
    assert users == set()
    from iondiff_core import batch

    assert callable(batch.analyse_one) and callable(batch.summary_row) and batch.material_of("LGPS_600K") == "LGPS"


def _planted_run(folder: Path) -> Path:
    from iondiff_core.io import write_xdatcar
    from iondiff_core.synthetic import make_synthetic

    folder.mkdir(parents=True)
    syn = make_synthetic(n_frames=600, n_mobile=6, chain_sizes=(1, 2), seed=1)
    write_xdatcar(syn.trajectory, folder / "XDATCAR")
    (folder / "INCAR").write_text("POTIM = 2\nNBLOCK = 5\nTEBEG = 600\n")
    return folder


def test_engine_imports_and_runs_with_the_app_packages_missing(tmp_path):
    """Every iondiff_core module imports, and analyze and batch run, in a process where
    importing dashboard, dash, flask, celery ... fails."""
    run = _planted_run(tmp_path / "sims" / "LiX_600K")
    script = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        for name in {APP_PACKAGES!r}:
            sys.modules[name] = None  # "import name" now raises ImportError
        import iondiff_core
        mods = [m.name for m in pkgutil.walk_packages(iondiff_core.__path__, "iondiff_core.")]
        for m in mods:
            importlib.import_module(m)
        assert len(mods) > 20, mods
        from iondiff_core.cli import main
        assert main(["analyze", {str(run)!r}, "-q", "--jobs", "1", "--out", {str(tmp_path / "one.json")!r}]) == 0
        assert main(["batch", {str(run.parent)!r}, "--out-dir", {str(tmp_path / "batch")!r}, "-q", "--jobs", "1"]) == 0
        loaded = sorted(n for n in sys.modules if n.split(".")[0] in {APP_PACKAGES!r} and sys.modules[n] is not None)
        assert loaded == [], loaded
        print("ok", len(mods))
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-2] == "ok"
    assert (tmp_path / "one.json").exists() and (tmp_path / "batch" / "LiX_600K.json").exists()


def test_celery_batch_is_an_option_of_the_app_command_only():
    def batch_help(module):
        r = subprocess.run([sys.executable, "-m", module, "batch", "--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    engine, app = batch_help("iondiff_core"), batch_help("dashboard")
    assert "--celery" not in engine and "--r-vib-A" in engine
    assert "--celery" in app and "--r-vib-A" in app and "--out-dir" in app
    from dashboard.__main__ import _add_celery_flag
    from iondiff_core.cli import build_parser

    args = build_parser(extend_batch=_add_celery_flag).parse_args(["batch", "sims", "--out-dir", "out", "--celery"])
    assert args.celery and args.roots == ["sims"]


def _names(requirements) -> set[str]:
    """Distribution names of requirement lines, normalised (PEP 503)."""
    import re

    out = set()
    for line in requirements:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            out.add(re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", line).group()).lower())
    return out


@pytest.mark.slow
def test_pip_install_gives_the_engine_and_the_iondiff_command(tmp_path):
    """``pip install .`` into a fresh venv (dependencies from the system site, no download):
    the ``iondiff`` command analyses a run from a folder outside the checkout; the
    ``iondiff-dashboard`` command serves the installed dashboard (pages, browser assets, the
    docs its help links to); neither tests nor benchmarks are installed; the ``app`` extra
    lists what requirements.txt pins."""
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", "data", "build", "*.egg-info", "__pycache__",
                                                             ".pytest_cache", "screenshots*"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py, exe = venv / "bin" / "python", venv / "bin" / "iondiff"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    elsewhere = tmp_path / "elsewhere"
    run = _planted_run(elsewhere / "LiX_600K")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def call(*args):
        return subprocess.run([*map(str, args)], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)

    help_ = call(exe, "--help")
    assert help_.returncode == 0 and "usage: iondiff" in help_.stdout and "analyze" in help_.stdout
    r = call(exe, "analyze", run.name, "-q", "--jobs", "1", "--out", "r.json")
    assert r.returncode == 0, r.stderr
    assert "600 frames, 6 Li ions; 3 hops" in r.stdout
    import json

    assert json.loads((elsewhere / "r.json").read_text())["input"]["frames"] == 600
    assert call(py, "-m", "iondiff_core", "--help").stdout == help_.stdout  # the same command
    where = call(py, "-c", "import iondiff_core, sys; print(iondiff_core.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout  # the installed copy, not the checkout
    for name in ("pages", "app", "tests", "benchmarks"):
        r = call(py, "-c", f"import {name}")
        assert r.returncode == 1 and "ModuleNotFoundError" in r.stderr, (name, r.stderr)
    meta = call(py, "-c", "import importlib.metadata as m; d = m.distribution('iondiff'); "
                          "print('\\n'.join(d.requires)); print('ENTRY', d.entry_points['iondiff'].value)")
    lines = meta.stdout.splitlines()
    assert "ENTRY iondiff_core.cli:main" in lines
    engine = [x for x in lines if "extra ==" not in x and not x.startswith("ENTRY")]
    app = [x.split(";")[0] for x in lines if 'extra == "app"' in x]
    pinned = _names((ROOT / "requirements.txt").read_text().splitlines())
    assert _names(engine) | _names(app) == pinned and not _names(engine) & _names(app)
    assert {"dash", "flask", "celery"} <= _names(app) and {"numpy", "scipy", "h5py"} <= _names(engine)
    _serves_the_installed_dashboard(venv, elsewhere, env)


def _serves_the_installed_dashboard(venv: Path, elsewhere: Path, env: dict) -> None:
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**env, "IONDIFF_PORT": str(port), "IONDIFF_DATA": str(elsewhere / "data")}
    web = subprocess.Popen([str(venv / "bin" / "iondiff-dashboard")], cwd=elsewhere, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def get(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return r.status, r.read().decode()

        end = time.monotonic() + 60
        while True:
            try:
                assert get("/health")[0] == 200
                break
            except OSError:
                assert web.poll() is None and time.monotonic() < end, web.stdout.read() if web.poll() is not None else "no answer"
                time.sleep(0.3)
        status, home = get("/")
        assert status == 200 and "/assets/upload.js" in home  # the browser assets came with the wheel
        assert "upload" in get("/assets/upload.js")[1]
        status, method = get("/docs/METHOD.md")
        assert status == 200 and "Vibration centres" in method
        where = subprocess.run([str(venv / "bin" / "python"), "-c", "import dashboard; print(dashboard.__file__)"],
                               cwd=elsewhere, env=env, capture_output=True, text=True)
        assert where.stdout.startswith(str(venv)), where.stdout
    finally:
        web.terminate()
        web.wait(timeout=30)
