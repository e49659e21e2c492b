"""End-to-end: the dashboard in a real headless Chromium (dash[testing])."""

import os
import time
from pathlib import Path

import pytest
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from dashboard.app_factory import create_app
from iondiff_core.io import write_xdatcar
from iondiff_core.synthetic import make_synthetic

SHOTS = os.environ.get("IONDIFF_SCREENSHOTS")


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    root = tmp_path_factory.mktemp("sims")
    syn = make_synthetic(n_frames=1500, n_mobile=12, chain_sizes=(1, 2, 3, 4), seed=7)
    run = root / "LiX_600K"
    run.mkdir()
    write_xdatcar(syn.trajectory, run / "XDATCAR.gz")
    (run / "INCAR").write_text("POTIM = 2\nNBLOCK = 5\nTEBEG = 600\n")
    up = root / "upload"
    up.mkdir()
    write_xdatcar(syn.trajectory, up / "XDATCAR_LiX.gz")
    (up / "junk.xdatcar").write_bytes(os.urandom(4000))
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret").write_text("no")
    (root / "escape").symlink_to(outside)
    return root, up


def shot(dash_duo, name):
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        time.sleep(1.5)  # let WebGL and the transitions settle
        dash_duo.driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


def plot_js(dash_duo, graph_id, expr):
    return dash_duo.driver.execute_script(f"var g = document.querySelector('#{graph_id} .js-plotly-plot'); return g && {expr};")


def until(dash_duo, condition, timeout=20):
    """Wait until ``condition()`` is truthy (exceptions count as not yet)."""
    WebDriverWait(dash_duo.driver, timeout, ignored_exceptions=(Exception,)).until(lambda _: condition())


def open_tab(dash_duo, n):
    dash_duo.find_element(f"#tabs .tab:nth-child({n})").click()


def pick(dash_duo, text):
    box = dash_duo.find_element("#server-path")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)
    dash_duo.find_element("#server-use").click()


def upload(dash_duo, path):
    dash_duo.wait_for_element("#trajectory-file")
    dash_duo.find_element("#trajectory-file").send_keys(str(path))


def test_upload_run_explore_and_library(dash_duo, sims, tmp_path):
    root, up = sims
    dash_duo.start_server(create_app(tmp_path / "data", roots=[root]))
    # A broken file first: the page says what is wrong and the app keeps working.
    upload(dash_duo, up / "junk.xdatcar")
    dash_duo.wait_for_contains_text("#upload-status", "junk.xdatcar", timeout=20)
    assert "uploaded" not in dash_duo.find_element("#upload-status").text

    upload(dash_duo, up / "XDATCAR_LiX.gz")
    dash_duo.wait_for_contains_text("#upload-status", "uploaded XDATCAR_LiX.gz", timeout=30)
    dash_duo.wait_for_text_to_equal("#species-value", "Li", timeout=10)
    dash_duo.find_element("#timestep").send_keys("10")
    dash_duo.find_element("#temperature").send_keys("600")
    dash_duo.find_element("#run-button").click()
    dash_duo.wait_for_contains_text("#view-summary", "hops", timeout=120)
    summary = dash_duo.find_element("#view-summary").text
    assert "10 hops" in summary and "4 groups" in summary
    until(dash_duo, lambda: plot_js(dash_duo, "graph-3d", "g.data.length") >= 4, 20)
    shot(dash_duo, "analyse-3d")
    for tab, graph in ((2, "graph-timeline"), (3, "graph-heatmaps"), (4, "graph-pdf"), (5, "graph-msd"), (5, "graph-vanhove")):
        open_tab(dash_duo, tab)
        until(dash_duo, lambda: plot_js(dash_duo, graph, "g.data.length > 0"), 20)
    shot(dash_duo, "analyse-transport")
    open_tab(dash_duo, 4)

    # A slider changes the figures without a new analysis.
    until(dash_duo, lambda: plot_js(dash_duo, "graph-pdf", "g._fullData[0].x.length") == 20)
    thumb = dash_duo.find_element("#n-max [role=slider]")
    dash_duo.driver.execute_script("arguments[0].scrollIntoView()", thumb)
    thumb.send_keys(Keys.HOME)  # n_max to its minimum, 5
    until(dash_duo, lambda: plot_js(dash_duo, "graph-pdf", "g._fullData[0].x.length") == 5, 20)
    before = dash_duo.find_element("#view-summary").text
    dash_duo.find_element("#ref-mode input[value='quantile']").click()
    until(dash_duo, lambda: dash_duo.find_element("#view-summary").text != before, 20)

    # Clicking a group in the reordered heatmap highlights it in the 3D view and the timeline.
    open_tab(dash_duo, 3)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-heatmaps", "g.data.length") == 4, 20)
    shot(dash_duo, "analyse-correlations")
    dash_duo.driver.execute_script(
        "var g = document.querySelector('#graph-heatmaps .js-plotly-plot');"
        "g.emit('plotly_click', {points: [{curveNumber: 3, x: 0, y: 0}]});"
    )
    dash_duo.wait_for_contains_text("#view-summary", "selected", timeout=20)
    open_tab(dash_duo, 2)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-timeline", "g.data.length") == 2, 20)
    shot(dash_duo, "analyse-timeline")
    open_tab(dash_duo, 4)
    shot(dash_duo, "analyse-pdf")

    # The library lists the analysis; the same file again opens at once from the cache.
    dash_duo.driver.get(dash_duo.server_url + "/library")
    dash_duo.wait_for_contains_text("#library-table", "XDATCAR_LiX.gz", timeout=20)
    shot(dash_duo, "library")


def test_server_picker_and_refusals(dash_duo, sims, tmp_path):
    root, _ = sims
    dash_duo.start_server(create_app(tmp_path / "data", roots=[root]))
    for bad in ("../outside/secret", "/etc/passwd", "escape/secret"):
        pick(dash_duo, bad)
        dash_duo.wait_for_contains_text("#source-label", f"{bad}: not found inside the allowed folders", timeout=10)
    pick(dash_duo, "LiX_600K")
    dash_duo.wait_for_contains_text("#source-label", "server file", timeout=10)
    dash_duo.wait_for_text_to_equal("#species-value", "Li", timeout=10)
    dash_duo.find_element("#run-button").click()
    dash_duo.wait_for_contains_text("#view-summary", "hops", timeout=120)
    open_tab(dash_duo, 5)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-msd", "g.data.length") == 4)  # the timestep came from the INCAR
