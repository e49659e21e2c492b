"""The deployment tests' stack fixture (see stack.py)."""

import shutil

import pytest

from .stack import running_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    with running_stack(tmp_path_factory.mktemp("shared-data"), tmp_path_factory.mktemp("lab-sims")) as s:
        yield s
