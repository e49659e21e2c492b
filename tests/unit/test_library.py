"""The library: editable fields and flags in storage, the guardrails of the cross-run views,
the reproducibility record and citations, and the port ``python app.py`` listens on."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dashboard.config import AddressError, serve_address
from dashboard.figures import library_stats
from dashboard.storage import Library
from iondiff_core import __version__, provenance
from iondiff_core.parameters import Parameters
from iondiff_core.pipeline import Session
from iondiff_core.io import write_xdatcar
from iondiff_core.synthetic import make_synthetic
from iondiff_core.transport import KB_EV_PER_K

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- storage

def _add(lib, tmp_path, name="run", **over):
    res, traj = tmp_path / f"{name}.json", tmp_path / f"{name}.traj"
    res.write_text("{}")
    traj.write_text("x")
    kw = dict(name=name, material="LGPS", family="Li-based", species="Li", temperature_K=600.0, sha256=name, params_key="k",
              params={}, trajectory=str(traj), result=str(res), descriptors={})
    return lib.add(**{**kw, **over})


def test_update_edits_name_material_temperature_tags_and_refuses_bad_values(tmp_path):
    lib = Library(tmp_path / "lib.sqlite")
    e = _add(lib, tmp_path)
    e2 = lib.update(e.id, name=" LGPS hot ", material=" Li10GeP2S12 ", temperature_K="900", tags="a, b,,a")
    assert (e2.name, e2.material, e2.temperature_K, e2.tags) == ("LGPS hot", "Li10GeP2S12", 900.0, "a,b")
    assert lib.update(e.id, temperature_K="").temperature_K is None  # cleared: unknown temperature
    for bad, match in (({"material": "  "}, "material cannot be empty"), ({"temperature_K": "hot"}, "not a number"),
                       ({"temperature_K": -5}, "outside"), ({"species": "Na"}, "not editable"), ({"name": ""}, "name cannot be empty")):
        with pytest.raises(ValueError, match=match):
            lib.update(e.id, **bad)
    with pytest.raises(ValueError, match="no longer in the library"):
        lib.update("nope", name="x")
    assert lib.get(e.id).material == "Li10GeP2S12"  # refused edits changed nothing


def test_flags_are_stored_and_an_old_database_gains_the_column(tmp_path):
    import sqlite3

    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as c:  # the schema before flags existed
        c.executescript("""CREATE TABLE entries (id TEXT PRIMARY KEY, name TEXT NOT NULL, material TEXT, family TEXT, species TEXT,
            temperature_K REAL, tags TEXT DEFAULT '', sha256 TEXT NOT NULL, params_key TEXT NOT NULL, params TEXT NOT NULL,
            trajectory TEXT NOT NULL, result TEXT NOT NULL, descriptors TEXT NOT NULL, created REAL NOT NULL);""")
        c.execute("INSERT INTO entries VALUES ('old1','old','m','f','Li',500,'','s','k','{}','t','r','{}',0)")
    lib = Library(db)
    assert lib.get("old1").flags == ""
    e = _add(lib, tmp_path, name="cut", flags="partial: the 3 complete frames of a damaged XDATCAR.gz")
    assert lib.get(e.id).flags.startswith("partial")


# ----------------------------------------------------------------------------- cross-run views

def _entry(i, T, material="LiX", D=None, groups=(1, 2, 2, 3, 4, 1, 2, 5, 3, 2), **desc):
    D = 1e-3 * np.exp(-0.2 / (KB_EV_PER_K * T)) if D is None and T else D
    return {"name": f"r{i}", "material": material, "family": "Li-based", "species": "Li", "temperature_K": T,
            "descriptors": {"D_tracer_cm2_s": D, "hop_length_mean_A": 1.0 + 0.1 * i, "nu_THz": 0.5 - 0.03 * i ** 1.5,
                            "mean_n": 2.0, "haven_ratio": None, **desc},
            "groups": list(groups), "params": {"r_vib_A": 0.5}, "n_max": 20}


def test_spearman_needs_five_runs_and_says_why():
    d = library_stats.process_data([_entry(i, 500 + 100 * i) for i in range(4)])
    assert "rho" not in d["spearman"] and "at least 5" in d["spearman"]["reason"]
    assert "at least 5" in library_stats.spearman_figure(d).layout.annotations[0].text


def test_spearman_leaves_out_constant_missing_and_design_columns_and_carries_p_and_n():
    entries = [_entry(i, 500 + 50 * i) for i in range(6)]
    entries[0]["descriptors"]["hop_length_mean_A"] = None  # N = 5 for the pairs with it
    d = library_stats.process_data(entries)
    sp = d["spearman"]
    assert set(sp["names"]) == {"D_tracer_cm2_s", "hop_length_mean_A", "nu_THz"}
    why = {x["column"]: x["why"] for x in sp["left_out"]}
    assert "same in every run" in why["mean_n"] and "no run" in why["haven_ratio"] and "temperature" in why["temperature_K"]
    i, j = sp["names"].index("D_tracer_cm2_s"), sp["names"].index("nu_THz")
    assert sp["rho"][i, j] == pytest.approx(-1.0) and sp["n"][i, j] == 6
    assert sp["p"][i, j] == pytest.approx(2 / 720)  # exact permutation p of a perfect rank correlation of 6, not 0
    k = sp["names"].index("hop_length_mean_A")
    assert sp["n"][i, k] == 5
    text = library_stats.spearman_figure(d).data[0].text
    assert "p=" in text[i][j] and "N=6" in text[i][j] and "N=5" in text[i][k]


def test_arrhenius_only_with_two_temperatures_and_ea_with_its_interval():
    rng = np.random.default_rng(0)
    hot = [_entry(i, T, D=1e-3 * np.exp(-0.25 / (KB_EV_PER_K * T)) * np.exp(rng.normal(0, 0.05)))
           for i, T in enumerate((500, 600, 700, 800, 900))]
    one_T = [_entry(10 + i, 600, material="NaY") for i in range(3)]
    d = library_stats.process_data(hot + one_T)
    arr = d["arrhenius"]
    assert list(arr["fits"]) == ["LiX"]
    fit = arr["fits"]["LiX"]
    assert abs(fit["Ea_eV"] - 0.25) < 3 * fit["Ea_ci95_halfwidth_eV"] and 0 < fit["Ea_ci95_halfwidth_eV"] < 0.1
    assert any(r.startswith("NaY: 3 runs, all at 600 K") for r in arr["reasons"])
    fig = library_stats.arrhenius_figure(d)
    assert [t.name for t in fig.data][1].startswith("LiX: Ea = 0.2") and "± " in fig.data[1].name and "(95 %)" in fig.data[1].name
    only_one = library_stats.process_data(one_T)
    assert not only_one["arrhenius"]["fits"]
    assert "all at 600 K" in library_stats.arrhenius_figure(only_one).layout.annotations[0].text


def test_pooled_pdf_only_with_enough_concerted_groups():
    few = library_stats.process_data([_entry(0, 500, groups=(1, 2, 3, 4))])
    assert "only 4 groups" in few["pooled"]["reason"]
    isolated = library_stats.process_data([_entry(0, 500, groups=(1,) * 30)])
    assert "isolated" in isolated["pooled"]["reason"]
    entries = [_entry(i, 500, groups=(1, 1, 1, 2, 2, 3, 25)) for i in range(3)]
    entries[1]["params"] = {"r_vib_A": 0.7}
    d = library_stats.process_data(entries)
    all_ = d["pooled"]["families"]["all"]
    assert int(np.sum(all_["counts"])) + (all_["overflow_count"] if "overflow_count" in all_ else 0) >= 18
    assert any("r_vib_A" in n for n in d["pooled"]["notes"])
    fig = library_stats.pooled_pdf_figure(d)
    bars = fig.data[0]
    assert len(bars.x) == 21 and bars.y[-1] == pytest.approx(3 / 21)  # the overflow bar: 3 of 21 groups have n > 20
    assert fig.layout.xaxis.ticktext[-1] == "> 20"


def test_groups_by_material_and_temperature():
    d = library_stats.process_data([_entry(0, 600, "B"), _entry(1, 500, "A"), _entry(2, 600, "B"), _entry(3, None, "A")])
    assert [(g["material"], g["temperature_K"], g["runs"]) for g in d["groups"]] == [("A", 500, 1), ("A", None, 1), ("B", 600, 2)]


def test_views_read_the_new_pdf_document_too():
    """The engine's pooled pdf with ``fit`` as a dict and the overflow as a share (issue 8 contract)."""
    p = {"n": [1, 2, 3], "p": [0.5, 0.3, 0.1], "counts": [5, 3, 1], "overflow": 0.1, "overflow_count": 1,
         "fit": {"A": 1.0, "b": 0.5, "A_ci95": [0.8, 1.2], "b_ci95": [0.4, 0.6]}, "fit_note": ""}
    assert library_stats._fit_of(p)["b_ci95"] == [0.4, 0.6]
    assert library_stats._fit_of({**p, "fit": None, "A": None}) is None
    assert library_stats._fit_note({**p, "fit": None, "fit_note": "percolated"}) == "percolated"


# ----------------------------------------------------------------------------- provenance

@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    syn = make_synthetic(n_frames=1200, n_mobile=10, chain_sizes=(1, 2), seed=2)
    write_xdatcar(syn.trajectory, d / "XDATCAR")
    (d / "INCAR").write_text("POTIM = 2\nNBLOCK = 5\nTEBEG = 600\n")
    params = Parameters(seed=3, r_vib_A=0.55)
    result = Session.open(d, params, d / "cache").result()
    return d, params, result.to_dict()


def test_record_has_input_hashes_every_parameter_versions_and_seeds(analysed):
    folder, params, doc = analysed
    import hashlib

    rec = provenance.record(doc, params, {"files": provenance.input_files(folder), "sha256": "abc"})
    files = {f["name"]: f for f in rec["input"]["files"]}
    assert files["XDATCAR"]["sha256"] == hashlib.sha256((folder / "XDATCAR").read_bytes()).hexdigest()
    assert rec["input"]["sha256"] == "abc" and rec["input"]["timestep_fs"] == 10.0 and rec["input"]["temperature_K"] == 600.0
    assert rec["parameters"] == params.to_dict() and rec["seeds"]["seed"] == 3
    import numpy, scipy, sklearn

    assert rec["software"]["numpy"] == numpy.__version__ and rec["software"]["scipy"] == scipy.__version__
    assert rec["software"]["scikit-learn"] == sklearn.__version__ and rec["software"]["iondiff-dashboard"] == __version__
    json.dumps(rec)  # JSON-ready
    assert provenance.record(doc)["parameters"]["r_vib_A"] == 0.55  # from the document alone


def test_methods_paragraph_states_the_run_its_parameters_and_cites(analysed):
    _, params, doc = analysed
    text = provenance.methods_paragraph(doc)
    for needed in ("López, Rurali and Cazorla", "[lopez2024concerted]", "[iondiff_dashboard]", "1200 frames", "10 fs apart",
                   "600 K", "r_vib = 0.55 Å", "seed 3", f"{len(doc['hops'])} hops", f"NumPy {numpy_version()}"):
        assert needed in text, needed
    with_files = {**doc, "provenance": provenance.record(doc, params, {"files": [{"name": "XDATCAR", "sha256": "ab" * 32}]})}
    assert f"SHA-256 XDATCAR {'ab' * 32}" in provenance.methods_paragraph(with_files)
    no_dt = {k: v for k, v in doc.items() if k != "provenance"} | {"input": {**doc["input"], "timestep_fs": None}}
    assert "fs apart" not in provenance.methods_paragraph(no_dt)  # nothing the document does not hold
    flagged = {**doc, "provenance": provenance.record(doc, params, {"flags": "partial: 3 complete frames"})}
    assert "Caveat: partial: 3 complete frames." in provenance.methods_paragraph(flagged)


def numpy_version():
    import numpy

    return numpy.__version__


def test_bibtex_and_citation_cff_agree():
    keys = re.findall(r"@(\w+)\{(\w+),", provenance.BIBTEX)
    assert keys == [("article", provenance.PAPER_KEY), ("software", provenance.SOFTWARE_KEY)]
    for field in ("volume  = {146}", "pages   = {8269--8279}", "year    = {2024}", "Journal of the American Chemical Society"):
        assert field in provenance.BIBTEX
    assert provenance.BIBTEX.count("{") == provenance.BIBTEX.count("}")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    pc = cff["preferred-citation"]
    assert cff["cff-version"] == "1.2.0" and cff["version"] == __version__
    assert pc["doi"] in provenance.BIBTEX and pc["volume"] == 146 and pc["start"] == 8269 and pc["year"] == 2024
    assert [a["family-names"] for a in pc["authors"]] == ["López", "Rurali", "Cazorla"]


# ----------------------------------------------------------------------------- port

def _listen():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_explicit_port_taken_is_refused_with_how_to_choose():
    with _listen() as s:
        port = s.getsockname()[1]
        with pytest.raises(AddressError, match=f"port {port} on 127.0.0.1 is taken.*IONDIFF_PORT={port + 1}"):
            serve_address({"IONDIFF_PORT": str(port)})
    assert serve_address({"IONDIFF_PORT": str(port)}) == ("127.0.0.1", port, "")
    with pytest.raises(AddressError, match="not a port number"):
        serve_address({"IONDIFF_PORT": "eighty"})


def test_default_port_taken_picks_the_next_free_one(monkeypatch):
    from dashboard import config

    with _listen() as s:
        base = s.getsockname()[1]
        monkeypatch.setattr(config, "DEFAULT_PORT", base)
        host, port, note = serve_address({})
        assert port > base and f"port {base} is taken; using {port}" in note


def test_python_app_py_says_how_to_choose_when_the_port_is_taken(tmp_path):
    with _listen() as s:
        port = s.getsockname()[1]
        env = {**os.environ, "IONDIFF_PORT": str(port), "IONDIFF_DATA": str(tmp_path / "data")}
        env.pop("REDIS_URL", None)
        run = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and f"port {port} on 127.0.0.1 is taken" in run.stderr and "IONDIFF_PORT=" in run.stderr


def test_readme_documents_every_environment_variable():
    used = set()
    for path in [*ROOT.glob("*.py"), *ROOT.glob("dashboard/**/*.py"), *ROOT.glob("iondiff_core/**/*.py"), ROOT / "Dockerfile",
                 ROOT / "docker-compose.yml"]:
        used |= set(re.findall(r"\b(IONDIFF_[A-Z_]+|REDIS_URL)\b", path.read_text()))
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    missing = sorted(v for v in used if f"`{v}`" not in section)
    assert used and not missing, f"not in the README's environment variables: {missing}"


def test_methods_paragraph_reports_the_concertedness_test_and_d_interval_when_the_document_has_them():
    doc = {"input": {"frames": 10, "timestep_fs": 2.0, "mobile_species": "Li"}, "parameters": {}, "hops": [], "groups": [],
           "concertedness": {"observed_fraction": 0.4, "null_ci95": [0.1, 0.2], "p_value": 0.005, "replicas": 200},
           "descriptors": {"D_tracer_cm2_s": 1.2e-5, "D_tracer_ci95_cm2_s": [1e-5, 1.5e-5]}}
    text = provenance.methods_paragraph(doc)
    assert "band of [0.10, 0.20] for chance" in text and "p = 0.005, 200 replicas" in text
    assert "1.2e-05 cm²/s (95 % interval 1e-05 to 1.5e-05 cm²/s)" in text
    bare = provenance.methods_paragraph({**doc, "concertedness": None, "descriptors": {"D_tracer_cm2_s": 1.2e-5}})
    assert "chance" not in bare and "(no interval available)" in bare


# ----------------------------------------------------------------------------- the page's server side

def test_record_of_a_library_entry_and_the_docs_route(tmp_path):
    from dashboard import analysis
    from dashboard.app_factory import create_app
    from dashboard.pages.library import _record

    app = create_app(tmp_path / "data", roots=[])
    run = tmp_path / "LiX_600K"
    run.mkdir()
    write_xdatcar(make_synthetic(n_frames=1200, n_mobile=10, chain_sizes=(1, 2), seed=2).trajectory, run / "XDATCAR.gz")
    (run / "INCAR").write_text("POTIM = 2\nNBLOCK = 5\nTEBEG = 600\n")
    eid = analysis.run_analysis(app.config_object, run, Parameters(seed=5))
    e = Library(app.config_object.library_db).get(eid)
    rec = _record(e, with_files=True)
    assert {f["name"] for f in rec["input"]["files"]} == {"XDATCAR.gz", "INCAR"}
    assert rec["input"]["sha256"] == e.sha256 and rec["seeds"]["seed"] == 5 and "timestep_fs" not in rec["parameters"]
    client = app.server.test_client()
    r = client.get("/docs/METHOD.md")
    assert r.status_code == 200 and b"## 5. Distribution of n" in r.data
    readme = (ROOT / "README.md").read_bytes()[:200]
    for bad in ("/docs/../README.md", "/docs/%2e%2e/README.md", "/docs/screenshots/library.png", "/docs/NOPE.md"):
        r = client.get(bad)  # 404, or the app's own page: never the file asked for
        assert r.status_code == 404 or r.mimetype == "text/html", bad
        assert readme not in r.data and not r.data.startswith(b"\x89PNG"), bad


def test_data_behind_each_view_as_csv():
    import csv
    import io

    rng = np.random.default_rng(1)
    entries = [_entry(i, T, D=1e-3 * np.exp(-0.3 / (KB_EV_PER_K * T)) * np.exp(rng.normal(0, 0.05)))
               for i, T in enumerate((500, 600, 700, 800, 900, 1000))] + [_entry(9, 600, material="NaY")]
    d = library_stats.process_data(entries)
    sp = list(csv.DictReader(io.StringIO(library_stats.data_csv(d, "spearman"))))
    m = len(d["spearman"]["names"])
    assert len(sp) == m * (m - 1) // 2 and {"rho", "p_value", "n_runs"} <= set(sp[0])
    pdf = list(csv.DictReader(io.StringIO(library_stats.data_csv(d, "pdf"))))
    assert pdf[20]["n"] == ">20" and float(pdf[1]["probability"]) == pytest.approx(d["pooled"]["families"]["all"]["p"][1])
    arr = library_stats.data_csv(d, "arrhenius")
    assert arr.startswith('"# NaY: 1 run, all at 600 K') and arr.count("\nLiX,") == 6
    assert float(arr.split("\nLiX,")[1].split(",")[5]) == pytest.approx(d["arrhenius"]["fits"]["LiX"]["Ea_eV"])
    few = library_stats.process_data(entries[:2])
    assert library_stats.data_csv(few, "spearman").startswith("# 2 runs selected")
    with pytest.raises(ValueError, match="unknown view"):
        library_stats.data_csv(d, "3d")


def test_no_runs_and_unknown_temperatures_give_reasons_not_errors():
    d = library_stats.process_data([])
    assert "0 runs selected" in d["spearman"]["reason"] and d["pooled"]["reason"] == "no runs selected" and d["groups"] == []
    for f in (library_stats.spearman_figure, library_stats.pooled_pdf_figure, library_stats.arrhenius_figure, library_stats.nu_figure):
        assert f(d).layout.annotations  # the reason, on the figure
    unknown = library_stats.process_data([_entry(0, None), _entry(1, None)])
    assert unknown["arrhenius"]["reasons"] == [
        "LiX: 2 runs, no temperature known: no Arrhenius fit (it needs at least 2 temperatures; edit a run's temperature "
        "or material in the table if it is wrong)"]
