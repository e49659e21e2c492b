"""Time to pixels of a slider move in a real browser (headless Chromium), on a 110-ion,
20,000-frame trajectory.

Generates the planted-hop trajectory of ``bench_sliders.py``, analyses it once as the Run
button does, serves the dashboard (Flask's threaded server, as ``python app.py``) and
opens the entry in headless Chromium. Each move types a value into a threshold's number
box and presses Enter; the time runs from that key press (``performance.now()`` in the
page) to the last ``plotly_afterplot`` of the figure on screen once no Dash callback is
pending any more: the server's cheap stages, every triggered view, the transfer, Dash's
rendering and Plotly's drawing. Each move is measured on the tab it concerns.

    python benchmarks/bench_browser.py [--ions 110] [--frames 20000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from bench_sliders import write_planted_run  # noqa: E402
from dashboard import analysis  # noqa: E402
from dashboard.app_factory import create_app  # noqa: E402
from iondiff_core.parameters import Parameters  # noqa: E402

#: (label, number box, values of the passes, tab, graph on screen)
MOVES = [
    ("n_max", "n-max-input", ("8", "12"), "pdf", "graph-pdf"),
    ("r_vib (3D view)", "r-vib-input", ("0.6", "0.65"), "paths", "graph-3d"),
    ("r_vib (timeline)", "r-vib-input", ("0.55", "0.5"), "timeline", "graph-timeline"),
    ("smoothing width (matrix)", "width-factor-input", ("2", "1.5"), "heatmaps", "graph-heatmaps"),
    ("silhouette threshold (3D)", "sil-thr-input", ("0.6", "0.65"), "paths", "graph-3d"),
    ("pair distance Å (pdf)", "pair-distance", ("4", "3"), "pdf", "graph-pdf"),
]

HOOK = """
window.__t0 = null; window.__plots = 0; window.__last = null;
document.addEventListener('keydown', function (e) { if (e.key === 'Enter') { window.__t0 = performance.now(); window.__plots = 0; } }, true);
window.__hook = function (id) {
    var g = document.querySelector('#' + id + ' .js-plotly-plot');
    if (g && !g.__hooked) { g.__hooked = true; g.on('plotly_afterplot', function () { window.__plots += 1; window.__last = performance.now(); }); }
    return !!g;
};
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser() -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,1000"):
        opts.add_argument(flag)
    if shutil.which("chromium"):
        opts.binary_location = shutil.which("chromium")
    return webdriver.Chrome(options=opts)


def wait(cond, timeout=120.0, step=0.02):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if cond():
                return True
        except Exception:  # noqa: BLE001 - not there yet
            pass
        time.sleep(step)
    raise TimeoutError("the page did not settle")


def settled(driver) -> bool:
    return driver.execute_script("return document.querySelectorAll('[data-dash-is-loading=\"true\"]').length === 0")


def open_tab(driver, value, graph):
    labels = {"paths": 1, "timeline": 2, "heatmaps": 3, "pdf": 4}
    driver.find_element(By.CSS_SELECTOR, f"#tabs .tab:nth-child({labels[value]})").click()
    wait(lambda: driver.execute_script(f"return window.__hook('{graph}')"))
    wait(lambda: driver.execute_script(f"var g = document.querySelector('#{graph} .js-plotly-plot'); return g.data.length > 0"))
    wait(lambda: settled(driver))


def move(driver, box_id, value, graph) -> float:
    """Type ``value`` + Enter; seconds from the key press to the figure drawn and nothing pending."""
    box = driver.find_element(By.ID, box_id)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(value)
    box.send_keys(Keys.ENTER)
    # Drawn at least once after the key press, then no callback pending and no new drawing for 0.3 s.
    wait(lambda: driver.execute_script("return window.__plots") > 0)
    wait(lambda: settled(driver))
    last, end = None, time.time() + 30
    while time.time() < end:
        time.sleep(0.3)
        now = driver.execute_script("return window.__last")
        if now == last and settled(driver):
            break
        last = now
    else:
        raise TimeoutError("the figure kept redrawing for 30 s")
    return driver.execute_script("return (window.__last - window.__t0) / 1000")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ions", type=int, default=110)
    ap.add_argument("--frames", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=2, help="passes over the moves (two values per move)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        _, sim = write_planted_run(tmp, args.ions, args.frames)
        app = create_app(tmp / "data", roots=[])
        entry_id = analysis.run_analysis(app.config_object, sim, Parameters())
        print(f"{args.ions} mobile ions x {args.frames} frames: generated and analysed in {time.perf_counter() - t0:.1f} s", flush=True)

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        port = free_port()
        threading.Thread(target=lambda: app.run(host="127.0.0.1", port=port, debug=False, threaded=True), daemon=True).start()
        driver = browser()
        try:
            t0 = time.perf_counter()
            driver.get(f"http://127.0.0.1:{port}/?entry={entry_id}")
            driver.execute_script(HOOK)
            wait(lambda: "hops" in driver.find_element(By.ID, "view-summary").text)
            open_tab(driver, "paths", "graph-3d")
            print(f"open the entry (layout, every view, 3D drawn): {time.perf_counter() - t0:.2f} s\n")
            print(f"{'slider move (typed + Enter)':34s} {'time to pixels s':>17s}")
            for rep in range(args.repeat):
                for label, box, values, tab, graph in MOVES:
                    open_tab(driver, tab, graph)
                    v = values[rep % len(values)]
                    dt = move(driver, box, v, graph)
                    print(f"{label + ' ' + v:34s} {dt:17.2f}", flush=True)
        finally:
            driver.quit()


if __name__ == "__main__":
    main()
