"""Cross-simulation statistics of iondiff_core.descriptors: Spearman, Arrhenius per
material, nu against nu0."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from iondiff_core.descriptors import (
    arrhenius_by_material,
    nu_vs_nu0,
    spearman_against,
    spearman_matrix,
)
from iondiff_core.errors import InputError
from iondiff_core.transport import KB_EV_PER_K


def make_table(seed=0, n=40):
    rng = np.random.default_rng(seed)
    D = 10 ** rng.uniform(-7, -4, n)
    return {
        "D_tracer_cm2_s": D,
        "hop_length_mean_A": np.log(D) + rng.normal(scale=1.0, size=n),  # correlated
        "nu_THz": rng.uniform(0.1, 1.0, n),  # independent
        "residence_ps": -np.log(D) + rng.normal(scale=0.5, size=n),  # anti-correlated
    }


def test_spearman_matrix_matches_scipy():
    table = make_table()
    sp = spearman_matrix(table)
    assert sp.names == list(table)
    X = np.column_stack(list(table.values()))
    ref = spearmanr(X)
    assert np.allclose(sp.rho, ref.statistic, atol=1e-12)
    off = ~np.eye(4, dtype=bool)
    assert np.allclose(sp.p[off], ref.pvalue[off], rtol=1e-10)
    assert np.all(np.diag(sp.rho) == 1.0) and np.all(np.diag(sp.p) == 0.0)
    assert np.all(sp.n == 40)
    assert np.allclose(sp.rho, sp.rho.T)
    assert sp.rho[0, 1] > 0.5 and sp.rho[0, 3] < -0.5
    json.dumps(sp.to_dict())


def test_spearman_nan_pairwise():
    table = make_table(seed=1)
    table["hop_length_mean_A"][[0, 3, 7]] = np.nan
    table["residence_ps"] = list(table["residence_ps"])
    table["residence_ps"][5] = None
    table["residence_ps"][7] = np.nan
    sp = spearman_matrix(table)
    X = {k: np.array([np.nan if v is None else v for v in vals], dtype=float) for k, vals in table.items()}
    for i, a in enumerate(table):
        for j, b in enumerate(table):
            if i == j:
                continue
            ok = np.isfinite(X[a]) & np.isfinite(X[b])
            ref = spearmanr(X[a][ok], X[b][ok])
            assert sp.n[i, j] == ok.sum()
            assert sp.rho[i, j] == pytest.approx(ref.statistic, abs=1e-12)
            assert sp.p[i, j] == pytest.approx(ref.pvalue, rel=1e-10)
    assert sp.n[1, 3] == 40 - 4  # rows 0, 3, 7 and 5 missing
    assert sp.n[1, 1] == 37


def test_spearman_degenerate_columns():
    table = {
        "D": [1.0, 2.0, 3.0, 4.0, 5.0],
        "const": [2.0, 2.0, 2.0, 2.0, 2.0],
        "sparse": [1.0, np.nan, np.nan, np.nan, 3.0],
        "ok": [5.0, 3.0, 4.0, 1.0, 2.0],
    }
    sp = spearman_matrix(table)
    assert np.all(np.isnan(sp.rho[1])) and np.all(np.isnan(sp.p[:, 1]))
    assert np.all(np.isnan(sp.rho[2])) and sp.n[0, 2] == 2
    assert sp.rho[0, 3] == pytest.approx(spearmanr(table["D"], table["ok"]).statistic)
    with pytest.raises(InputError):
        spearman_matrix({"a": [1, 2, 3], "b": [1, 2]})
    with pytest.raises(InputError):
        spearman_matrix({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    with pytest.raises(InputError):
        spearman_matrix({})


def test_spearman_against_target():
    table = make_table(seed=2)
    table["hop_length_mean_A"][4] = np.nan
    res = spearman_against(table)
    assert res.target == "D_tracer_cm2_s"
    assert res.names == ["hop_length_mean_A", "nu_THz", "residence_ps"]
    full = spearman_matrix(table)
    assert np.allclose(res.rho, full.rho[0, 1:])
    assert np.allclose(res.p, full.p[0, 1:])
    assert list(res.n) == [39, 40, 40]
    assert res.rho[0] > 0.5 and res.p[0] < 1e-3 and res.rho[2] < -0.5
    assert abs(res.rho[1]) < 0.5
    json.dumps(res.to_dict())
    with pytest.raises(InputError):
        spearman_against(table, target="missing")


def test_arrhenius_by_material():
    rows = []
    truth = {"LGPS": (0.20, 0.15), "LLZO": (0.45, 0.40)}
    for material, (ea_t, ea_f) in truth.items():
        for T in (500.0, 700.0, 900.0, 1100.0):
            rows.append(
                {
                    "material": material,
                    "temperature_K": T,
                    "D_tracer_cm2_s": 1e-3 * np.exp(-ea_t / (KB_EV_PER_K * T)),
                    "D_collective_cm2_s": 2e-3 * np.exp(-ea_f / (KB_EV_PER_K * T)),
                }
            )
    rows.append({"material": "AgI", "temperature_K": 600.0, "D_tracer_cm2_s": 1e-5, "D_collective_cm2_s": None})
    out = arrhenius_by_material(rows)
    assert list(out) == ["LGPS", "LLZO", "AgI"]
    for material, (ea_t, ea_f) in truth.items():
        e = out[material]
        assert e["n_temperatures"] == 4 and e["n_simulations"] == 4
        assert e["Ea_tracer_eV"] == pytest.approx(ea_t, rel=1e-10)
        assert e["Ea_full_eV"] == pytest.approx(ea_f, rel=1e-10)
        assert e["Ea_tracer_err_eV"] == pytest.approx(0.0, abs=1e-9)
        assert e["D0_full_cm2_s"] == pytest.approx(2e-3, rel=1e-8)
    agi = out["AgI"]
    assert agi["n_temperatures"] == 1
    assert np.isnan(agi["Ea_tracer_eV"]) and "2 distinct temperatures" in agi["reason_tracer"]
    assert np.isnan(agi["Ea_full_eV"])
    from iondiff_core.report import _clean

    json.dumps(_clean(out))  # batch writes it as JSON


def test_arrhenius_by_material_with_noise_and_repeats():
    rng = np.random.default_rng(3)
    rows = []
    for T in (400.0, 600.0, 800.0, 1000.0, 1200.0):
        for _ in range(3):  # three runs per temperature
            rows.append(
                {
                    "material": "X",
                    "temperature_K": T,
                    "D_tracer_cm2_s": 1e-3 * np.exp(-0.3 / (KB_EV_PER_K * T) + rng.normal(scale=0.1)),
                    "D_collective_cm2_s": np.nan,
                }
            )
    e = arrhenius_by_material(rows)["X"]
    assert e["n_temperatures"] == 5 and e["n_points_tracer"] == 15
    assert abs(e["Ea_tracer_eV"] - 0.3) < 4 * e["Ea_tracer_err_eV"]
    assert e["Ea_tracer_err_eV"] < 0.03
    assert np.isnan(e["Ea_full_eV"])


def test_nu_vs_nu0():
    rows = [
        {"material": "A", "nu_THz": 1.0, "nu0_THz": 1.0},  # on nu0 = nu: coincident
        {"material": "B", "nu_THz": 1.0, "nu0_THz": 10.0},  # on nu0 = 10 nu: coincident
        {"material": "C", "nu_THz": 1.0, "nu0_THz": 50.0},  # above
        {"material": "D", "nu_THz": 1.0, "nu0_THz": 0.5},  # below
        {"material": "E", "nu_THz": None, "nu0_THz": 0.5},  # missing
        # nu0 from 6 D / dr^2: D = 1e-5 cm^2/s = 0.1 Å^2/ps, dr = 2 Å -> 0.15 THz
        {"material": "F", "nu_THz": 0.05, "D_tracer_cm2_s": 1e-5, "hop_length_mean_A": 2.0},
    ]
    res = nu_vs_nu0(rows)
    assert res.labels == list("ABCDEF")
    assert res.nu0_THz[5] == pytest.approx(0.15)
    assert res.coincidence.tolist() == [True, True, False, False, False, True]
    assert res.valid.tolist() == [True, True, True, True, False, True]
    assert (res.n_coincident, res.n_above, res.n_below) == (3, 1, 1)
    assert res.ratio[2] == pytest.approx(50.0) and np.isnan(res.ratio[4])
    assert res.notes
    json.dumps(res.to_dict(), allow_nan=True)
