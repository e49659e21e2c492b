"""METHOD.md section 7 on real AIMD: the default analysis's hops add up to the ions'
displacements (:meth:`iondiff_core.consistency.Consistency.checks`), on the argyrodite
run section 7 names (Li6PS5Cl_500K_50p_run1: IonDiff 1.6 found hops for 9 of the 120
Li that moved), LGPS_600K and Na3PS4_800K; and the checks fail when hops are missing.
"""

import numpy as np
import pytest

from iondiff_core import consistency, pipeline
from iondiff_core.parameters import Parameters

RUNS = ("Li6PS5Cl_500K_50p_run1", "LGPS_600K", "Na3PS4_800K")


@pytest.fixture(scope="module")
def results(shared_data):
    return {run: pipeline.analyze(shared_data / "real" / run) for run in RUNS}


@pytest.mark.parametrize("run", RUNS)
def test_default_analysis_passes_the_consistency_checks(results, run):
    r = results[run]
    checks = r.consistency.checks()
    assert [c["name"] for c in checks] == ["residual", "moved ions have hops", "MSD"]
    failed = [c["message"] for c in checks if c["passed"] is not True]
    assert not failed, f"{run}: {failed}"
    assert r.consistency.passed is True
    assert not any("do not add up" in w for w in r.warnings)
    s = r.to_dict()["consistency"]
    assert s["checks_failed"] == 0 and s["ions_moved"] >= 2 and len(r.hops) >= 10


def test_the_argyrodite_run_of_section_7(results):
    """Most of the Li that moved have hops (IonDiff 1.6: 9 of 120), and the hops carry
    most of the measured MSD (docs/VALIDATION.md: 7.4 of 10.4 Å²)."""
    s = results["Li6PS5Cl_500K_50p_run1"].consistency.summary()
    assert s["ions_moved"] >= 100 and s["share_moved_with_hops"] >= 0.95
    assert 0.6 * s["msd_measured_A2"] <= s["msd_from_hops_A2"] <= 1.1 * s["msd_measured_A2"]


@pytest.mark.parametrize("run", RUNS)
def test_the_checks_fail_when_hops_are_missing(results, run):
    """The same run with no hops (as an analysis that misses them reports) fails; on the
    argyrodite, dropping the hops of every other moved ion already fails the share check."""
    r = results[run]
    radii = r.hop_analysis.radius_A
    none = consistency.check(r.prep.positions_A, r.hops.take(np.zeros(len(r.hops), bool)), vibration_radii_A=radii)
    assert none.passed is False
    assert {c["name"]: c["passed"] for c in none.checks()}["moved ions have hops"] is False
    if run == "Li6PS5Cl_500K_50p_run1":
        moved = np.flatnonzero(r.consistency.moved & (r.consistency.n_hops_per_ion > 0))
        keep = ~np.isin(r.hops.ion, moved[::2])
        fewer = consistency.check(r.prep.positions_A, r.hops.take(keep), vibration_radii_A=radii)
        assert {c["name"]: c["passed"] for c in fewer.checks()} == {"residual": False, "moved ions have hops": False, "MSD": False}


def test_planted_hops_pass_and_the_checks_are_undetermined_without_a_scale(planted):
    r = pipeline.analyze(planted.trajectory, Parameters())
    assert r.consistency.passed is True
    bare = consistency.check(r.prep.positions_A, r.hops)  # no vibration radii given
    assert [c["passed"] for c in bare.checks()] == [None, True, None] and bare.passed is None
