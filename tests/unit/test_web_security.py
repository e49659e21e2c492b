"""Request security of the dashboard's web server: size limits, the password throttle,
security headers, the CSRF-safe upload bound to its browser session, checked picks
(links out of the roots, FIFOs), the secret key's mode and the start-up race."""

import errno
import io
import math
import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest
from werkzeug.test import create_environ, run_wsgi_app

from dashboard import uploads
from dashboard.app_factory import create_app
from dashboard.config import Config
from iondiff_core.errors import InputError
from iondiff_core.io import write_xdatcar
from iondiff_core.synthetic import make_synthetic


@pytest.fixture(scope="module")
def xdatcar(tmp_path_factory):
    syn = make_synthetic(n_frames=300, n_mobile=4, chain_sizes=(1,), seed=1)
    path = tmp_path_factory.mktemp("traj") / "XDATCAR"
    write_xdatcar(syn.trajectory, path)
    return path


@pytest.fixture
def roots(tmp_path, xdatcar):
    """An allowed root with a run folder (XDATCAR + INCAR), and a secret outside it."""
    root = tmp_path / "root"
    run = root / "run"
    run.mkdir(parents=True)
    (run / "XDATCAR").write_bytes(xdatcar.read_bytes())
    (run / "INCAR").write_text("POTIM = 2\nNBLOCK = 5\nTEBEG = 600\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "XDATCAR").write_bytes(xdatcar.read_bytes())
    (outside / "INCAR").write_text("SYSTEM = secret\nPOTIM = 1\nTEBEG = 5\n")
    return root, outside


@pytest.fixture
def app(tmp_path, roots, monkeypatch):
    monkeypatch.delenv("IONDIFF_PASSWORD", raising=False)
    monkeypatch.delenv("IONDIFF_SECRET_KEY", raising=False)
    return create_app(data_dir=tmp_path / "data", roots=[roots[0]])


def test_secret_key_file_is_created_readable_by_its_owner_only(tmp_path, monkeypatch):
    monkeypatch.delenv("IONDIFF_SECRET_KEY", raising=False)
    monkeypatch.setattr(os, "umask", os.umask)  # whatever the umask, the mode is 0600
    old = os.umask(0o022)
    try:
        cfg = Config.from_env(tmp_path / "d")
    finally:
        os.umask(old)
    key = tmp_path / "d" / "secret_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(cfg.secret_key) == 64 and not list(key.parent.glob("*.tmp"))
    key.chmod(0o644)  # written by an older version: repaired, same key
    assert Config.from_env(tmp_path / "d").secret_key == cfg.secret_key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


class Unreadable(io.RawIOBase):
    """A request body that fails the test if the server reads any of it."""

    read_bytes = 0

    def readable(self):
        return True

    def readinto(self, b):
        Unreadable.read_bytes += len(b)
        raise AssertionError("the body was read")


def test_a_500_mb_callback_body_is_refused_before_it_is_read(app):
    env = create_environ("/_dash-update-component", method="POST", content_type="application/json")
    env["wsgi.input"], env["CONTENT_LENGTH"] = Unreadable(), str(500 * 1024**2)
    body, status, headers = run_wsgi_app(app.server, env)
    assert status.startswith("413")
    assert b"IONDIFF_MAX_REQUEST_MB" in b"".join(body)
    assert Unreadable.read_bytes == 0


def test_security_headers_on_every_response(app):
    c = app.server.test_client()
    for r in (c.get("/"), c.get("/health"), c.get("/_dash-layout"), c.post("/upload"), c.get("/nothing-here")):
        assert r.headers["X-Frame-Options"] == "DENY"
        csp = r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src")[0]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "same-origin"


# ---------------------------------------------------------------- password throttle
def test_password_guessing_is_throttled(tmp_path, monkeypatch):
    monkeypatch.setenv("IONDIFF_PASSWORD", "right-one")
    app = create_app(data_dir=tmp_path / "data")
    c = app.server.test_client()
    from dashboard.auth import FREE_FAILURES

    t = time.time()
    codes = [c.get("/", auth=("lab", f"guess{i}")).status_code for i in range(500)]
    # Once throttled, one try per doubling delay (1 s, 2 s, 4 s ...) gets through, however slow this machine is.
    evaluated = FREE_FAILURES + 1 + int(math.log2(1 + time.time() - t))
    assert set(codes) == {401, 429} and codes[:FREE_FAILURES] == [401] * FREE_FAILURES
    assert codes.count(401) <= evaluated and codes.count(429) >= 500 - evaluated
    r = c.get("/", auth=("lab", "right-one"))  # while locked out, the right password waits too
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert c.get("/health").status_code == 200  # the health check never asks
    # Another address is not affected, and a success clears an address's count.
    other = {"REMOTE_ADDR": "10.0.0.9"}
    assert c.get("/", auth=("lab", "wrong"), environ_base=other).status_code == 401
    assert c.get("/", auth=("lab", "right-one"), environ_base=other).status_code == 200
    for _ in range(5):
        assert c.get("/", auth=("lab", "wrong"), environ_base=other).status_code == 401


def test_throttle_delay_grows_and_expires(tmp_path):
    from dashboard.auth import FREE_FAILURES, MAX_DELAY_S, Throttle

    t = Throttle(tmp_path / "auth")
    for _ in range(FREE_FAILURES):
        assert t.wait_s("a") == 0
        t.failed("a")
    now = time.time()
    assert 0.5 < t.wait_s("a", now) <= 1.0
    for _ in range(3):
        t.failed("a")
    assert 4 < t.wait_s("a", time.time()) <= 8
    assert t.wait_s("a", now + MAX_DELAY_S + 1) == 0
    t.succeeded("a")
    assert t.wait_s("a") == 0


# ---------------------------------------------------------------- upload: CSRF and session binding
def _token(client) -> dict:
    return client.get("/upload/token").get_json()


def _post(client, tok, path, kind="trajectory", ref=None, headers=None, name=None):
    q = {"kind": kind, "name": name or Path(path).name}
    if ref:
        q["ref"] = ref
    h = {tok["header"]: tok["token"]} if tok else {}
    h.update(headers or {})
    return client.post("/upload", query_string=q, data=Path(path).read_bytes(), headers=h)


def test_upload_refuses_cross_site_posts_and_posts_without_the_session_token(app, xdatcar):
    c = app.server.test_client()
    tok = _token(c)
    assert _post(c, tok, xdatcar, headers={"Origin": "https://evil.example"}).status_code == 403
    assert _post(c, tok, xdatcar, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert _post(c, None, xdatcar).status_code == 403  # a form post cannot send the header
    assert _post(c, {**tok, "token": "0" * 64}, xdatcar).status_code == 403
    other = app.server.test_client()
    assert _post(other, tok, xdatcar).status_code == 403  # the token is worth nothing in another session
    assert not any(app.config_object.uploads.iterdir())
    r = _post(c, tok, xdatcar, headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and r.get_json()["ready"], r.get_json()


def test_uploads_are_bound_to_their_session_and_their_id_never_sent(app, xdatcar, tmp_path):
    cfg = app.config_object
    alice, mallory = app.server.test_client(), app.server.test_client()
    ta, tm = _token(alice), _token(mallory)
    r = _post(alice, ta, xdatcar, name="XDATCAR_LiX")
    ref = r.get_json()["ref"]
    (folder,) = list(cfg.uploads.iterdir())
    assert folder.name not in r.get_data(as_text=True) and "upload_id" not in r.get_json()
    incar = tmp_path / "INCAR"
    incar.write_text("POTIM = 1\nTEBEG = 5\n")
    # Another session cannot add (or replace) the INCAR of alice's upload, nor analyse it.
    r = _post(mallory, tm, incar, kind="incar", ref=ref)
    assert r.status_code == 400 and "unknown upload" in r.get_json()["error"]
    assert not (folder / "INCAR").exists()
    with app.server.test_request_context():
        with pytest.raises(InputError, match="unknown upload"):
            uploads.resolve_source(cfg, {"kind": "upload", "ref": ref})
    # Alice's own INCAR joins her upload; her session resolves it.
    incar.write_text("POTIM = 2\nNBLOCK = 5\nTEBEG = 600\n")
    r = _post(alice, ta, incar, kind="incar", ref=ref)
    assert r.get_json()["temperature_K"] == 600
    with alice.session_transaction() as sess:
        sid = sess["sid"]
    with app.server.test_request_context():
        from flask import session

        session["sid"] = sid
        assert uploads.resolve_source(cfg, {"kind": "upload", "ref": ref}).parent == folder


def test_a_background_job_resolves_the_upload_of_the_session_that_started_it(app, xdatcar):
    """A job has no request: the session comes from the cookies Dash hands it."""
    from dash._callback_context import context_value
    from dash._utils import AttributeDict

    c = app.server.test_client()
    ref = _post(c, _token(c), xdatcar).get_json()["ref"]
    cookie = c.get_cookie("session").value
    token = context_value.set(AttributeDict(cookies={"session": cookie}))
    try:
        assert uploads.resolve_source(app.config_object, {"kind": "upload", "ref": ref}).name == "XDATCAR"
        context_value.set(AttributeDict(cookies={"session": cookie[:-3] + "abc"}))  # forged: no session
        with pytest.raises(InputError):
            uploads.resolve_source(app.config_object, {"kind": "upload", "ref": ref})
    finally:
        context_value.reset(token)


def test_upload_too_large_and_disk_full_leave_nothing(app, xdatcar, monkeypatch):
    cfg = app.config_object
    c = app.server.test_client()
    tok = _token(c)
    cfg.max_upload_bytes = 100
    r = _post(c, tok, xdatcar)
    assert r.status_code == 413 and "IONDIFF_MAX_UPLOAD_MB" in r.get_json()["error"]
    cfg.max_upload_bytes = 1 << 30
    # The request limit (IONDIFF_MAX_REQUEST_MB) is not the upload's: a file above it is taken.
    cfg.max_request_bytes = app.server.config["MAX_CONTENT_LENGTH"] = 1000
    assert xdatcar.stat().st_size > 1000
    assert _post(c, tok, xdatcar).status_code == 200
    assert c.post("/_dash-update-component", data=b"{" * 2000, content_type="application/json").status_code == 413
    for f in cfg.uploads.iterdir():
        __import__("shutil").rmtree(f)

    class Full(io.FileIO):
        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(uploads, "_sink", lambda part: Full(part, "wb"))
    r = _post(c, tok, xdatcar)
    assert r.status_code == 507 and "disk is full" in r.get_json()["error"]
    assert not any(cfg.uploads.iterdir())  # no partial file, no empty folder


# ---------------------------------------------------------------- picks: links out of the roots, FIFOs
def _resolve(app, path):
    return uploads.resolve_source(app.config_object, {"kind": "server", "path": path})


def test_links_inside_a_picked_folder_that_point_outside_are_refused(app, roots):
    root, outside = roots
    assert _resolve(app, "run").name == "run"
    link_run = root / "linked"
    link_run.mkdir()
    (link_run / "XDATCAR").symlink_to(outside / "XDATCAR")
    with pytest.raises(InputError, match="outside the allowed folders") as e:
        _resolve(app, "linked")
    assert str(outside) not in str(e.value)
    (root / "run" / "INCAR").unlink()
    (root / "run" / "INCAR").symlink_to(outside / "INCAR")
    with pytest.raises(InputError, match="INCAR: a link to outside"):
        _resolve(app, "run")
    with pytest.raises(InputError, match="outside the allowed folders"):
        _resolve(app, "run/XDATCAR")  # the INCAR beside a picked file is checked too
    # A link that stays inside the roots is fine.
    (root / "run" / "INCAR").unlink()
    (root / "run" / "INCAR").symlink_to(root / "run" / "XDATCAR")
    assert _resolve(app, "run").name == "run"


def test_a_fifo_in_an_allowed_folder_is_refused_without_being_opened(app, roots):
    root, _ = roots
    fifo_run = root / "fifo"
    fifo_run.mkdir()
    os.mkfifo(fifo_run / "XDATCAR")
    os.mkfifo(root / "run" / "POSCAR")
    result = {}

    def pick(path):
        try:
            _resolve(app, path)
        except InputError as exc:
            result[path] = str(exc)

    threads = [threading.Thread(target=pick, args=(p,), daemon=True) for p in ("fifo/XDATCAR", "run")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads), "a pick hung on a FIFO"
    assert "not a regular file" in result["fifo/XDATCAR"] and "POSCAR" in result["run"]


def test_the_pick_list_and_the_source_carry_no_absolute_path(tmp_path, roots, xdatcar):
    root, outside = roots
    second = tmp_path / "second"
    (second / "runB").mkdir(parents=True)
    (second / "runB" / "XDATCAR").write_bytes(xdatcar.read_bytes())
    cfg = Config.from_env(tmp_path / "d2", [root, second])
    opts = uploads.list_server_simulations(cfg.roots)
    assert {o["value"] for o in opts} == {"root/run", "second/runB"}
    assert all(not o["value"].startswith("/") for o in opts)
    assert uploads.resolve_source(cfg, {"kind": "server", "path": "second/runB"}) == (second / "runB").resolve()


# ---------------------------------------------------------------- the start-up race (plotly/dash#3971)
def test_first_requests_of_a_fresh_app_can_run_concurrently(tmp_path, monkeypatch):
    """Dash sets its "set up" flag before doing the set-up; a request arriving meanwhile
    found "dash" unregistered. The set-up is made slow here: a script request sent while
    the first page is being served must still succeed."""
    import dash

    urls = re.findall(r'src="(/_dash-component-suites/dash/[^"]+)"',
                      create_app(data_dir=tmp_path / "a").server.test_client().get("/").get_data(as_text=True))
    slow = dash.Dash._walk_assets_directory

    def walk(self):
        time.sleep(0.5)
        return slow(self)

    monkeypatch.setattr(dash.Dash, "_walk_assets_directory", walk)
    app = create_app(data_dir=tmp_path / "b")
    first = threading.Thread(target=lambda: app.server.test_client().get("/"))
    first.start()
    time.sleep(0.1)
    codes = [app.server.test_client().get(u).status_code for u in urls[:3]]
    codes.append(app.server.test_client().get("/_dash-dependencies").status_code)
    first.join()
    assert codes == [200] * len(codes)


def test_a_server_pick_reaches_the_browser_without_server_paths(app, roots):
    """The pick callback's answer (the page's source) holds the path relative to the root."""
    root, outside = roots
    c = app.server.test_client()
    dep = next(d for d in c.get("/_dash-dependencies").get_json()
               if "source-store" in d["output"] and any(i["id"] == "server-sim" for i in d["inputs"]))
    outputs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in dep["output"].strip(".").split("...")]

    def pick(path):
        body = {"output": dep["output"], "outputs": outputs, "changedPropIds": ["server-sim.value"],
                "inputs": [{**dep["inputs"][0], "value": None}, {**dep["inputs"][1], "value": path}],
                "state": [{**dep["state"][0], "value": None}, {**dep["state"][1], "value": []}]}
        r = c.post("/_dash-update-component", json=body)
        assert r.status_code == 200
        return r.get_data(as_text=True), r.get_json()["response"]["source-store"]["data"]

    text, source = pick("run")
    assert source["kind"] == "server" and source["path"] == "run" and source["temperature_K"] == 600
    assert str(root) not in text and str(root.parent) not in text
    (root / "run" / "INCAR").unlink()
    (root / "run" / "INCAR").symlink_to(outside / "INCAR")
    text, source = pick("run")
    assert source["kind"] == "error" and "outside the allowed folders" in source["error"]
    assert "secret" not in text and str(outside) not in text  # the linked file was not read
