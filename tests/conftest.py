"""Shared fixtures: the repository's bundles and the optional real datasets (``SEG_DATA_ROOT``); the ``slow`` marks
of the end-to-end tests; one thread per process; and a session check that no test wrote into ``bundles/``.

``python -m pytest -q`` runs everything (as CI does); ``python -m pytest -q -m "not slow"`` is the fast loop.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"

# Modules that run a bundle's workflows end to end (train, evaluate, infer, verify, compare, benchmark): every test
# in them is marked slow. Other slow tests carry ``@pytest.mark.slow`` themselves, or are named here by node id.
END_TO_END_MODULES = frozenset({
    "test_bundle_covid19_rcbunetpp",
    "test_bundle_covid19_resattunet",
    "test_bundle_iacnn",
    "test_bundle_drive",
    "test_bundle_spine",
    "test_compare",
    "test_ma_covid_layout",
    "test_verify",
    "test_benchmark",
    "test_epoch_benchmark",
    "test_runner",
    "test_crossval",
})
END_TO_END_TESTS = frozenset({
    "tests/test_training.py::test_training_benchmark_writes_baseline_default_and_matmul_peaks",
})


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the real datasets (``$SEG_DATA_ROOT``); tests that need them skip when it is unset or missing."""
    root = os.environ.get("SEG_DATA_ROOT")
    if not root or not Path(root).is_dir():
        pytest.skip("real datasets not available: set SEG_DATA_ROOT to the folder holding the datasets")
    return Path(root)


def pytest_configure(config):
    # One thread, here and in the subprocesses tests start: the networks in tests are tiny, and on a shared 2-core
    # machine two OpenMP threads per process oversubscribe the cores (the network tests took 55-94 s with two
    # threads and 19 s with one, under a load of 3-4).
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    slow = pytest.mark.slow
    for item in items:
        module = item.path.stem if item.path is not None else ""
        node = item.nodeid.split("[", 1)[0]
        if module in END_TO_END_MODULES or node in END_TO_END_TESTS:
            item.add_marker(slow)


def _files_under_bundles() -> set[str]:
    return {str(p.relative_to(REPO)) for p in BUNDLES.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="session", autouse=True)
def no_test_writes_into_the_bundles():
    """Fails the session (an error at the last test's teardown) if files appeared under ``bundles/`` while it ran,
    ignored ones included (``eval/``, ``models/*.ts``): tests write under ``tmp_path``. Another process writing
    into the same checkout meanwhile would trip it too."""
    before = _files_under_bundles()
    yield
    new = sorted(_files_under_bundles() - before)
    assert not new, f"tests wrote {len(new)} new file(s) into the checkout's bundles/: {', '.join(new[:10])}"
