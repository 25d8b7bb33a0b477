"""Layout rules across bundles: generic config overlays are the same file in every bundle that has them."""

import filecmp

import pytest

from conftest import BUNDLES

# Overlays with no bundle-specific ids: each bundle must carry its own copy (MONAI's CLI, MONAI Label and the
# model-zoo tooling take a bundle folder alone), so the copies must stay identical.
GENERIC = ("evaluate.json", "multi_gpu_train.json", "logging.conf")
COVID = sorted(p for p in BUNDLES.glob("covid19_lesion_ct_*") if p.is_dir())


@pytest.mark.parametrize("name", GENERIC)
def test_generic_overlays_are_identical_across_covid_bundles(name):
    first, *others = COVID
    for other in others:
        assert filecmp.cmp(first / "configs" / name, other / "configs" / name, shallow=False), (
            f"{other.name}/configs/{name} differs from {first.name}'s: change both or make the difference an id"
        )
