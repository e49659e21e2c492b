"""process_data / create_figure of every view, on a planted trajectory."""

import numpy as np
import pytest

from dashboard.figures import correlation_heatmaps, descriptor_table, hop_paths_3d, msd, n_distribution, timeline, van_hove
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
    assert fig.layout.scene.xaxis.title.text == "x (Å)" and any(t.name == "selected group" for t in fig.data)


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
    assert correlation_heatmaps.group_from_click(full, click) == result.correlations.group_of[order[-1]]
    assert correlation_heatmaps.group_from_click(full, {"points": [{"curveNumber": 0, "x": 1, "y": 1}]}) is None
    assert len(correlation_heatmaps.create_figure(full).data) == 4


def test_distribution_msd_vanhove_table(result):
    d = n_distribution.process_data(result.distribution, result.mechanisms.counts())
    assert d["counts"].sum() == len(result.correlations.groups) and "A exp(-b n)" in n_distribution.fit_label(d) or not d["fit_ok"]
    assert n_distribution.create_figure(d).layout.xaxis.title.text.startswith("n ")
    m = msd.process_data(result)
    assert m["tracer_fit"]["D_cm2_s"] == result.descriptors["D_tracer_cm2_s"]
    assert msd.create_figure(m).layout.yaxis.title.text == "MSD (Å²)"
    v = van_hove.process_data(result)
    assert v["self"].shape == (len(v["t_ps"]), len(v["r_A"]))
    rows = descriptor_table.process_data({"D_tracer_cm2_s": 1.23456e-5, "hop_length_mean_A": 2.5, "n_hops": 3, "x": float("nan")})
    assert rows[0] == {"descriptor": "D tracer", "value": "1.235e-05", "unit": "cm²/s"} and rows[1]["unit"] == "Å"
    assert rows[3]["value"] == "n/a"
