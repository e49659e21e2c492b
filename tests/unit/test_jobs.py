"""Bounded work in the app (issue 11): every callback value checked on the server, a job
queue with a concurrency and a time limit, dead jobs reported, job handles that cannot
stop another process, a corrupted jobs cache survived, memory bounded, no server path shown."""

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from dashboard import analysis, jobs, views
from dashboard.app_factory import create_app
from iondiff_core.errors import InputError
from iondiff_core.io import write_xdatcar
from iondiff_core.parameters import Parameters
from iondiff_core.synthetic import make_synthetic

INCAR = "POTIM = 2\nNBLOCK = 5\nTEBEG = 600\n"


# --------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True)
def no_job_left():
    """Job processes a test leaves (a failed assertion before its kill) are ended with it:
    they are not daemons, so the interpreter would wait for them at exit."""
    import psutil

    before = {c.pid for c in psutil.Process().children()}
    yield
    for child in psutil.Process().children():
        if child.pid not in before:
            with contextlib.suppress(psutil.Error):
                child.kill()


def until(check, timeout=60.0, every=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


def forge(client, app, output: str, values: dict, trigger: str | None = None, query: str = ""):
    """POST /_dash-update-component as a hostile client would: the callback whose output key
    contains ``output``, with ``values`` ({"id.prop": value}) for its inputs and states."""
    key = output if output in app.callback_map else next(k for k in app.callback_map if output in k)
    cb = app.callback_map[key]
    outs = [o for o in key.strip(".").split("...")] if key.startswith("..") else [key]
    outputs = [{"id": o.rsplit(".", 1)[0].split("@")[0], "property": o.rsplit(".", 1)[1].split("@")[0]} for o in outs]

    def dep(d):
        name = f"{d['id']}.{d['property']}"
        return {"id": d["id"], "property": d["property"], "value": values.get(name)}

    inputs = [dep(d) for d in cb["inputs"]]
    body = {"output": key, "outputs": outputs if len(outputs) > 1 else outputs[0], "inputs": inputs,
            "state": [dep(d) for d in cb.get("state", [])],
            "changedPropIds": [trigger or f"{inputs[0]['id']}.{inputs[0]['property']}"]}
    return client.post("/_dash-update-component" + query, data=json.dumps(body), content_type="application/json")


GOOD = {"sil-thr.value": 0.7, "r-vib.value": 0.5, "ref-mode.value": "mean", "ref-quantile.value": 0.95,
        "width-factor.value": 1.0, "pair-distance.value": None, "n-max.value": 20, "group-store.data": None,
        "color-by.value": "group"}

BAD = [  # (control, forged value, what the message names)
    ("n-max.value", 1e8, "n_max"), ("n-max.value", -3, "n_max"), ("n-max.value", float("nan"), "n_max"),
    ("n-max.value", float("inf"), "n_max"), ("n-max.value", 7.5, "whole number"), ("n-max.value", "9" * 1_000_000, "n_max"),
    ("n-max.value", [20], "n_max"), ("n-max.value", True, "n_max"), ("sil-thr.value", 2.0, "silhouette"),
    ("r-vib.value", 1e300, "r_vib"), ("r-vib.value", -0.5, "r_vib"), ("width-factor.value", -1, "smoothing width"),
    ("width-factor.value", {"$gt": 0}, "smoothing width"), ("pair-distance.value", 1e9, "pair distance"),
    ("ref-mode.value", "x" * 1_000_000, "reference level"), ("group-store.data", "abc", "selected group"),
    ("group-store.data", 10**12, "selected group"), ("color-by.value", "y" * 100_000, "colour by"),
    ("entry-store.data", {"$ne": 1}, "library entry id"), ("entry-store.data", "../../etc/passwd", "library entry id"),
]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """An app with one analysed run, read from a folder under an absolute tmp path."""
    tmp = tmp_path_factory.mktemp("jobs")
    run = tmp / "root folder" / "LiX_600K"
    run.mkdir(parents=True)
    write_xdatcar(make_synthetic(n_frames=1200, n_mobile=10, chain_sizes=(1, 2, 3), seed=4).trajectory, run / "XDATCAR")
    (run / "INCAR").write_text(INCAR)
    app = create_app(tmp / "data", roots=[run.parent])
    cfg = app.config_object
    from dashboard.pages.analyse import _analyse

    entry = _analyse(cfg, {"kind": "server", "path": str(run), "name": "LiX_600K"}, "Li", 10.0, 600.0, None)
    return app, cfg, entry, run


@pytest.fixture
def counted(monkeypatch):
    """How many times the cheap stages run (a refusal must cost none)."""
    from iondiff_core.pipeline import Session

    calls = []
    real = Session.result
    monkeypatch.setattr(Session, "result", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    analysis._RESULTS._d.clear()
    return calls


# --------------------------------------------------------------------------- 1. bounds
@pytest.mark.parametrize("control,value,named", BAD, ids=[f"{c}={str(v)[:12]}" for c, v, _ in BAD])
def test_forged_callback_values_are_refused_before_any_work(analysed, counted, control, value, named):
    app, cfg, entry, _ = analysed
    client = app.server.test_client()
    values = {**GOOD, "entry-store.data": entry, control: value}
    # The views that use the control (the pdf follows no group or colour; the summary no colour).
    uses = {"group-store.data": ("graph-3d.figure", "view-status.children"), "color-by.value": ("graph-3d.figure",)}
    for output in uses.get(control, ("graph-3d.figure", "graph-pdf.figure", "view-status.children")):
        r = forge(client, app, output, values)
        assert r.status_code == 200, (output, r.status_code)
        text = r.get_data(as_text=True)
        assert "alert-error" in text and named in text, (output, text[:300])
        assert len(text) < 5000  # the forged value is not echoed back
    assert counted == []  # refused before the engine ran


def test_good_values_still_draw(analysed, counted):
    app, cfg, entry, _ = analysed
    r = forge(app.server.test_client(), app, "graph-pdf.figure", {**GOOD, "entry-store.data": entry, "n-max.value": 12})
    assert r.status_code == 200 and "alert-error" not in r.get_data(as_text=True)
    assert counted  # this one did compute


@pytest.mark.parametrize("output", ["dl-json.data", "dl-csv.data", "dl-csv-pdf.data", "group-store.data"])
def test_forged_downloads_and_clicks_are_refused_with_a_message(analysed, counted, output):
    app, cfg, entry, _ = analysed
    values = {**GOOD, "entry-store.data": entry, "n-max.value": 1e8,
              "graph-3d.clickData": {"points": [{"customdata": 1}]}, "dl-json-btn.n_clicks": 1,
              "dl-csv-btn.n_clicks": 1, "csv-pdf.n_clicks": 1}
    trigger = "graph-3d.clickData" if output == "group-store.data" else None
    r = forge(app.server.test_client(), app, output, values, trigger)
    doc = r.get_json()
    assert r.status_code == 200 and "response" not in doc or not doc["response"]
    assert "n_max" in json.dumps(doc["sideUpdate"]["warnings"])
    assert counted == []


def test_forged_click_structures_are_refused(analysed):
    app, cfg, entry, _ = analysed
    client = app.server.test_client()
    for click in ({"points": "x" * 10000}, {"points": [{"customdata": "zz"}]}, {"points": [{"customdata": 1e300}]}, [1, 2]):
        r = forge(client, app, "group-store.data", {**GOOD, "entry-store.data": entry, "graph-3d.clickData": click},
                  "graph-3d.clickData")
        assert r.status_code == 200 and "alert-error" in json.dumps(r.get_json().get("sideUpdate")), click


@pytest.mark.parametrize("items", ["x" * 1_000_000, [{"path": 1, "label": "a", "state": "queued"}],
                                   [{"path": "a", "label": "a", "state": "hacked"}], [{}] * 1000])
def test_forged_queue_is_refused(analysed, items):
    app, cfg, entry, _ = analysed
    client = app.server.test_client()
    r = forge(client, app, "queue-rows.children", {"queue-store.data": items})
    assert r.status_code == 200 and "alert-error" in r.get_data(as_text=True) and len(r.get_data()) < 5000
    r = forge(client, app, "queue-sims.value", {"queue-store.data": items, "queue-add.n_clicks": 1})
    assert r.status_code == 200 and "alert-error" in json.dumps(r.get_json().get("sideUpdate"))


@pytest.mark.parametrize("species,timestep,temperature,named", [
    ("L" * 1_000_000, 10, 600, "species"), ({"a": 1}, 10, 600, "species"), ("Li", 1e300, 600, "timestep"),
    ("Li", float("nan"), 600, "timestep"), ("Li", "10", 600, "timestep"), ("Li", -1, 600, "timestep"),
    ("Li", 10, 1e308, "temperature"), ("Li", 10, -5, "temperature"),
])
def test_run_inputs_are_bounded(analysed, monkeypatch, species, timestep, temperature, named):
    app, cfg, entry, run = analysed
    from dashboard.pages.analyse import _analyse

    monkeypatch.setattr(analysis, "run_analysis", lambda *a, **k: pytest.fail("the run was not refused"))
    with pytest.raises(InputError, match=named):
        _analyse(cfg, {"kind": "server", "path": str(run)}, species, timestep, temperature, None)
    with pytest.raises(InputError, match="run name"):
        _analyse(cfg, {"kind": "server", "path": str(run), "name": "n" * 100_000}, "Li", 10, 600, None)


def test_parameters_refuse_non_finite_values():
    for bad in ({"r_vib_A": float("inf")}, {"width_factor": float("inf")}, {"pair_distance_A": float("nan")},
                {"r_vib_A": float("nan")}):
        with pytest.raises(InputError):
            Parameters(**bad)


# --------------------------------------------------------------------------- 7. no server path
def test_public_message_hides_every_server_path(tmp_path):
    from dashboard.config import Config

    cfg = Config.from_env(tmp_path / "my data", roots=[tmp_path / "my sims"])
    up = "0123456789abcdef0123456789abcdef"
    cases = {
        f"{tmp_path}/my sims/LGPS 600K/XDATCAR: 3 frames": "LGPS 600K/XDATCAR: 3 frames",
        f"{tmp_path}/my data/uploads/{up}/XDATCAR_x.gz has 3 fs/frame": "XDATCAR_x.gz has 3 fs/frame",
        f"cannot read {tmp_path}/elsewhere/INCAR (denied)": "cannot read INCAR (denied)",
        f"upload {up} is not yours": "upload (upload) is not yours",
        "D = 1e-5 cm2/s; see METHOD.md": "D = 1e-5 cm2/s; see METHOD.md",
    }
    for text, shown in cases.items():
        assert views.public_message(cfg, text) == shown
    two = Config.from_env(tmp_path / "d", roots=[tmp_path / "a", tmp_path / "b"])
    assert views.public_message(two, f"{tmp_path}/b/run/XDATCAR") == "b/run/XDATCAR"
    doc = views.public_data(cfg, {"input": {"source": f"{tmp_path}/my sims/r/XDATCAR"}, "w": [f"{tmp_path}/x/y"], "n": 3})
    assert doc == {"input": {"source": "r/XDATCAR"}, "w": ["y"], "n": 3}


def test_no_server_path_in_any_page_output_or_download(analysed):
    app, cfg, entry, run = analysed
    client = app.server.test_client()
    secret_paths = [str(run.parent), str(cfg.data_dir), str(Path(run).resolve().parent)]
    values = {**GOOD, "entry-store.data": entry, "dl-json-btn.n_clicks": 1, "dl-csv-btn.n_clicks": 1}
    outputs = ["dl-json.data", "dl-csv.data", "view-status.children", "species.options@"] + [
        f"graph-{v}.figure" for v in views.VIEWS] + [f"dl-csv-{v}.data" for v in (*views.VIEWS, "table")]
    seen = []
    for output in outputs:
        vals = {**values, **{f"csv-{v}.n_clicks": 1 for v in (*views.VIEWS, "table")}}
        r = forge(client, app, output, vals)
        assert r.status_code == 200, output
        seen.append(r.get_data(as_text=True))
    # The library's reproducibility record, and a server pick refused with the path typed.
    r = forge(client, app, "library-record.data", {"library-record-btn.n_clicks": 1, "library-table.selectedRows": [{"id": entry}]})
    assert r.status_code == 200 and "reproducibility" in r.get_data(as_text=True)
    seen.append(r.get_data(as_text=True))
    r = forge(client, app, "source-label.children", {"server-use.n_clicks": 1, "server-path.value": str(run.parent / "nothing here")},
              trigger="server-use.n_clicks")
    assert r.status_code == 200 and "not found" in r.get_data(as_text=True)
    seen.append(r.get_data(as_text=True))
    download = next(json.loads(t)["response"]["dl-json"]["data"]["content"] for t in seen if '"dl-json"' in t)
    assert json.loads(download)["input"]["source"] == "LiX_600K"
    from dashboard.storage import Library

    seen.append(Path(Library(cfg.library_db).get(entry).result).read_text())  # the stored result, downloaded from the library
    for text in seen:
        text = text.replace("\\u002f", "/")  # Dash's JSON escapes every slash
        for p in secret_paths:
            assert p not in text and json.dumps(p)[1:-1] not in text
    # A refusal that quotes a path shows none of it either.
    from dashboard.pages.analyse import _analyse

    with pytest.raises(InputError) as err:
        _analyse(cfg, {"kind": "server", "path": str(run / "missing")}, "Li", 10, 600, None)
    assert str(run.parent) not in views.public_message(cfg, str(err.value))


def test_engine_error_with_a_path_is_shown_without_it(analysed, tmp_path):
    app, cfg, entry, run = analysed
    broken = run.parent / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "XDATCAR").write_text("not a trajectory\n")
    (broken / "INCAR").write_text(INCAR)
    with pytest.raises(InputError) as err:
        analysis.run_analysis(cfg, broken, Parameters(species="Li"), 10.0, 600.0)
    assert str(run.parent) in str(err.value) or "broken" in str(err.value)
    shown = views.public_message(cfg, str(err.value))
    assert str(run.parent) not in shown and str(cfg.data_dir) not in shown


# --------------------------------------------------------------------------- 2. queue and time limit
def _sleeper(set_progress, i, folder, seconds):
    set_progress([f"working {i}"])
    Path(folder, f"start-{i}").write_text(repr(time.time()))
    time.sleep(seconds)
    Path(folder, f"end-{i}").write_text(repr(time.time()))
    return i


_sleeper.queued_progress = lambda position, *_: [f"queued (position {position})"]


def _start(manager, key, fn, *args):
    return manager.call_job_fn(key, manager.make_job_fn(fn, True), list(args), {})


def _result(manager, key, pid, timeout=30):
    return until(lambda: (r := manager.get_result(key, pid)) is not manager.UNDEFINED and [r], timeout)[0]


def test_twelve_runs_start_at_most_max_jobs_analyses_the_rest_queued(tmp_path):
    manager = jobs.JobManager(tmp_path / "jobs", max_jobs=2, time_limit_s=60)
    out = tmp_path / "out"
    out.mkdir()
    pids = [_start(manager, f"k{i}", _sleeper, i, str(out), 0.4) for i in range(12)]
    seen_queued, most = set(), 0
    end = time.monotonic() + 60
    while time.monotonic() < end and len(list(out.glob("end-*"))) < 12:
        running = {p.name[6:] for p in out.glob("start-*")} - {p.name[4:] for p in out.glob("end-*")}
        most = max(most, len(running))
        for i in range(12):
            msg = manager.handle.get(f"k{i}-progress")
            if msg and msg[0].startswith("queued (position"):
                seen_queued.add(msg[0])
        time.sleep(0.02)
    assert sorted(_result(manager, f"k{i}", pid) for i, pid in enumerate(pids)) == list(range(12))
    assert most <= 2
    # Every job ran for 0.4 s at most 2 at a time: no two overlapping beyond that.
    spans = sorted((float(Path(out, f"start-{i}").read_text()), float(Path(out, f"end-{i}").read_text())) for i in range(12))
    assert max(sum(a <= t < b for a, b in spans) for t, _ in spans) <= 2
    assert "queued (position 1)" in seen_queued and any(int(re.findall(r"\d+", m)[0]) >= 5 for m in seen_queued)


def test_too_many_waiting_are_refused_at_once(tmp_path):
    manager = jobs.JobManager(tmp_path / "jobs", max_jobs=1, time_limit_s=60, max_queued=2)
    out = tmp_path / "out"
    out.mkdir()
    pids = [_start(manager, f"k{i}", _sleeper, i, str(out), 3) for i in range(3)]
    until(lambda: len(manager.slots.waiting()) == 2)
    assert _start(manager, "k9", _sleeper, 9, str(out), 0) == 0
    refused = manager.get_result("k9", "0")
    assert "busy" in refused["background_callback_error"]["msg"] and "IONDIFF_MAX_QUEUED" in refused["background_callback_error"]["msg"]
    for pid in pids:
        manager.terminate_job(pid)


def test_job_over_its_time_limit_is_stopped_and_reported(tmp_path):
    manager = jobs.JobManager(tmp_path / "jobs", max_jobs=1, time_limit_s=1)
    out = tmp_path / "out"
    out.mkdir()
    pid = _start(manager, "slow", _sleeper, 0, str(out), 60)
    result = _result(manager, "slow", pid, timeout=20)
    msg = result["background_callback_error"]["msg"]
    assert "IONDIFF_JOB_TIME_LIMIT_S" in msg and "1 s" in msg
    until(lambda: not manager.job_running(pid), 5)
    assert not (out / "end-0").exists()
    # Its slot is free again: the next job runs.
    pid2 = _start(manager, "quick", _sleeper, 1, str(out), 0)
    assert _result(manager, "quick", pid2) == 1


def _three_runs(set_progress, seconds):
    for _ in range(3):  # a queue of runs: each run's clock starts anew
        jobs.restart_clock()
        time.sleep(seconds)
    return "all done"


def test_time_limit_counts_per_run_of_a_queue(tmp_path):
    manager = jobs.JobManager(tmp_path / "jobs", max_jobs=1, time_limit_s=2)
    pid = _start(manager, "queue", _three_runs, 1.2)  # 3.6 s in all, 1.2 s per run
    assert _result(manager, "queue", pid) == "all done"


# --------------------------------------------------------------------------- 4. dead job
def test_killed_job_is_reported_failed_not_frozen(tmp_path):
    manager = jobs.JobManager(tmp_path / "jobs", max_jobs=1, time_limit_s=600)
    out = tmp_path / "out"
    out.mkdir()
    pid = _start(manager, "dies", _sleeper, 0, str(out), 60)
    until(lambda: (out / "start-0").exists())
    assert manager.get_result("dies", pid) is manager.UNDEFINED and manager.job_running(pid)
    os.kill(pid, signal.SIGKILL)
    until(lambda: not manager.job_running(pid), 5)
    msg = manager.get_result("dies", pid)["background_callback_error"]["msg"]
    assert "ended without a result" in msg
    # A job cancelled by its user is not reported as failed.
    pid = _start(manager, "cancelled", _sleeper, 1, str(out), 60)
    until(lambda: (out / "start-1").exists())
    manager.terminate_job(pid)
    assert manager.get_result("cancelled", pid) is manager.UNDEFINED


def test_job_stuck_at_start_up_ends_and_is_reported(tmp_path, monkeypatch):
    """A job whose first SQLite call never returns (a fork taken while another thread was
    inside SQLite) ends after jobs.STARTUP_S and the next poll reports it failed."""
    manager = jobs.JobManager(tmp_path / "jobs", max_jobs=1, time_limit_s=600)
    monkeypatch.setattr(jobs, "STARTUP_S", 1.0)
    monkeypatch.setattr(jobs.diskcache, "Cache", lambda *a, **k: time.sleep(60))  # in the child only
    pid = _start(manager, "stuck", _sleeper, 0, str(tmp_path), 0)
    msg = _result(manager, "stuck", pid, timeout=20)["background_callback_error"]["msg"]
    assert "ended without a result" in msg


def _end_id(client):
    """The page's signed end id (the first request also starts the library's clean-up thread,
    waited for: a fork while it is inside SQLite leaves the job's SQLite locked, see jobs.STARTUP_S)."""
    import threading

    html = client.get("/").get_data(as_text=True)
    for t in threading.enumerate():
        if t.name == "iondiff-cleanup":
            t.join(30)
    return re.search(r'"end_id":\s*"([^"]+)"', html).group(1)


def test_page_poll_after_kill_shows_failure(tmp_path, monkeypatch):
    import psutil

    import dashboard.pages.analyse

    monkeypatch.setattr(dashboard.pages.analyse, "_analyse", lambda cfg, src, sp, ts, t, progress: (progress(0.3, "clustering ion 3 of 10"),
                                                                                      time.sleep(120)))
    app = create_app(tmp_path / "data", roots=[])
    client = app.server.test_client()
    end_id = _end_id(client)
    before = {c.pid for c in psutil.Process().children()}
    r = forge(client, app, "entry-store.data...run-error.children", {"run-button.n_clicks": 1, "source-store.data": {"kind": "server"}},
              query=f"?endId={end_id}")
    handle = r.get_json()
    (pid,) = {c.pid for c in psutil.Process().children()} - before
    poll = f"?endId={end_id}&cacheKey={handle['cacheKey']}&job={handle['job']}"
    until(lambda: "clustering ion 3" in forge(client, app, "entry-store.data...run-error.children", {}, query=poll).get_data(as_text=True))
    os.kill(pid, signal.SIGKILL)
    until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 5)
    text = forge(client, app, "entry-store.data...run-error.children", {}, query=poll).get_data(as_text=True)
    assert "the analysis failed" in text and "ended without a result" in text
    assert '"progress-text": {"children": "failed"}' in text.replace("'", '"') or "failed" in json.dumps(json.loads(text).get("sideUpdate"))


def test_queue_job_killed_marks_its_running_run_failed_and_keeps_the_rest(tmp_path, monkeypatch):
    import psutil

    import dashboard.pages.analyse

    def stuck(cfg, items, report):
        items[0].update(state="done", progress=1.0)
        items[1].update(state="running", progress=0.4, message="clustering ion 2 of 9")
        report(items)
        time.sleep(60)

    monkeypatch.setattr(dashboard.pages.analyse, "_run_queue", stuck)
    app = create_app(tmp_path / "data", roots=[])
    client = app.server.test_client()
    end_id = _end_id(client)
    items = [dashboard.pages.analyse._queue_item(p, p) for p in ("a", "b", "c")]
    before = {c.pid for c in psutil.Process().children()}
    h = forge(client, app, "queue-store.data", {"queue-run.n_clicks": 1, "queue-store.data": items},
              query=f"?endId={end_id}").get_json()
    (pid,) = {c.pid for c in psutil.Process().children()} - before
    poll = f"?endId={end_id}&cacheKey={h['cacheKey']}&job={h['job']}"
    seen = []
    until(lambda: seen.append(forge(client, app, "queue-store.data", {}, query=poll).get_data(as_text=True))
          or "clustering ion 2" in seen[-1])
    os.kill(pid, signal.SIGKILL)
    doc = until(lambda: (r := forge(client, app, "queue-store.data", {}, query=poll).get_json() or {}).get("response") and r)
    rows = doc["response"]["queue-store"]["data"]
    assert [r["state"] for r in rows] == ["done", "failed", "queued"]
    assert "ended without a result" in rows[1]["message"]


def test_page_shows_queue_position_while_the_slot_is_taken(tmp_path, monkeypatch):
    import dashboard.pages.analyse

    def slow(cfg, src, sp, ts, t, progress):
        progress(0.5, "clustering")
        time.sleep(1.5)
        return None

    monkeypatch.setattr(dashboard.pages.analyse, "_analyse", slow)
    monkeypatch.setenv("IONDIFF_MAX_JOBS", "1")
    app = create_app(tmp_path / "data", roots=[])
    client = app.server.test_client()
    end_id = _end_id(client)
    out = "entry-store.data...run-error.children"
    polls = []
    for clicks in (1, 2):  # two Run clicks (two tabs): one slot
        h = forge(client, app, out, {"run-button.n_clicks": clicks, "source-store.data": {"kind": "server"}},
                  query=f"?endId={end_id}").get_json()
        polls.append(f"?endId={end_id}&cacheKey={h['cacheKey']}&job={h['job']}")
    texts = {0: [], 1: []}

    def done():
        for i, poll in enumerate(polls):
            if not any('"response"' in t for t in texts[i]):
                texts[i].append(forge(client, app, out, {}, query=poll).get_data(as_text=True))
        return all(any('"response"' in t for t in ts) for ts in texts.values())

    until(done, 30, every=0.1)
    assert any("queued (position 1)" in t for t in texts[1]) and not any("queued" in t for t in texts[0])
    assert any("clustering" in t for t in texts[1])  # then it ran


# --------------------------------------------------------------------------- 5. forged handles
def test_forged_job_handle_cannot_stop_another_process(tmp_path):
    from dash import _callback_signing as signing

    victim = subprocess.Popen(["sleep", "60"])
    try:
        app = create_app(tmp_path / "data", roots=[])
        manager = app._background_manager
        manager.terminate_job(str(victim.pid))
        assert not manager.job_running(str(victim.pid))
        # Even a correctly signed handle (a leaked secret key) for a process it did not start:
        client = app.server.test_client()
        token = _end_id(client)
        secret = app._get_signing_secret()
        raw = signing.unsign(secret, signing.END_SCOPE, token)
        job = signing.sign(secret, signing.job_scope(raw), str(victim.pid))
        forge(client, app, "entry-store.data...run-error.children", {}, query=f"?endId={token}&cacheKey=x&job={job}")
        forge(client, app, "cancel-button.id", {"cancel-button.n_clicks": 1}, query=f"?endId={token}&cancelJob={job}")
        for bad in ("-1", "0", "abc", "1" * 100, str(os.getpid())):
            manager.terminate_job(bad)
        time.sleep(0.2)
        assert victim.poll() is None  # still running
    finally:
        victim.kill()
        victim.wait()


# --------------------------------------------------------------------------- 6. corrupted cache
def test_start_up_survives_a_corrupted_jobs_cache(tmp_path, caplog):
    folder = tmp_path / "data" / "jobs"
    folder.mkdir(parents=True)
    (folder / "cache.db").write_bytes(b"this is not a database\x00" * 500)
    with caplog.at_level(logging.ERROR, logger="dashboard.jobs"):
        app = create_app(tmp_path / "data", roots=[])
    assert app.server.test_client().get("/").status_code == 200
    (aside,) = folder.glob("corrupt-*")
    assert (aside / "cache.db").read_bytes().startswith(b"this is not a database")
    assert any("damaged" in r.getMessage() and "moved aside" in r.getMessage() for r in caplog.records)
    manager = app._background_manager
    out = tmp_path / "out"
    out.mkdir()
    pid = _start(manager, "after", _sleeper, 7, str(out), 0)
    assert _result(manager, "after", pid) == 7


# --------------------------------------------------------------------------- 3. memory
def test_resident_bytes_counts_memory_not_mapped_files(tmp_path):
    a = np.zeros((1000, 10, 3), np.float32)
    np.save(tmp_path / "a.npy", a)
    m = np.load(tmp_path / "a.npy", mmap_mode="r")
    assert analysis.resident_bytes(a) == a.nbytes
    assert analysis.resident_bytes({"x": a, "views": [a[3:], a.T]}) == a.nbytes  # one buffer, counted once
    assert analysis.resident_bytes([m, m[10:], m[::2]]) == 0
    assert analysis.resident_bytes(np.broadcast_to(np.array(a[:1]), a.shape)) == a[:1].nbytes


def test_web_process_sessions_are_bounded_by_bytes_and_hold_no_trajectory(analysed, monkeypatch):
    app, cfg, entry, _ = analysed
    from dashboard.storage import Library

    e = Library(cfg.library_db).get(entry)
    analysis._SESSIONS.clear()
    session = analysis.session_for(cfg, e)  # rebuilt as a fresh web process does
    held = analysis.resident_bytes(session)
    positions = session.prep.positions_A
    assert isinstance(positions, np.memmap) or analysis.resident_bytes(positions) == 0
    frames_bytes = positions.shape[0] * positions.shape[1] * 3 * 4
    assert held < frames_bytes, (held, frames_bytes)  # the positions stay on disk
    # The cache keeps what fits in its budget (measured, not counted), and nothing larger than it.
    from types import SimpleNamespace

    analysis._SESSIONS.clear()
    analysis._SESSIONS.put("real", session, held)
    assert analysis._SESSIONS.get("real") is session
    budget = 5_000_000  # two of 2.4 MB fit (the count bound, 4, is not what limits here)
    for k in range(5):
        analysis._SESSIONS.put(f"s{k}", SimpleNamespace(a=np.zeros(300_000)), budget)
        assert analysis._SESSIONS.nbytes() <= budget
    assert [analysis._SESSIONS.get(f"s{k}") is not None for k in range(5)] == [False, False, False, True, True]
    assert analysis._SESSIONS.get("real") is None
    grown = analysis._SESSIONS.get("s4")
    grown.b = np.zeros(300_000)  # a kept session grows (memoised hop stages): measured again on the next put
    analysis._SESSIONS.put("s5", SimpleNamespace(a=np.zeros(10)), budget)
    assert analysis._SESSIONS.nbytes() <= budget and analysis._SESSIONS.get("s3") is None
    analysis._SESSIONS.put("big", SimpleNamespace(a=np.zeros(2_000_000)), budget)
    assert analysis._SESSIONS.get("big") is None
    analysis._SESSIONS.clear()


def test_read_limits_are_passed_to_every_read(analysed, monkeypatch, tmp_path):
    """The settings reach the engine's reader."""
    import iondiff_core.io as io

    app, cfg, entry, run = analysed
    seen = []
    real = io.read_trajectory

    def reader(*a, limits=None, **k):
        seen.append(limits)
        return real(*a, limits=limits, **k)

    monkeypatch.setattr(io, "read_trajectory", reader)
    monkeypatch.setenv("IONDIFF_MAX_TEXT_MB", "3")
    monkeypatch.setenv("IONDIFF_MAX_ATOM_FRAMES", "123456")
    from dashboard.config import Config

    cfg2 = Config.from_env(tmp_path / "data2", roots=[run.parent])
    analysis.run_analysis(cfg2, run, Parameters(species="Li"), 10.0, 600.0)
    assert seen and seen[0].max_text_bytes == 3 * 1024**2 and seen[0].max_atom_frames == 123456


def test_atom_frames_limit_refuses_a_large_run(analysed, monkeypatch, tmp_path):
    app, cfg, entry, run = analysed
    monkeypatch.setenv("IONDIFF_MAX_ATOM_FRAMES", "1000")
    from dashboard.config import Config

    cfg2 = Config.from_env(tmp_path / "data3", roots=[run.parent])
    with pytest.raises(InputError, match="IONDIFF_MAX_ATOM_FRAMES"):
        analysis.run_analysis(cfg2, run, Parameters(species="Li"), 10.0, 600.0)


def test_settings_are_checked(monkeypatch, tmp_path):
    from dashboard.config import Config

    for name, bad in (("IONDIFF_MAX_JOBS", "0"), ("IONDIFF_JOB_TIME_LIMIT_S", "abc"), ("IONDIFF_MAX_TEXT_MB", "inf")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=name):
            Config.from_env(tmp_path / "d")
        monkeypatch.delenv(name)
    monkeypatch.setenv("IONDIFF_MAX_JOBS", "3")
    assert Config.from_env(tmp_path / "d").max_jobs == 3
