from pathlib import Path

import pytest

from iondiff_core.synthetic import make_synthetic

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED.exists():
        pytest.skip("../shared/data is not beside the project")
    return SHARED


@pytest.fixture(scope="session")
def planted():
    """Triclinic cell, hops across boundaries, chains of 1-5, a 14-site walker, an open hop."""
    return make_synthetic(
        n_frames=6000,
        n_mobile=16,
        chain_sizes=(1, 2, 3, 4, 5, 1, 2, 3),
        long_walker_hops=14,
        open_end_hop=True,
        skew=0.3,
        seed=11,
    )
