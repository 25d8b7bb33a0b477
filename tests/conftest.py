"""Shared fixtures: the repository's bundles and the optional real datasets (``SEG_DATA_ROOT``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the real datasets (``$SEG_DATA_ROOT``); tests that need them skip when it is unset or missing."""
    root = os.environ.get("SEG_DATA_ROOT")
    if not root or not Path(root).is_dir():
        pytest.skip("real datasets not available: set SEG_DATA_ROOT to the folder holding the datasets")
    return Path(root)


def pytest_configure(config):
    # The networks are tiny in tests; two threads match CI's two cores and avoid oversubscription.
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
