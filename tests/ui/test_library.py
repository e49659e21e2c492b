"""The library page in headless Chromium: AG Grid table with edits saved in SQLite, flagged
runs, runs grouped by material and temperature, guarded cross-run views with their
reasons, help in place, and each run's methods paragraph, BibTeX and record."""

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from dashboard import analysis
from dashboard.app_factory import create_app
from dashboard.storage import Library
from iondiff_core.io import write_xdatcar
from iondiff_core.parameters import Parameters
from iondiff_core.synthetic import make_synthetic

SHOTS = os.environ.get("IONDIFF_SCREENSHOTS")

TEMPERATURES = (500, 600, 700, 800, 900)


@pytest.fixture(scope="module")
def library_data(tmp_path_factory):
    """Five LiX runs at five temperatures, two LiZ runs at 600 K, and a flagged copy of one."""
    root = tmp_path_factory.mktemp("lib")
    app = create_app(root / "data", roots=[])
    cfg = app.config_object
    runs = [(f"LiX_{T}K", T, k) for k, T in enumerate(TEMPERATURES)] + [("LiZ_600K", 600, 7), ("LiZ_600K_run2", 600, 8)]
    for name, T, k in runs:
        syn = make_synthetic(n_frames=1500, n_mobile=10, chain_sizes=(1, 2, 3)[: 1 + k % 3] + (1,) * (k % 4), seed=k,
                             vib_A=0.08 + 0.01 * (k % 5))
        run = root / name
        run.mkdir()
        write_xdatcar(syn.trajectory, run / "XDATCAR.gz")
        (run / "INCAR").write_text(f"POTIM = 2\nNBLOCK = 5\nTEBEG = {T}\n")
        analysis.run_analysis(cfg, run, Parameters())
    lib = Library(cfg.library_db)
    src = next(e for e in lib.list() if e.name == "LiX_500K")
    cut = root / "cut.json"
    shutil.copy(src.result, cut)
    lib.add(name="LiX_500K_damaged", material="LiX", family=src.family, species="Li", temperature_K=500.0, sha256="cut",
            params_key=src.params_key, params=src.params, trajectory=src.trajectory, result=str(cut), descriptors=src.descriptors,
            flags="partial: the 3 complete frames of a damaged XDATCAR.gz")
    return root / "data"


def plot_js(dash_duo, graph_id, expr):
    return dash_duo.driver.execute_script(f"var g = document.querySelector('#{graph_id} .js-plotly-plot'); return g && {expr};")


def until(dash_duo, condition, timeout=20):
    """Wait until ``condition()`` is truthy (exceptions count as not yet)."""
    WebDriverWait(dash_duo.driver, timeout, ignored_exceptions=(Exception,)).until(lambda _: condition())


def shot(dash_duo, name):
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        dash_duo.driver.set_window_size(1500, 2900)  # the whole page: table, groups, citation, the four views
        time.sleep(1.5)
        dash_duo.driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))
        dash_duo.driver.set_window_size(1500, 1100)


def start(dash_duo, app):
    """Serve on a free port: other dashboards on this machine may hold dash[testing]'s default 8050."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dash_duo.start_server(app, port=port)
    dash_duo.driver.get(dash_duo.server_url + "/library")
    dash_duo.wait_for_contains_text("#library-title", "(8)", timeout=20)


def cell(dash_duo, row_id, col):
    return dash_duo.find_element(f"#library-table .ag-row[row-id='{row_id}'] .ag-cell[col-id='{col}']")


def edit(dash_duo, row_id, col, text):
    c = cell(dash_duo, row_id, col)
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", c)
    ActionChains(dash_duo.driver).double_click(c).perform()
    until(dash_duo, lambda: c.find_element("css selector", "input"), 10)
    box = c.find_element("css selector", "input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def tick(dash_duo, row_id):
    box = dash_duo.find_element(f"#library-table .ag-row[row-id='{row_id}'] .ag-selection-checkbox input")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.click()


def notes(dash_duo, graph_id):
    return dash_duo.find_element(f"#{graph_id}-note").text


def test_library_grid_edits_flags_groups_and_guarded_views(dash_duo, library_data):
    app = create_app(library_data, roots=[])
    lib = Library(app.config_object.library_db)
    ids = {e.name: e.id for e in lib.list()}
    start(dash_duo, app)

    # Spearman: 7 unflagged runs (the flagged one is left out), rho with p and N in every cell, left-out columns listed.
    until(dash_duo, lambda: plot_js(dash_duo, "lib-spearman", "g.data[0].type") == "heatmap", 30)
    cells = plot_js(dash_duo, "lib-spearman", "g.data[0].text.flat().join('|')")
    assert "p=" in cells and "N=7" in cells
    sp_note = notes(dash_duo, "lib-spearman")
    assert "N = 7 runs" in sp_note and "temperature_K left out" in sp_note
    assert "flagged run(s) left out (tick them to include): LiX_500K_damaged" in sp_note
    # Arrhenius: LiX fitted with Ea ± its 95 % interval; LiZ (both runs at 600 K) not drawn, with the reason.
    until(dash_duo, lambda: plot_js(dash_duo, "lib-arrhenius", "g.data.length") == 2, 20)
    label = plot_js(dash_duo, "lib-arrhenius", "g.data[1].name")
    assert label.startswith("LiX: Ea = ") and " ± " in label and "(95 %)" in label
    assert "LiZ: 2 runs, all at 600 K: no Arrhenius fit" in notes(dash_duo, "lib-arrhenius")
    # Runs grouped by material and temperature; the flagged row carries its flag.
    dash_duo.wait_for_contains_text("#library-groups", "LiZ_600K, LiZ_600K_run2", timeout=10)
    assert "partial" in cell(dash_duo, ids["LiX_500K_damaged"], "flags").text
    # Help in place: a tooltip on every column title, "how to read this" with a link to METHOD.md that the server serves.
    header = dash_duo.find_element("#library-table .ag-header-cell[col-id='material']")
    ActionChains(dash_duo.driver).move_to_element(header).perform()
    until(dash_duo, lambda: "Arrhenius fit" in dash_duo.find_element(".ag-tooltip").text, 10)
    glossary = dash_duo.find_element("#lib-spearman-help").get_attribute("textContent")
    assert "nu_THz: hopping frequency" in glossary and "(THz)" in glossary
    assert "hopping frequency" in plot_js(dash_duo, "lib-spearman", "g.data[0].customdata.flat().join('|')")
    link = dash_duo.find_element("#lib-arrhenius-help a")
    assert link.get_attribute("href").endswith("/docs/METHOD.md")
    with urllib.request.urlopen(dash_duo.server_url + "/docs/METHOD.md") as r:
        assert "## 5. Distribution of n" in r.read().decode()
    shot(dash_duo, "library")

    # Edits are saved in SQLite and survive a reload; a bad temperature is refused with the reason.
    edit(dash_duo, ids["LiZ_600K_run2"], "material", "LiZ-hot")
    dash_duo.wait_for_contains_text("#library-message", "saved material", timeout=10)
    edit(dash_duo, ids["LiZ_600K_run2"], "temperature_K", "-5")
    dash_duo.wait_for_contains_text("#library-message", "not saved: temperature -5 K is outside", timeout=10)
    edit(dash_duo, ids["LiZ_600K_run2"], "tags", "sulfide, hot")
    dash_duo.wait_for_contains_text("#library-message", "saved tags", timeout=10)
    e = lib.get(ids["LiZ_600K_run2"])
    assert (e.material, e.temperature_K, e.tags) == ("LiZ-hot", 600.0, "sulfide,hot")
    # The edited material regroups the runs at once.
    until(dash_duo, lambda: "LiZ-hot: 1 run, all at 600 K" in notes(dash_duo, "lib-arrhenius"), 20)
    dash_duo.wait_for_contains_text("#library-groups", "LiZ-hot", timeout=10)
    dash_duo.driver.refresh()
    until(dash_duo, lambda: cell(dash_duo, ids["LiZ_600K_run2"], "material").text == "LiZ-hot", 20)
    assert cell(dash_duo, ids["LiZ_600K_run2"], "temperature_K").text == "600"


def test_library_selection_reasons_methods_bibtex_and_delete(dash_duo, library_data, tmp_path):
    app = create_app(library_data, roots=[])
    lib = Library(app.config_object.library_db)
    ids = {e.name: e.id for e in lib.list()}
    start(dash_duo, app)
    # One run ticked: too few runs for the Spearman matrix, said on the figure; its methods paragraph and BibTeX.
    tick(dash_duo, ids["LiX_700K"])
    until(dash_duo, lambda: "at least 5" in plot_js(dash_duo, "lib-spearman", "g.layout.annotations[0].text"), 20)
    until(dash_duo, lambda: "needs at least 2 temperatures" in notes(dash_duo, "lib-arrhenius"), 20)
    dash_duo.wait_for_contains_text("#library-methods", "López, Rurali and Cazorla", timeout=20)
    methods = dash_duo.find_element("#library-methods").text
    doc = json.loads(open(lib.get(ids["LiX_700K"]).result).read())
    assert "1500 frames" in methods and "10 fs apart" in methods and f"{len(doc['hops'])} hops" in methods
    assert "SHA-256 INCAR " in methods and " XDATCAR.gz " in methods  # each input file's hash, as sha256sum prints it
    assert "@article{lopez2024concerted" in dash_duo.find_element("#library-bibtex").text
    shot(dash_duo, "library-selected")
    # The reproducibility record downloads as JSON: every input file's SHA-256, every parameter, versions, seeds.
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    dash_duo.driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    dash_duo.find_element("#library-record-btn").click()
    until(dash_duo, lambda: list(downloads.glob("*-reproducibility.json")), 20)
    rec = json.loads(next(downloads.glob("*-reproducibility.json")).read_text())
    assert {f["name"] for f in rec["input"]["files"]} == {"XDATCAR.gz", "INCAR"} and len(rec["input"]["files"][0]["sha256"]) == 64
    assert rec["parameters"]["r_vib_A"] == 0.5 and rec["seeds"]["seed"] == 0 and rec["software"]["numpy"]
    # The data behind a view as CSV, for the selected runs: here the reason there is no matrix.
    dash_duo.find_element("#lib-spearman-csv-btn").click()
    until(dash_duo, lambda: (downloads / "library-spearman.csv").exists(), 20)
    assert (downloads / "library-spearman.csv").read_text().startswith("# 1 run selected: the Spearman matrix needs at least 5")
    # Ticking the flagged run brings it into the views, with a note.
    tick(dash_duo, ids["LiX_500K_damaged"])
    until(dash_duo, lambda: "includes flagged run(s): LiX_500K_damaged" in notes(dash_duo, "lib-pdf"), 20)
    assert not dash_duo.find_element("#library-record-btn").is_enabled()  # a record is per run
    gone = [lib.get(ids["LiX_700K"]), lib.get(ids["LiX_500K_damaged"])]
    dash_duo.find_element("#library-delete").click()
    dash_duo.wait_for_contains_text("#library-title", "(6)", timeout=20)
    assert lib.get(ids["LiX_700K"]) is None and lib.get(ids["LiX_500K_damaged"]) is None
    # Their result files went with them, and the stage files only LiX_700K used; the picked runs stay untouched.
    assert not any(Path(e.result).exists() for e in gone) and "MB of their files" in dash_duo.find_element("#library-message").text
    assert gone[0].stage_files and not any((app.config_object.stages / f).exists() for f in gone[0].stage_files)
    assert Path(gone[0].trajectory, "XDATCAR.gz").exists() and Path(gone[1].trajectory, "XDATCAR.gz").exists()
