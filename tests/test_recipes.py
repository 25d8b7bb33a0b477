"""Training recipes (``configs/recipes/*.json``) merge over a bundle's train.json and give aligned, binary pairs."""

from __future__ import annotations

import json

import pytest
import torch
from monai.bundle import ConfigParser

from conftest import BUNDLES

RECIPES = sorted(BUNDLES.glob("*/configs/recipes/*.json"))
# recipes that change what the training data looks like (the others, e.g. a learning-rate schedule, leave it alone)
DATA_RECIPES = [p for p in RECIPES if any(k.lstrip("+").startswith(("train#augmentation", "train#preprocessing",
                                                                      "train#dataset", "spatial_size", "slab_"))
                                          for k in json.loads(p.read_text()))]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: f"{p.parents[2].name}/{p.name}")
def test_every_recipe_merges_over_its_train_config_and_names_only_ids_that_exist_there(recipe):
    bundle = recipe.parents[2]
    base = ConfigParser()
    base.read_config(str(bundle / "configs" / "train.json"))
    for key in json.loads(recipe.read_text()):
        if key.startswith("+"):  # MONAI's merge key: extends a list or dict that must already be there
            assert key[1:] in base, f"{recipe.name}: {key[1:]} is not in train.json"
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), str(recipe)])
    parser.update({"bundle_root": str(bundle), "train#trainer#max_epochs": 7})
    if "lr_scheduler" in parser:  # the schedule spans the trainer's epochs, whatever --max_epochs says
        assert parser.get_parsed_content("lr_scheduler").T_max == 7


@pytest.mark.parametrize("recipe", DATA_RECIPES, ids=lambda p: f"{p.parents[2].name}/{p.name}")
def test_recipe_preprocessing_keeps_image_and_mask_aligned(recipe):
    bundle = recipe.parents[2]
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), str(recipe)])
    parser.update({"bundle_root": str(bundle), "dataset_dir": str(bundle / "sample_data" / "dataset")})
    preprocessing = parser.get_parsed_content("train#preprocessing")
    item = parser.get_parsed_content("datalist")[0]
    size = list(parser.get_parsed_content("spatial_size"))
    channels = parser.get_parsed_content("network_def#in_channels")
    torch.manual_seed(0)
    for seed in range(4):  # several random draws: every transform's branch gets a chance to run
        preprocessing.set_random_state(seed)
        out = preprocessing(dict(item))
        # a volume bundle's sampler gives several whole slices of the volume's own size; a 2D bundle one image
        # resized to spatial_size
        samples = out if isinstance(out, list) else [out]
        for sample in samples:
            image, label = sample["image"].shape, sample["label"].shape
            assert image[0] == channels and label[0] == 1 and image[1:] == label[1:]
            assert isinstance(out, list) or list(image[1:]) == size
            assert torch.isfinite(torch.as_tensor(sample["image"])).all()
            assert set(torch.unique(torch.as_tensor(sample["label"])).tolist()) <= {0.0, 1.0}


def test_the_polyp_bundle_has_the_generalising_recipe():
    assert any(p.name == "generalising.json" and "polyp" in str(p) for p in RECIPES)


def test_the_multiscale_recipe_sets_the_trainers_batch_scaling_and_iacnn_takes_every_scale():
    from tools.augmentation import MultiScaleBatch

    bundle = BUNDLES / "polyp_endoscopy_iacnn_segmentation"
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json"), str(bundle / "configs/recipes/generalising.json"),
                        str(bundle / "configs/recipes/multiscale.json")])
    parser.update({"bundle_root": str(bundle), "dataset_dir": str(bundle / "sample_data" / "dataset")})
    prepare = parser.get_parsed_content("train#trainer#prepare_batch")
    assert isinstance(prepare, MultiScaleBatch) and prepare.scales == (0.75, 1.0, 1.25)
    size = list(parser.get_parsed_content("spatial_size"))
    channels = parser.get_parsed_content("network_def#in_channels")
    network = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        for scale in prepare.scales:
            side = prepare.size(size, scale)
            assert network(torch.rand(1, 3, *side)).shape == (1, 1, *side)
