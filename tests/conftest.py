"""Shared test fixtures: the ../shared data folder (optional), --runslow, small tomograms."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """../shared/data beside the checkout (or $CRYO_OPENSET_SHARED/data), if present."""
    root = Path(os.environ.get("CRYO_OPENSET_SHARED", REPO.parent / "shared"))
    data = root / "data"
    return data if data.is_dir() else None


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; tests using it skip cleanly when it is absent."""
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is not beside this checkout")
    return data


@pytest.fixture
def small_volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((12, 20, 24)).astype(np.float32)
