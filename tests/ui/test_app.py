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
    # A VASP run folder as copied from a cluster: generic names, the INCAR's SYSTEM names it.
    vasp = root / "vasp"
    vasp.mkdir()
    write_xdatcar(syn.trajectory, vasp / "XDATCAR.gz")
    (vasp / "INCAR").write_text("SYSTEM = Li3X glass\nPOTIM = 2\nNBLOCK = 5\nTEBEG = 600\n")
    import ase
    import ase.io

    t = syn.trajectory
    ase.io.write(vasp / "POSCAR", ase.Atoms(t.species, scaled_positions=t.positions_frac[0], cell=t.cells[0], pbc=True), format="vasp")
    # Damaged and too short.
    bad = root / "bad"
    bad.mkdir()
    (bad / "XDATCAR.gz").write_bytes((up / "XDATCAR_LiX.gz").read_bytes()[:20_000])
    short = root / "short"
    short.mkdir()
    from dataclasses import replace

    write_xdatcar(replace(t, positions_frac=t.positions_frac[:12], cells=t.cells[:12]), short / "XDATCAR")
    (short / "INCAR").write_text("POTIM = 2\nNBLOCK = 5\nTEBEG = 600\n")
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


def type_into(dash_duo, selector, text):
    box = dash_duo.find_element(selector)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text)
    return box


def pick(dash_duo, text):
    if not dash_duo.find_element("#source-details").get_attribute("open"):
        dash_duo.find_element("#source-details summary").click()  # folded while a result is shown
    type_into(dash_duo, "#server-path", text)
    dash_duo.find_element("#server-use").click()


def upload(dash_duo, path):
    dash_duo.wait_for_element("#trajectory-file")
    dash_duo.find_element("#trajectory-file").send_keys(str(path))


def run_picked(dash_duo, path="LiX_600K"):
    pick(dash_duo, path)
    dash_duo.wait_for_text_to_equal("#species-value", "Li", timeout=10)
    dash_duo.find_element("#run-button").click()
    dash_duo.wait_for_contains_text("#view-summary", "hops", timeout=120)


def set_viewport(dash_duo, width, height):
    """The page's viewport (not the window, which includes the browser's own bars)."""
    dash_duo.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def record_callbacks(dash_duo):
    """From now on, remember the outputs of every callback request the page sends."""
    dash_duo.driver.execute_script("""
        window.__outputs = [];
        if (!window.__fetch) {
            window.__fetch = window.fetch;
            window.fetch = function (url, opts) {
                if (String(url).indexOf('_dash-update-component') >= 0 && opts && opts.body) {
                    try { window.__outputs.push(JSON.parse(opts.body).output); } catch (e) {}
                }
                return window.__fetch.apply(this, arguments);
            };
        }""")


def recorded(dash_duo):
    return dash_duo.driver.execute_script("return window.__outputs.join(' ');")


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
    until(dash_duo, lambda: plot_js(dash_duo, "graph-pdf", "g._fullData[0].x.length") == 20)
    shot(dash_duo, "analyse-pdf")

    # Clicking a group in the reordered heatmap highlights it in the 3D view and the timeline.
    open_tab(dash_duo, 3)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-heatmaps", "g.data.length") == 4, 20)
    dash_duo.driver.execute_script(
        "var g = document.querySelector('#graph-heatmaps .js-plotly-plot');"
        "g.emit('plotly_click', {points: [{curveNumber: 3, x: 9, y: 9}]});"  # the last block: the group of 4
    )
    dash_duo.wait_for_contains_text("#view-summary", "selected", timeout=20)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-heatmaps", "g.layout.shapes.some(s => s.line.color === '#d62728')"), 20)
    # The general warnings hold none that belong beside a view.
    assert "pdf of n" not in dash_duo.find_element("#warnings").text
    shot(dash_duo, "analyse-correlations")
    open_tab(dash_duo, 2)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-timeline", "g.data.length") == 3, 20)
    shot(dash_duo, "analyse-timeline")

    # A failed upload clears the previous file's results instead of leaving them on screen.
    dash_duo.find_element("#source-details summary").click()
    upload(dash_duo, up / "junk.xdatcar")
    dash_duo.wait_for_contains_text("#view-summary", "no result yet", timeout=20)
    assert dash_duo.find_element("#progress-text").text == ""

    # The library lists the analysis, named after the file rather than "XDATCAR".
    dash_duo.driver.get(dash_duo.server_url + "/library")
    dash_duo.wait_for_contains_text("#library-table", "XDATCAR_LiX.gz", timeout=20)


def test_controls_stay_in_view_show_values_reset_and_redraw_only_their_views(dash_duo, sims, tmp_path):
    root, _ = sims
    dash_duo.start_server(create_app(tmp_path / "data", roots=[root]))
    set_viewport(dash_duo, 1280, 800)
    # The quantile slider is disabled while "mean" is the reference level.
    assert dash_duo.find_element("#ref-quantile-input").get_attribute("disabled")
    run_picked(dash_duo)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-3d", "g.data.length") >= 4, 20)

    def in_view(selector):
        return dash_duo.driver.execute_script(
            "var r = document.querySelector(arguments[0]).getBoundingClientRect();"
            "return r.top >= 0 && r.bottom <= window.innerHeight && r.height > 0;", selector)

    # At 1280 x 800 every threshold and the figure are on screen together, also after scrolling the page.
    for sel in ("#n-max", "#n-max-input", "#sil-thr", "#reset-sliders"):
        until(dash_duo, lambda: in_view(sel), 5)
    assert dash_duo.driver.execute_script(
        "return document.querySelector('#graph-3d').getBoundingClientRect().top < window.innerHeight - 200;")
    dash_duo.driver.execute_script("window.scrollTo(0, 400)")
    assert in_view("#n-max") and in_view("#sil-thr")

    open_tab(dash_duo, 4)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-pdf", "g._fullData[0].x.length") == 20)
    # Values are shown beside the sliders and can be typed.
    assert dash_duo.find_element("#n-max-input").get_attribute("value") == "20"
    record_callbacks(dash_duo)
    type_into(dash_duo, "#n-max-input", "8").send_keys(Keys.ENTER)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-pdf", "g._fullData[0].x.length") == 8, 20)
    # n_max redraws the pdf and the summary, and neither the 3D paths, the matrix, MSD nor van Hove.
    sent = recorded(dash_duo)
    assert "graph-pdf.figure" in sent and "view-status.children" in sent
    for other in ("graph-3d.figure", "graph-heatmaps.figure", "graph-timeline.figure", "graph-msd.figure", "graph-vanhove.figure"):
        assert other not in sent, other
    # Moving the slider shows its value in the box.
    thumb = dash_duo.find_element("#n-max [role=slider]")
    thumb.send_keys(Keys.HOME)
    until(dash_duo, lambda: dash_duo.find_element("#n-max-input").get_attribute("value") == "5", 10)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-pdf", "g._fullData[0].x.length") == 5, 20)
    # r_vib changes the hops: the hop views redraw, MSD and van Hove never do.
    record_callbacks(dash_duo)
    type_into(dash_duo, "#r-vib-input", "0.6").send_keys(Keys.ENTER)
    until(dash_duo, lambda: "graph-3d.figure" in recorded(dash_duo), 20)
    time.sleep(1)
    assert "graph-msd.figure" not in recorded(dash_duo) and "graph-vanhove.figure" not in recorded(dash_duo)
    # The quantile becomes movable with "quantile"; Reset restores every default.
    dash_duo.find_element("#ref-mode input[value='quantile']").click()
    until(dash_duo, lambda: not dash_duo.find_element("#ref-quantile-input").get_attribute("disabled"), 10)
    dash_duo.find_element("#reset-sliders").click()
    until(dash_duo, lambda: dash_duo.find_element("#n-max-input").get_attribute("value") == "20", 10)
    assert dash_duo.find_element("#r-vib-input").get_attribute("value") == "0.5"
    until(dash_duo, lambda: dash_duo.find_element("#ref-quantile-input").get_attribute("disabled"), 10)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-pdf", "g._fullData[0].x.length") == 20)
    # On a 4K screen the figure takes the width and the controls stay beside it.
    set_viewport(dash_duo, 3840, 2160)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-pdf", "g._fullLayout.width") > 2500, 10)
    assert in_view("#n-max") and in_view("#reset-sliders")


def test_groups_are_categorical_and_selectable_from_every_view(dash_duo, sims, tmp_path):
    root, _ = sims
    dash_duo.start_server(create_app(tmp_path / "data", roots=[root]))
    run_picked(dash_duo)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-3d", "g.data.length") >= 4, 20)
    # Concerted groups in distinct categorical colours, isolated hops grey; no colour bar.
    colours = plot_js(dash_duo, "graph-3d", "g.data.find(t => t.customdata && t.mode === 'lines').line.color")
    assert len(set(colours)) >= 4 and "#9a9a9a" in colours
    assert not plot_js(dash_duo, "graph-3d", "g.data.some(t => t.line && t.line.colorbar)")
    # Select from the 3D view: the group is drawn black, the other paths dimmed.
    dash_duo.driver.execute_script(
        "var g = document.querySelector('#graph-3d .js-plotly-plot');"
        "var t = g.data.findIndex(t => t.customdata && t.mode === 'lines');"
        "var i = g.data[t].customdata.findIndex(v => v === g.data[t].customdata[g.data[t].customdata.length - 2]);"
        "g.emit('plotly_click', {points: [{curveNumber: t, pointNumber: i, customdata: g.data[t].customdata[i]}]});")
    dash_duo.wait_for_contains_text("#view-summary", "selected", timeout=20)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-3d", "g.data.some(t => (t.name || '').startsWith('selected group'))"), 20)
    assert set(plot_js(dash_duo, "graph-3d", "g.data.find(t => t.customdata && t.mode === 'lines').line.color")) == {"#dcdcdc"}
    # Select from the timeline (a hop's marker).
    dash_duo.find_element("#clear-group").click()
    until(dash_duo, lambda: "selected" not in dash_duo.find_element("#view-summary").text, 20)
    open_tab(dash_duo, 2)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-timeline", "g.data.length") == 2, 20)
    group = plot_js(dash_duo, "graph-timeline", "g.data[1].customdata[g.data[1].customdata.length - 1]")
    dash_duo.driver.execute_script(
        "var g = document.querySelector('#graph-timeline .js-plotly-plot');"
        "g.emit('plotly_click', {points: [{curveNumber: 1, x: g.data[1].x[g.data[1].x.length - 1],"
        " y: g.data[1].y[g.data[1].y.length - 1], customdata: g.data[1].customdata[g.data[1].customdata.length - 1]}]});")
    dash_duo.wait_for_contains_text("#view-summary", f"group {group} selected", timeout=20)
    # The reordered matrix outlines every concerted group and marks the selection in red.
    open_tab(dash_duo, 3)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-heatmaps", "g.layout.shapes.length") == 4, 20)  # 3 groups + selection
    assert plot_js(dash_duo, "graph-heatmaps", "g.layout.shapes[g.layout.shapes.length - 1].line.color") == "#d62728"
    # One pdf of n with the fit's caveat next to it; the status says "1 group" in the singular when so.
    open_tab(dash_duo, 4)
    # (the fit's caveat: the engine's "pdf of n: ..." note, or the page's own "fit ..." one)
    until(dash_duo, lambda: any(k in dash_duo.find_element("#notes-pdf").text for k in ("pdf of n:", "fit")), 20)
    assert "groups" in dash_duo.find_element("#view-summary").text and "1 groups" not in dash_duo.find_element("#view-summary").text


def test_percolation_action_and_help(dash_duo, sims, tmp_path):
    root, _ = sims
    dash_duo.start_server(create_app(tmp_path / "data", roots=[root]))
    # Every control and every view explains itself, with a link to the method.
    dash_duo.wait_for_element("#reset-sliders")
    labels = dash_duo.driver.execute_script(
        "return Array.from(document.querySelectorAll('.sidebar label.help-label')).map(l => [l.textContent, l.title]);")
    assert len(labels) >= 14 and all(len(title) > 20 for _, title in labels), [t for t, title in labels if len(title) <= 20]
    for n in range(1, 7):
        open_tab(dash_duo, n)
        until(dash_duo, lambda: dash_duo.find_element(".how-to-read summary").text == "How to read this", 5)
        link = dash_duo.find_element(".how-to-read a")
        assert link.get_attribute("href").endswith("/docs/METHOD.md") and "section" in link.get_attribute("textContent")
    open_tab(dash_duo, 1)
    run_picked(dash_duo)
    open_tab(dash_duo, 6)
    dash_duo.wait_for_contains_text("#descriptor-table", "D tracer", timeout=20)
    assert "dimensionless" in dash_duo.find_element("#descriptor-table").text
    # Hovering a descriptor explains it.
    from selenium.webdriver.common.action_chains import ActionChains

    cell = next(c for c in dash_duo.find_elements("#descriptor-table .ag-cell") if c.text == "mean k")
    ActionChains(dash_duo.driver).move_to_element(cell).perform()
    dash_duo.wait_for_contains_text(".ag-tooltip", "vibration centres", timeout=10)
    # The percolated-groups action: the spatial criterion and a stricter level in one click.
    before = dash_duo.find_element("#view-summary").text
    dash_duo.driver.execute_script("document.querySelector('#fix-percolation').click()")
    until(dash_duo, lambda: dash_duo.find_element("#pair-distance").get_attribute("value") == "4", 10)
    assert dash_duo.find_element("#ref-quantile-input").get_attribute("value") == "0.99"
    assert dash_duo.find_element("#ref-mode input[value='quantile']").is_selected()
    until(dash_duo, lambda: dash_duo.find_element("#view-summary").text != before, 20)


def test_exports_svg_png_at_print_resolution_and_csv(dash_duo, sims, tmp_path):
    root, _ = sims
    dash_duo.start_server(create_app(tmp_path / "data", roots=[root]))
    run_picked(dash_duo)
    open_tab(dash_duo, 4)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-pdf", "g.data.length") > 0, 20)
    dash_duo.driver.execute_script(
        "window.__images = []; window.Plotly.downloadImage = function (gd, o) { window.__images.push(o); };")
    dash_duo.find_element("#svg-pdf").click()
    dash_duo.find_element("#png-pdf").click()
    until(dash_duo, lambda: dash_duo.driver.execute_script("return window.__images.length") == 2, 10)
    svg, png = dash_duo.driver.execute_script("return window.__images")
    assert svg["format"] == "svg" and png["format"] == "png" and png["scale"] == pytest.approx(300 / 96)
    assert png["width"] > 300 and png["filename"] == "iondiff-pdf"
    dash_duo.find_element("#csv-pdf").click()
    target = Path(dash_duo.download_path) / "LiX_600K-pdf.csv"
    until(dash_duo, lambda: target.exists() and target.stat().st_size > 0, 20)
    lines = target.read_text().splitlines()
    assert lines[0].startswith("n,label,groups,p_observed") and len(lines) == 1 + 21  # n = 1..20 and "> 20"


def test_input_in_any_order_shown_before_run_and_named(dash_duo, sims, tmp_path):
    root, up = sims
    vasp = root / "vasp"
    dash_duo.start_server(create_app(tmp_path / "data", roots=[root]))
    # The trajectory alone: no timestep, and Run says so instead of analysing without time.
    upload(dash_duo, vasp / "XDATCAR.gz")
    dash_duo.wait_for_contains_text("#upload-status", "uploaded XDATCAR.gz", timeout=30)
    assert "XDATCAR.gz\u201d" not in dash_duo.find_element("#upload-status").text  # named from its title instead
    assert dash_duo.find_element("#timestep").get_attribute("value") == ""
    dash_duo.find_element("#run-button").click()
    dash_duo.wait_for_contains_text("#run-error", "the timestep is unknown", timeout=30)
    # The INCAR after the trajectory: its timestep and temperature appear, editable, and name the run.
    dash_duo.find_element("#incar-file").send_keys(str(vasp / "INCAR"))
    dash_duo.wait_for_contains_text("#upload-status", "Li3X glass", timeout=30)
    until(dash_duo, lambda: dash_duo.find_element("#timestep").get_attribute("value") == "10", 10)
    assert dash_duo.find_element("#temperature").get_attribute("value") == "600"
    type_into(dash_duo, "#temperature", "650")
    dash_duo.find_element("#run-button").click()
    dash_duo.wait_for_contains_text("#view-summary", "Li3X glass: 10 hops", timeout=120)
    from dashboard.storage import Library

    (entry,) = Library(Path(tmp_path / "data") / "library.sqlite").list()
    assert entry.name == "Li3X glass" and entry.temperature_K == 650
    # Trajectory, INCAR and POSCAR dropped at once.
    dash_duo.driver.get(dash_duo.server_url + "/")
    dash_duo.wait_for_element("#trajectory-file")
    dash_duo.find_element("#trajectory-file").send_keys("\n".join(str(vasp / f) for f in ("INCAR", "XDATCAR.gz", "POSCAR")))
    dash_duo.wait_for_contains_text("#upload-status", "POSCAR as reference lattice", timeout=30)
    assert "10 fs per frame" in dash_duo.find_element("#upload-status").text
    until(dash_duo, lambda: dash_duo.find_element("#timestep").get_attribute("value") == "10", 10)
    # A truncated .gz is a damaged file, uploaded or picked; a run too short is refused with the reason.
    upload(dash_duo, root / "bad" / "XDATCAR.gz")
    dash_duo.wait_for_contains_text("#upload-status", "cut short", timeout=30)
    dash_duo.wait_for_contains_text("#run-error", "gzip stream ends before its end-of-stream marker", timeout=10)
    pick(dash_duo, "bad")
    dash_duo.wait_for_contains_text("#source-label", "damaged", timeout=20)
    pick(dash_duo, "short")
    dash_duo.wait_for_contains_text("#source-label", "server file: short", timeout=20)
    until(dash_duo, lambda: dash_duo.find_element("#timestep").get_attribute("value") == "10", 10)
    dash_duo.find_element("#run-button").click()
    dash_duo.wait_for_contains_text("#run-error", "12 frame(s) is too short for the method", timeout=60)
    assert "no result yet" in dash_duo.find_element("#view-summary").text


def test_server_picker_and_refusals(dash_duo, sims, tmp_path):
    root, _ = sims
    dash_duo.start_server(create_app(tmp_path / "data", roots=[root]))
    # An absolute path is echoed by its last component only (no server path in any message).
    for bad, shown in (("../outside/secret", "../outside/secret"), ("/etc/passwd", "passwd"), ("escape/secret", "escape/secret")):
        pick(dash_duo, bad)
        dash_duo.wait_for_contains_text("#source-label", f"{shown}: not found inside the allowed folders", timeout=10)
        assert "/etc" not in dash_duo.find_element("#source-label").text
    # The picker lists the simulations relative to the allowed folder, never by absolute server path.
    dash_duo.find_element("#server-sim").click()
    body = lambda: dash_duo.driver.find_element("tag name", "body").text  # noqa: E731 - the menu is a popover
    until(dash_duo, lambda: "LiX_600K" in body() and "upload/XDATCAR_LiX.gz" in body(), 10)
    assert str(root) not in body()
    dash_duo.find_element("#server-sim").send_keys(Keys.ESCAPE)
    pick(dash_duo, "LiX_600K")
    dash_duo.wait_for_contains_text("#source-label", "server file: LiX_600K", timeout=10)
    assert str(root) not in dash_duo.find_element("#source-label").text
    dash_duo.wait_for_text_to_equal("#species-value", "Li", timeout=10)
    dash_duo.find_element("#run-button").click()
    dash_duo.wait_for_contains_text("#view-summary", "hops", timeout=120)
    open_tab(dash_duo, 5)
    until(dash_duo, lambda: plot_js(dash_duo, "graph-msd", "g.data.length") == 4)  # the timestep came from the INCAR
    # Choosing another file clears the previous results.
    pick(dash_duo, "upload/XDATCAR_LiX.gz")
    dash_duo.wait_for_contains_text("#view-summary", "no result yet", timeout=10)
    # An entry opened from the library shows its result and what it came from.
    from dashboard.storage import Library

    entry = Library(Path(tmp_path / "data") / "library.sqlite").list()[0]
    dash_duo.driver.get(f"{dash_duo.server_url}/?entry={entry.id}")
    dash_duo.wait_for_contains_text("#view-summary", "hops", timeout=30)
    until(dash_duo, lambda: "in the library" in dash_duo.find_element("#source-label").get_attribute("textContent"), 10)
    assert "choose a trajectory first" not in dash_duo.driver.find_element("tag name", "body").text


def test_cancel_shows_a_cancelled_state(dash_duo, tmp_path):
    root = tmp_path / "big"
    (root / "LiY_900K").mkdir(parents=True)
    syn = make_synthetic(n_frames=12000, n_mobile=60, chain_sizes=(1, 2, 3) * 4, seed=3)
    write_xdatcar(syn.trajectory, root / "LiY_900K" / "XDATCAR")
    (root / "LiY_900K" / "INCAR").write_text("POTIM = 2\nNBLOCK = 5\nTEBEG = 900\n")
    dash_duo.start_server(create_app(tmp_path / "data", roots=[root]))
    pick(dash_duo, "LiY_900K")
    dash_duo.wait_for_text_to_equal("#species-value", "Li", timeout=10)
    dash_duo.find_element("#run-button").click()
    dash_duo.wait_for_contains_text("#progress-text", "clustering", timeout=60)
    dash_duo.find_element("#cancel-button").click()
    dash_duo.wait_for_contains_text("#progress-text", "cancelled", timeout=10)
    time.sleep(2)  # no late progress from the killed job overwrites it
    assert "cancelled" in dash_duo.find_element("#progress-text").text
    assert dash_duo.find_element("#progress-bar").get_attribute("value") == "0"
    assert not dash_duo.find_element("#run-button").get_attribute("disabled")


def test_queue_of_server_runs_each_with_its_progress(dash_duo, tmp_path):
    root = tmp_path / "runs"
    for name, seed, potim in (("LiA_600K", 11, 2), ("LiB_700K", 12, 1)):
        (root / name).mkdir(parents=True)
        # Large enough (a few seconds each) for the page to see each run in progress.
        syn = make_synthetic(n_frames=20000, n_mobile=48, chain_sizes=(1, 2, 3) * 4, seed=seed)
        write_xdatcar(syn.trajectory, root / name / "XDATCAR")
        (root / name / "INCAR").write_text(f"POTIM = {potim}\nNBLOCK = 5\nTEBEG = {name[-4:-1]}\n")
    (root / "broken").mkdir()
    (root / "broken" / "XDATCAR").write_text("not a trajectory\n")
    dash_duo.start_server(create_app(tmp_path / "data", roots=[root]))
    dash_duo.wait_for_contains_text("#queue-rows", "empty", timeout=10)
    # Several runs picked at once in the multi-select.
    for name in ("LiA_600K", "LiB_700K", "broken"):
        dash_duo.find_element("#queue-sims").click()
        option = next(o for o in dash_duo.driver.find_elements("css selector", "[role='option']") if name in o.text)
        option.click()
        dash_duo.find_element("#queue-sims").send_keys(Keys.ESCAPE)
    dash_duo.find_element("#queue-add").click()
    until(dash_duo, lambda: [e.text for e in dash_duo.find_elements("#queue-rows .queue-state")] == ["queued"] * 3, 10)
    # Every state the rows go through, as the page shows them: one snapshot per change.
    dash_duo.driver.execute_script("""
        window.__queue = [];
        new MutationObserver(function () {
            window.__queue.push(Array.from(document.querySelectorAll('#queue-rows .queue-row')).map(function (row) {
                return [row.querySelector('.queue-state').textContent, row.querySelector('progress').value,
                        row.querySelector('.muted').textContent];
            }));
        }).observe(document.querySelector('#queue-rows'), {subtree: true, childList: true, attributes: true, characterData: true});""")
    dash_duo.find_element("#queue-run").click()
    until(dash_duo, lambda: [e.text for e in dash_duo.find_elements("#queue-rows .queue-state")] == ["done", "done", "failed"], 180)
    seen = dash_duo.driver.execute_script("return window.__queue")
    states = [tuple(r[0] for r in snap) for snap in seen]
    # One after another, each row with its own progress: a stage message and a fraction strictly between 0 and 1.
    first = [snap[0] for snap in seen if snap[0][0] == "running" and snap[1][0] == "queued" and snap[2][0] == "queued"]
    second = [snap[1] for snap in seen if snap[0][0] == "done" and snap[1][0] == "running" and snap[2][0] == "queued"]
    assert any(0 < r[1] < 1 and r[2] not in ("", "starting") for r in first), states
    assert any(0 < r[1] < 1 and r[2] not in ("", "starting") for r in second), states
    assert "broken" in dash_duo.find_element("#queue-row-2").text
    assert dash_duo.find_element("#queue-msg-2").text  # the reason it failed
    from dashboard.storage import Library

    names = sorted(e.name for e in Library(Path(tmp_path / "data") / "library.sqlite").list())
    assert names == ["LiA_600K", "LiB_700K"]
    # The queue survives a reload, and each done row opens its own result.
    dash_duo.driver.refresh()
    until(dash_duo, lambda: [e.text for e in dash_duo.find_elements("#queue-rows .queue-state")] == ["done", "done", "failed"], 20)
    dash_duo.find_element("#queue-open-1").click()
    dash_duo.wait_for_contains_text("#view-summary", "LiB_700K", timeout=30)
    until(dash_duo, lambda: "in the library" in dash_duo.find_element("#source-label").get_attribute("textContent"), 10)
    assert dash_duo.find_element("#timestep").get_attribute("value") == "5"


def test_damaged_file_option_analyses_complete_frames_flagged(dash_duo, tmp_path):
    root = tmp_path / "runs"
    (root / "cut").mkdir(parents=True)
    syn = make_synthetic(n_frames=1500, n_mobile=12, chain_sizes=(1, 2, 3, 4), seed=7)
    write_xdatcar(syn.trajectory, tmp_path / "whole.gz")
    whole = (tmp_path / "whole.gz").read_bytes()
    (root / "cut" / "XDATCAR.gz").write_bytes(whole[: int(len(whole) * 0.6)])  # an incomplete copy
    (root / "cut" / "INCAR").write_text("POTIM = 2\nNBLOCK = 5\nTEBEG = 600\n")
    dash_duo.start_server(create_app(tmp_path / "data", roots=[root]))
    # Refused by default ...
    pick(dash_duo, "cut")
    dash_duo.wait_for_contains_text("#source-label", "damaged", timeout=20)
    dash_duo.wait_for_contains_text("#run-error", "cut short", timeout=10)
    # ... and with the option, its complete frames are analysed and the entry is flagged.
    dash_duo.find_element("#allow-truncated input").click()
    pick(dash_duo, "cut")
    dash_duo.wait_for_contains_text("#source-label", "only its complete frames will be analysed", timeout=20)
    dash_duo.wait_for_text_to_equal("#species-value", "Li", timeout=10)
    dash_duo.find_element("#run-button").click()
    dash_duo.wait_for_contains_text("#view-summary", "hops", timeout=120)
    dash_duo.wait_for_contains_text("#warnings", "DAMAGED FILE", timeout=10)
    from dashboard.storage import Library

    (entry,) = Library(Path(tmp_path / "data") / "library.sqlite").list()
    assert entry.flags.startswith("partial: ") and "898 complete frames" in entry.flags
    dash_duo.driver.get(dash_duo.server_url + "/library")
    until(dash_duo, lambda: any(c.text.startswith("partial:") for c in dash_duo.find_elements("#library-table .ag-cell")), 20)


def test_queue_cancel_keeps_finished_runs_and_cancels_the_rest(dash_duo, tmp_path):
    root = tmp_path / "runs"
    for name, n_frames, seed in (("LiS_600K", 1500, 5), ("LiT_900K", 12000, 3), ("LiU_900K", 1500, 6)):
        (root / name).mkdir(parents=True)
        syn = make_synthetic(n_frames=n_frames, n_mobile=12 if n_frames < 5000 else 60, chain_sizes=(1, 2, 3) * 4, seed=seed)
        write_xdatcar(syn.trajectory, root / name / "XDATCAR")
        (root / name / "INCAR").write_text("POTIM = 2\nNBLOCK = 5\nTEBEG = 900\n")
    dash_duo.start_server(create_app(tmp_path / "data", roots=[root]))
    dash_duo.wait_for_element("#queue-sims", timeout=10)  # the page is drawn (it raced on a loaded machine)
    for name in ("LiS_600K", "LiT_900K", "LiU_900K"):
        dash_duo.find_element("#queue-sims").click()
        next(o for o in dash_duo.driver.find_elements("css selector", "[role='option']") if name in o.text).click()
        dash_duo.find_element("#queue-sims").send_keys(Keys.ESCAPE)
    dash_duo.find_element("#queue-add").click()
    dash_duo.find_element("#queue-run").click()
    states = lambda: [e.text for e in dash_duo.find_elements("#queue-rows .queue-state")]  # noqa: E731
    until(dash_duo, lambda: states() == ["done", "running", "queued"] and "clustering" in dash_duo.find_element("#queue-msg-1").text, 60)
    dash_duo.find_element("#queue-cancel").click()
    until(dash_duo, lambda: states() == ["done", "cancelled", "cancelled"], 10)
    time.sleep(2)  # no late progress from the killed job overwrites it
    assert states() == ["done", "cancelled", "cancelled"]
    assert not dash_duo.find_element("#queue-run").get_attribute("disabled")
    # Clear finished empties the list; the finished run stays in the library.
    dash_duo.find_element("#queue-clear").click()
    dash_duo.wait_for_contains_text("#queue-rows", "empty", timeout=10)
