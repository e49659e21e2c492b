"""The dashboard's layers below the pages: storage, uploads and paths, analysis model."""

import json
import os
from pathlib import Path

import pytest
from flask import Flask

from dashboard import analysis
from dashboard.config import Config
from dashboard.storage import Library, write_atomic
from dashboard.uploads import make_blueprint, resolve_server_path, safe_name, trajectory_of_upload, upload_folder
from dashboard.views import analyse_views
from iondiff_core.errors import InputError
from iondiff_core.io import write_xdatcar
from iondiff_core.parameters import Parameters
from iondiff_core.synthetic import make_synthetic


@pytest.fixture
def cfg(tmp_path):
    return Config.from_env(tmp_path / "data", roots=[tmp_path / "root"])


@pytest.fixture(scope="module")
def xdatcar(tmp_path_factory):
    p = tmp_path_factory.mktemp("x") / "XDATCAR_LiX.gz"
    write_xdatcar(make_synthetic(n_frames=1200, n_mobile=10, chain_sizes=(1, 2), seed=2).trajectory, p)
    return p


def test_library_add_rename_tag_delete(tmp_path):
    lib = Library(tmp_path / "lib.sqlite")
    res, traj = tmp_path / "r.json", tmp_path / "t"
    res.write_text("{}")
    traj.write_text("x")
    kw = dict(material="LGPS", family="Li-based", species="Li", temperature_K=600.0, sha256="abc", params_key="k",
              params={"r_vib_A": 0.5}, trajectory=str(traj), result=str(res), descriptors={"D_tracer_cm2_s": 1e-5})
    e = lib.add(name="run", **kw)
    assert lib.find("abc", "k").id == e.id and lib.list()[0].descriptors["D_tracer_cm2_s"] == 1e-5
    lib.update(e.id, name="  LGPS 600 K ", tags="sulfide, , fast ")
    e2 = lib.get(e.id)
    assert e2.name == "LGPS 600 K" and e2.tags == "sulfide,fast"
    with pytest.raises(ValueError):
        lib.update(e.id, name="   ")
    again = lib.add(name="rerun", **kw)  # the same file and parameters replace the entry
    assert [x.id for x in lib.list()] == [again.id]
    lib.delete(again.id)
    assert lib.list() == [] and not res.exists()


def test_library_refuses_an_entry_without_its_files(tmp_path):
    lib = Library(tmp_path / "lib.sqlite")
    with pytest.raises(FileNotFoundError):
        lib.add(name="x", material="m", family="f", species="Li", temperature_K=None, sha256="s", params_key="k",
                params={}, trajectory=str(tmp_path / "missing"), result=str(tmp_path / "missing.json"), descriptors={})
    assert lib.list() == []


def test_write_atomic_leaves_no_partial_file(tmp_path):
    target = tmp_path / "a.json"
    write_atomic(target, "one")
    write_atomic(target, "two")
    assert target.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_resolve_server_path_refuses_escapes(tmp_path):
    root = tmp_path / "root"
    (root / "sim").mkdir(parents=True)
    (root / "sim" / "XDATCAR").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "link").symlink_to(outside)
    (root / "inner").symlink_to(root / "sim")
    assert resolve_server_path("sim/XDATCAR", [root]) == (root / "sim" / "XDATCAR").resolve()
    assert resolve_server_path(str(root / "sim"), [root]) == (root / "sim").resolve()
    assert resolve_server_path("inner/XDATCAR", [root]) == (root / "sim" / "XDATCAR").resolve()
    for bad in ("../outside/secret", str(outside / "secret"), "link/secret", "/etc/passwd", "sim/../../outside/secret", "", "a\x00b"):
        with pytest.raises(InputError):
            resolve_server_path(bad, [root])
    with pytest.raises(InputError, match="allows no folders"):
        resolve_server_path("sim", [])


def test_safe_name_strips_folders():
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("..\\..\\XDATCAR.gz") == "XDATCAR.gz"
    assert safe_name(".hidden") == "hidden"


class _Uploader:
    """A browser session posting to /upload (with its session's upload token)."""

    def __init__(self, cfg, max_bytes):
        cfg.max_upload_bytes = max_bytes
        app = Flask(__name__)
        app.secret_key = cfg.secret_key
        app.register_blueprint(make_blueprint(cfg))
        self.client = app.test_client()
        tok = self.client.get("/upload/token").get_json()
        self.headers = {tok["header"]: tok["token"]}

    def post(self, url, data):
        return self.client.post(url, data=data, headers=self.headers)

    def folder(self, cfg, ref):
        with self.client.session_transaction() as sess:
            return upload_folder(cfg.uploads, cfg.secret_key, sess["sid"], ref)


def _client(cfg, max_bytes=10 * 1024**2):
    return _Uploader(cfg, max_bytes)


def test_upload_route_streams_to_disk_and_sniffs_species(cfg, xdatcar):
    c = _client(cfg)
    r = c.post("/upload?name=../../XDATCAR_LiX.gz", data=xdatcar.read_bytes())
    body = r.get_json()
    assert r.status_code == 200 and body["ok"] and body["species"] == ["Li", "S"]
    stored = c.folder(cfg, body["ref"]) / "XDATCAR_LiX.gz"
    assert stored.read_bytes() == xdatcar.read_bytes()
    assert body["timestep_fs"] is None and body["name"] == "XDATCAR_LiX.gz"
    # The INCAR after the trajectory joins its upload and gives the timestep and temperature.
    r2 = c.post(f"/upload?kind=incar&ref={body['ref']}", data=b"SYSTEM = LiX cell\nPOTIM = 2\nNBLOCK = 5\nTEBEG = 650\n")
    b2 = r2.get_json()
    assert b2["ok"] and b2["timestep_fs"] == 10 and b2["temperature_K"] == 650 and b2["species"] == ["Li", "S"]
    assert trajectory_of_upload(c.folder(cfg, body["ref"])) == stored


def test_upload_in_any_order_named_from_system_or_title(cfg, xdatcar):
    c = _client(cfg)
    # INCAR first: it waits for its trajectory; a generic file name gives way to the INCAR's SYSTEM.
    first = c.post("/upload?kind=incar&name=INCAR", data=b"SYSTEM = Li6PS5Cl 500K\nPOTIM = 1.5\nNBLOCK = 10\n").get_json()
    assert first["ok"] and not first["ready"]
    body = c.post(f"/upload?name=XDATCAR.gz&ref={first['ref']}", data=xdatcar.read_bytes()).get_json()
    assert body["ready"] and body["timestep_fs"] == 15 and body["name"] == "Li6PS5Cl 500K"
    # Without an INCAR, the XDATCAR's title line names it.
    alone = c.post("/upload?name=XDATCAR.gz", data=xdatcar.read_bytes()).get_json()
    assert alone["name"] == "Li10 S8"


def test_damaged_compressed_stream_is_refused(cfg, xdatcar, tmp_path):
    from dashboard.uploads import check_compressed, inspect_source

    cut = tmp_path / "LiX_600K" / "XDATCAR.gz"
    cut.parent.mkdir()
    cut.write_bytes(xdatcar.read_bytes()[:20_000])
    with pytest.raises(InputError, match="gzip stream ends before its end-of-stream marker"):
        check_compressed(cut)
    with pytest.raises(InputError, match="damaged"):
        inspect_source(cut.parent)
    r = _client(cfg).post("/upload?name=XDATCAR.gz", data=cut.read_bytes())
    assert r.status_code == 400 and "cut short" in r.get_json()["error"]
    check_compressed(xdatcar)  # the complete file passes


def test_upload_route_rejects_junk_oversize_empty_and_unknown_ids(cfg, xdatcar):
    c = _client(cfg, max_bytes=50_000)
    junk = c.post("/upload?name=XDATCAR", data=os.urandom(20_000)).get_json()
    assert not junk["ok"] and "XDATCAR" in junk["error"]
    big = c.post("/upload?name=XDATCAR", data=xdatcar.read_bytes() * 3)
    assert big.status_code == 413 and "larger than" in big.get_json()["error"]
    empty = c.post("/upload?name=XDATCAR", data=b"")
    assert "empty" in empty.get_json()["error"]
    bad_id = c.post("/upload?kind=incar&ref=../../etc", data=b"POTIM=1")
    assert bad_id.status_code == 400
    assert not any(cfg.uploads.iterdir())  # nothing half-written is left behind


def test_run_analysis_stores_once_and_sliders_do_not_recluster(cfg, xdatcar):
    seen = []
    eid = analysis.run_analysis(cfg, xdatcar, Parameters(), timestep_fs=10, temperature_K=600, progress=lambda f, m: seen.append(f))
    assert seen and max(seen) == 1.0
    lib = Library(cfg.library_db)
    entry = lib.get(eid)
    assert entry.species == "Li" and entry.family == "Li-based" and json.loads(Path(entry.result).read_text())["hops"]
    clusterings = list(cfg.stages.glob("clustering-*.npz"))
    assert len(clusterings) == 1
    # The same file again: the stored entry, at once.
    assert analysis.run_analysis(cfg, xdatcar, Parameters(), timestep_fs=10, temperature_K=600) == eid
    # A new process has no session in memory: it is rebuilt from the file and the cached clustering.
    analysis._SESSIONS._d.clear()
    r = analysis.result_for(cfg, entry, {"r_vib_A": 0.7, "n_max": 8})
    assert r.params.r_vib_A == 0.7 and len(r.distribution.n) == 8
    assert list(cfg.stages.glob("clustering-*.npz")) == clusterings
    with pytest.raises(InputError, match="not a slider"):
        analysis.result_for(cfg, entry, {"silhouette": "euclidean"})


def test_analyse_views_draws_every_figure_with_units_and_follows_sliders(cfg, xdatcar):
    eid = analysis.run_analysis(cfg, xdatcar, Parameters(), timestep_fs=10, temperature_K=600)
    v = analyse_views(cfg, eid, {})
    for key in ("timeline", "pdf", "msd"):
        layout = v[key].layout
        assert layout.xaxis.title.text and "(" in layout.xaxis.title.text, key  # unit in parentheses
    assert v["3d"].layout.scene.xaxis.title.text.endswith("(Å)")
    units = {row["descriptor"]: row["unit"] for row in v["table"]}
    assert units["D tracer"] == "cm²/s" and units["hop length mean"] == "Å"
    wider = analyse_views(cfg, eid, {"n_max": 5})
    assert len(wider["pdf"].data[0].x) == 5 and len(v["pdf"].data[0].x) == 20
    with pytest.raises(InputError, match="no longer in the library"):
        analyse_views(cfg, "no-such-entry", {})


def test_password_protection_when_enabled(tmp_path, monkeypatch):
    import base64

    from dashboard.app_factory import create_app

    monkeypatch.setenv("IONDIFF_PASSWORD", "s3cret")
    client = create_app(tmp_path / "data", roots=[]).server.test_client()
    assert client.get("/").status_code == 401
    assert client.get("/health").status_code == 200  # the container's health check stays open
    good = base64.b64encode(b"lab:s3cret").decode()
    bad = base64.b64encode(b"lab:nope").decode()
    assert client.get("/", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    assert client.get("/", headers={"Authorization": f"Basic {good}"}).status_code == 200
    monkeypatch.delenv("IONDIFF_PASSWORD")
    assert create_app(tmp_path / "data2", roots=[]).server.test_client().get("/").status_code == 200


def test_run_too_short_for_the_method_is_refused(cfg, tmp_path):
    from dataclasses import replace

    t = make_synthetic(n_frames=1200, n_mobile=10, chain_sizes=(1, 2), seed=2).trajectory
    run = tmp_path / "LiX_short"
    run.mkdir()
    write_xdatcar(replace(t, positions_frac=t.positions_frac[:12], cells=t.cells[:12]), run / "XDATCAR")
    with pytest.raises(InputError, match=r"12 frame\(s\) is too short for the method"):
        analysis.run_analysis(cfg, run, Parameters(), timestep_fs=10)
    assert Library(cfg.library_db).list() == []


def test_server_runs_named_and_shown_relative_to_their_root(tmp_path, xdatcar):
    from dashboard.uploads import display_path, inspect_source, list_server_simulations, source_name

    root = tmp_path / "sims"
    run = root / "LGPS_600K"
    run.mkdir(parents=True)
    (run / "XDATCAR.gz").write_bytes(xdatcar.read_bytes())
    (run / "INCAR").write_text("SYSTEM = ignored for a folder\nPOTIM = 2\nNBLOCK = 5\nTEBEG = 600\n")
    info = inspect_source(run)
    assert info["name"] == "LGPS_600K" and info["timestep_fs"] == 10 and info["temperature_K"] == 600
    assert inspect_source(run / "XDATCAR.gz")["name"] == "LGPS_600K"
    assert source_name(run / "XDATCAR.gz", upload=True, system="LGPS 600 K") == "LGPS 600 K"
    assert source_name(run / "XDATCAR.gz", upload=True, title="Li10 Ge P2 S12") == "Li10 Ge P2 S12"
    assert display_path(run / "XDATCAR.gz", [root]) == "LGPS_600K/XDATCAR.gz"
    assert display_path(run, [root, tmp_path / "other"]) == "sims/LGPS_600K"
    assert list_server_simulations([root]) == [{"label": "LGPS_600K", "value": "LGPS_600K"}]
    assert resolve_server_path("LGPS_600K", [root]) == run.resolve()
