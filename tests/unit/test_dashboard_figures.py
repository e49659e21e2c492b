"""process_data / create_figure of every view, on a planted trajectory."""

import numpy as np
import pytest

from types import SimpleNamespace

from dashboard import views
from dashboard.figures import (
    DIMMED, PALETTE, SINGLE, correlation_heatmaps, descriptor_table, group_colours, hop_paths_3d, msd,
    n_distribution, plural, timeline, van_hove,
)
from iondiff_core import pipeline
from iondiff_core.parameters import Parameters
from iondiff_core.synthetic import make_synthetic


@pytest.fixture(scope="module")
def result():
    syn = make_synthetic(n_frames=3000, n_mobile=16, chain_sizes=(1, 2, 3, 4), seed=1)
    return pipeline.analyze(syn.trajectory, Parameters())


def test_hop_paths_decimated_and_highlighted(result):
    d = hop_paths_3d.process_data(result, "group", highlight_group=1, max_points=60)
    assert d["paths"].dtype == np.float32 and d["decimation"] > 1
    assert np.sum(np.isfinite(d["paths"][:, 0])) + np.sum(np.isfinite(d["highlight"][:, 0])) <= 60 + 2 * len(result.hops)
    group1 = int(np.sum(result.correlations.group_of == 1))
    assert np.sum(np.isnan(d["highlight"][:, 0])) == group1  # one NaN break per highlighted hop
    assert len(d["cell"]) == 36
    fig = hop_paths_3d.create_figure(d)
    assert fig.layout.scene.xaxis.title.text == "x (Å)" and any(t.name.startswith("selected group 1 (n = ") for t in fig.data)


def test_timeline_pooled_to_max_bins(result):
    d = timeline.process_data(result, max_bins=100)
    assert d["z"].shape == (16, 100) and d["bin_frames"] == 30
    assert d["z"].sum() >= len(result.hops)  # every hop marks at least one bin
    fig = timeline.create_figure(d)
    assert fig.layout.xaxis.title.text == "time (ps)"


def test_heatmaps_and_group_click(result):
    d = correlation_heatmaps.process_data(result, max_size=5)
    assert d["factor"] == 2 and d["raw"].shape == (5, 5)
    full = correlation_heatmaps.process_data(result)
    assert np.allclose(full["raw"], result.correlations.matrix, atol=1e-6)
    order = result.correlations.order
    assert np.array_equal(full["reordered"], result.correlations.binary()[np.ix_(order, order)])
    click = {"points": [{"curveNumber": 3, "x": len(order) - 1, "y": 0}]}
    assert correlation_heatmaps.group_from_click(result, click) == result.correlations.group_of[order[-1]]
    assert correlation_heatmaps.group_from_click(result, {"points": [{"curveNumber": 0, "x": 1, "y": 1}]}) is None
    assert len(correlation_heatmaps.create_figure(full).data) == 4


def test_distribution_fit_is_drawn_where_it_must_succeed():
    """Group sizes that follow A exp(-b n), b = 0.7, over n = 1..8 (3000 groups): the fit
    must succeed, recover b within its interval, and the figure must draw and label it."""
    from iondiff_core.distribution import n_distribution as pdf_of_n

    n = np.arange(1, 9)
    counts = np.round(3000 * np.exp(-0.7 * n) / np.exp(-0.7 * n).sum()).astype(int)
    sizes = np.repeat(n, counts)
    dist = pdf_of_n(sizes, n_max=20)
    d = n_distribution.process_data(dist)
    assert d["fit_ok"], d["notes"]
    assert d["counts"].sum() == len(sizes) and np.isfinite(d["p_fit"]).all()
    lo, hi = d["b_ci"]
    assert lo < 0.7 < hi and abs(d["b"] - 0.7) < 0.05
    label = n_distribution.fit_label(d)
    assert label.startswith("f(n) = A exp(-b n): A = ") and "(95 %)" in label
    fig = n_distribution.create_figure(d)
    fitted = [t for t in fig.data if np.isfinite(np.asarray(t.y, float)).any() and len(t.x) == len(d["n_fit"])]
    assert fitted, "the fitted curve is not drawn"


def test_distribution_without_a_fit_says_why(result):
    """Too few group sizes for a fit: no curve, and the reason is shown instead."""
    from iondiff_core.distribution import n_distribution as pdf_of_n

    d = n_distribution.process_data(pdf_of_n(np.array([1, 1, 1, 2, 2, 3]), n_max=20))
    assert not d["fit_ok"] and np.isnan(d["p_fit"]).all()
    assert n_distribution.fit_label(d).startswith("no exponential fit (fit of f(n) = A exp(-b n): ")


def test_distribution_msd_vanhove_table(result):
    d = n_distribution.process_data(result.distribution, result.mechanisms.counts())
    assert d["counts"].sum() == len(result.correlations.groups)
    assert d["fit_ok"] == (result.distribution.fit is not None)
    assert n_distribution.fit_label(d).startswith("f(n) = A exp(-b n)" if d["fit_ok"] else "no exponential fit")
    assert n_distribution.create_figure(d).layout.xaxis.title.text.startswith("n ")
    m = msd.process_data(result)
    assert m["tracer_fit"]["D_cm2_s"] == result.descriptors["D_tracer_cm2_s"]
    assert msd.create_figure(m).layout.yaxis.title.text == "MSD (Å²)"
    v = van_hove.process_data(result)
    assert v["self"].shape == (len(v["t_ps"]), len(v["r_A"]))
    rows = descriptor_table.process_data({"D_tracer_cm2_s": 1.23456e-5, "hop_length_mean_A": 2.5, "n_hops": 3, "x": float("nan")})
    assert {k: rows[0][k] for k in ("descriptor", "value", "unit")} == {"descriptor": "D tracer", "value": "1.235e-05", "unit": "cm²/s"}
    assert rows[1]["unit"] == "Å" and rows[2]["unit"] == "count" and rows[3]["value"] == "n/a"
    assert "tracer diffusion" in rows[0]["help"] and "mean over hops" in rows[1]["help"]


def test_group_colours_are_categorical_and_dim_the_others(result):
    groups, sizes = result.correlations.group_of, result.correlations.sizes
    c = group_colours(groups, sizes)
    concerted = sizes[groups] > 1
    assert set(c[~concerted]) == {SINGLE} and set(c[concerted]) <= set(PALETTE)
    # Different concerted groups get different colours (fewer groups than colours here).
    per_group = {g: c[groups == g][0] for g in np.unique(groups[concerted])}
    assert len(set(per_group.values())) == len(per_group) >= 2
    g = int(groups[concerted][0])
    sel = group_colours(groups, sizes, g)
    assert set(sel[groups == g]) == {"#000000"} and set(sel[groups != g]) == {DIMMED}
    d = hop_paths_3d.process_data(result, "group")
    assert len(set(d["path_color"])) >= 3 and len(d["path_color"]) == len(d["paths"]) == len(d["path_group"])
    assert plural(1, "group") == "1 group" and plural(2, "group") == "2 groups"


def test_reordered_matrix_outlines_groups_and_the_selection(result):
    sizes = result.correlations.sizes
    g = int(np.argmax(sizes))
    d = correlation_heatmaps.process_data(result, selected=g)
    assert len(d["blocks"]) == int(np.sum(sizes > 1))
    for grp, a, b in d["blocks"]:
        assert b - a == sizes[grp]  # the block spans the group's events
    shapes = correlation_heatmaps.create_figure(d).layout.shapes
    assert len(shapes) == len(d["blocks"]) + 1 and shapes[-1].line.color == "#d62728"
    assert correlation_heatmaps.group_blocks(np.array([0, 1, 1, 2, 2, 2])) == [(2, 2.5, 5.5), (1, 0.5, 2.5)]


def test_timeline_click_selects_the_group_of_the_hop(result):
    h = result.hops
    k = int(np.argmax(result.correlations.sizes[result.correlations.group_of]))
    dt = result.prep.trajectory.timestep_ps
    on_cell = {"points": [{"curveNumber": 0, "x": float(h.start[k] * dt), "y": int(h.ion[k])}]}
    assert timeline.group_from_click(result, on_cell) == result.correlations.group_of[k]
    on_marker = {"points": [{"curveNumber": 1, "x": 0, "y": 0, "customdata": 3}]}
    assert timeline.group_from_click(result, on_marker) == 3
    cols = timeline.data_table(timeline.process_data(result))
    assert len(cols["ion"]) == len(h) and "mid_time_ps" in cols


def test_pdf_shows_overflow_bar_null_band_and_fit_interval(result):
    dist = result.distribution
    d = n_distribution.process_data(dist, {}, None)
    fig = n_distribution.create_figure(d)
    assert fig.data[1].x[0] == dist.n.max() + 1  # the "> n_max" bar
    assert list(fig.layout.xaxis.ticktext)[-1] == f">{dist.n.max()}"
    # The engine's issue-8 objects, as the contract describes them.
    n_max = 6
    fit = type("Fit", (), {"A": 0.5, "b": 0.4, "A_ci95": (0.3, 0.7), "b_ci95": (0.2, 0.6), "n_points": 4,
                           "__call__": lambda self, n: 0.5 * np.exp(-0.4 * np.asarray(n, float))})()
    new = SimpleNamespace(n=np.arange(1, n_max + 1), counts=np.array([5, 3, 1, 0, 0, 0]), p=np.array([.5, .3, .1, 0, 0, 0]),
                          overflow=0.1, overflow_count=1, n_groups=10, mean_n=2.5, std_n=0.5, mean_n_ci95=(2.1, 2.9),
                          percolated=False, fit=fit, fit_note="")
    conc = SimpleNamespace(null_p=np.linspace(0.6, 0.0, n_max), null_p_ci95=np.vstack([np.linspace(.5, 0, n_max), np.linspace(.7, .1, n_max)]),
                           null_overflow=0.0)
    d = n_distribution.process_data(new, {}, conc)
    assert d["overflow_share"] == 0.1 and d["A_ci"] == (0.3, 0.7)
    names = [t.name for t in n_distribution.create_figure(d).data]
    assert "chance (null model, 95 %)" in names and any("A = 0.5 [0.3, 0.7]" in n for n in names)
    cols = n_distribution.data_table(d)
    assert cols["label"][-1] == "> 6" and cols["p_observed"][-1] == 0.1 and len(cols["p_null_2.5"]) == n_max + 1
    no_fit = n_distribution.process_data(SimpleNamespace(**{**vars(new), "fit": None, "fit_note": "only 2 sizes with groups"}), {}, conc)
    assert not no_fit["fit_ok"] and "only 2 sizes" in no_fit["notes"][0]


def test_impossible_transport_values_are_never_numbers():
    rows = {r["key"]: r for r in descriptor_table.process_data({
        "D_tracer_cm2_s": 2e-5, "D_tracer_ci95_cm2_s": [1.5e-5, 2.6e-5], "D_collective_cm2_s": -3e-6,
        "haven_ratio": -6.7, "conductivity_collective_S_cm": -0.01, "conductivity_tracer_S_cm": 0.02})}
    assert rows["D_tracer_cm2_s"]["interval"] == "[1.5e-05, 2.6e-05]" and "D_tracer_ci95_cm2_s" not in rows
    for k in ("D_collective_cm2_s", "haven_ratio", "conductivity_collective_S_cm"):
        assert rows[k]["value"].startswith("undetermined"), k
    h = {r["key"]: r for r in descriptor_table.process_data({"D_collective_cm2_s": 1e-6, "haven_ratio": 28.0})}
    assert h["haven_ratio"]["value"].startswith("undetermined")
    spans0 = {r["key"]: r for r in descriptor_table.process_data(
        {"D_collective_cm2_s": 1e-6, "D_collective_ci95_cm2_s": [-1e-6, 3e-6], "haven_ratio": 0.4})}
    assert spans0["haven_ratio"]["value"].startswith("undetermined") and spans0["D_collective_cm2_s"]["interval"] == ""
    assert msd.d_label("collective", -1e-6, None).startswith("D_collective undetermined")
    assert msd.d_label("tracer", 1e-5, (8e-6, 1.2e-5)) == "D_tracer = 1e-05 [8e-06, 1.2e-05] cm²/s"
    # The engine's interval may be unbounded above (null in JSON).
    assert msd.d_label("collective", 1e-5, msd._ci({"D_collective_ci95_cm2_s": [2e-6, None]}, "D_collective_ci95_cm2_s")) == \
        "D_collective = 1e-05 [2e-06, ∞) cm²/s"
    up = {r["key"]: r for r in descriptor_table.process_data({"D_collective_cm2_s": 1e-5, "D_collective_ci95_cm2_s": [2e-6, float("inf")]})}
    assert up["D_collective_cm2_s"]["interval"] == "[2e-06, ∞)"


def test_warnings_go_next_to_their_view():
    w = ["3 of 9 hops took less than one frame (10 fs): ...", "one concerted group holds 50 of 60 hops: ...",
         "XDATCAR line 40: frame cut short"]
    w.append("pdf of n: only 2 sizes with groups: no fit")
    r = views.route_warnings(w)
    assert r["timeline"] == [w[0]] and r["pdf"] == [w[1], w[3]] and r["heatmaps"] == [w[1]] and r["summary"] == [w[2]]


def test_concertedness_verdict_card_and_percolation():
    from pages.analyse import verdict_card

    conc = SimpleNamespace(observed_fraction=0.6, null_mean=0.2, null_ci95=(0.15, 0.25), excess=0.4, p_value=0.005,
                           replicas=200, verdict="percolated", message="apply a pair distance", null_p=None, null_p_ci95=None)
    fake = SimpleNamespace(concertedness=conc, distribution=SimpleNamespace(), warnings=[])
    c = views.concertedness_data(fake)
    assert c["verdict"] == "percolated" and c["null_ci95"] == [0.15, 0.25] and views.is_percolated(fake)
    card = verdict_card(c, True)
    text = str(card)
    assert "Groups percolate" in text and "60.0%" in text and "[15.0%, 25.0%]" in text and "p = 0.005" in text
    assert views.concertedness_data(SimpleNamespace()) is None
    assert not views.is_percolated(SimpleNamespace(distribution=SimpleNamespace(), warnings=[]))
