"""Layout rules across bundles: generic config overlays are the same file in every bundle that has them."""

import filecmp

import pytest

from conftest import BUNDLES

# Overlays with no bundle-specific ids: each bundle must carry its own copy (MONAI's CLI, MONAI Label and the
# model-zoo tooling take a bundle folder alone), so the copies must stay identical.
ALL = sorted(p for p in BUNDLES.iterdir() if (p / "configs").is_dir())
FAMILIES = {
    "every bundle": (ALL, ("multi_gpu_train.json", "logging.conf")),
    "COVID-19 CT bundles": (sorted(p for p in ALL if p.name.startswith("covid19_lesion_ct_")), ("evaluate.json",)),
    "IA-CNN RGB bundles": (sorted(p for p in ALL if p.name.endswith("_iacnn_segmentation")),
                           ("evaluate.json", "baselines/unet.json", "baselines/res_unet.json",
                            "baselines/attention_unet.json")),
}


@pytest.mark.parametrize("family, name", [(f, n) for f, (_, names) in FAMILIES.items() for n in names])
def test_generic_overlays_are_identical_across_a_family(family, name):
    first, *others = FAMILIES[family][0]
    assert others, f"{family}: fewer than two bundles"
    for other in others:
        assert filecmp.cmp(first / "configs" / name, other / "configs" / name, shallow=False), (
            f"{other.name}/configs/{name} differs from {first.name}'s: change both or make the difference an id"
        )
