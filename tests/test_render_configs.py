"""The bundles' shared configs are renderings of ``tools/bundle_templates/`` (a family's template plus the bundle's
overlay): every committed rendering matches, and a new bundle of a family is one overlay."""

from __future__ import annotations

import json
import shutil

import pytest
from monai.bundle import ConfigParser

from conftest import BUNDLES
from tools.commands.render_configs import (OPTIONAL, PER_BUNDLE, TEMPLATES, RenderError, apply_overlay, render_all,
                                  render_bundle_configs, render_overlay)

RENDERED_BUNDLES = sorted(p.stem for p in (TEMPLATES / "overlays").glob("*.json"))


def test_every_bundle_has_an_overlay():
    bundles = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir())
    assert bundles == RENDERED_BUNDLES, "a bundle's shared configs are rendered from tools/bundle_templates/overlays/<bundle>.json"


@pytest.mark.parametrize("bundle", RENDERED_BUNDLES)
def test_every_committed_config_equals_its_rendering(bundle):
    rendered = render_bundle_configs(bundle)
    assert {"train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "logging.conf"} <= set(rendered)
    stale = [name for name, text in rendered.items() if (BUNDLES / bundle / "configs" / name).read_text() != text]
    assert not stale, (
        f"{bundle}/configs/{', '.join(stale)} differ(s) from the rendering of tools/bundle_templates/: edit the template "
        "or the bundle's overlay there (not the rendered file), then run `python -m tools render_configs`"
    )


def test_check_names_a_hand_edited_rendering_and_writing_restores_it(tmp_path):
    shutil.copytree(TEMPLATES, tmp_path / "_templates")
    bundle = "polyp_endoscopy_iacnn_segmentation"
    shutil.copytree(BUNDLES / bundle / "configs", tmp_path / bundle / "configs")
    for other in RENDERED_BUNDLES:
        if other != bundle:
            (tmp_path / "_templates" / "overlays" / f"{other}.json").unlink()
    train = tmp_path / bundle / "configs" / "train.json"
    committed = train.read_text()
    train.write_text(committed.replace('"learning_rate": 0.0001', '"learning_rate": 0.01'))

    assert render_all(tmp_path, check=True, templates_dir=tmp_path / "_templates") == [train]
    assert train.read_text() != committed  # --check writes nothing
    assert render_all(tmp_path, templates_dir=tmp_path / "_templates") == [train]
    assert train.read_text() == committed
    assert render_all(tmp_path, check=True, templates_dir=tmp_path / "_templates") == []


def test_a_new_rgb_bundle_is_one_small_overlay(tmp_path):
    overlay = {
        "family": "rgb_2d",
        "train.json": {
            "dataset_dir": "$@data_root + '/new_dataset'",
            "datalist": "$tools.data.paired_datalist(@dataset_dir)",
            "make_split": "$lambda: tools.data.split_datalist(@datalist, n_val=1, seed=@split_seed)",
            "spatial_size": [256, 256],
            "intensity_mean": [0.5, 0.5, 0.5],
            "intensity_std": [0.25, 0.25, 0.25],
        },
        "inference.json": {"spatial_size": [256, 256], "intensity_mean": [0.5, 0.5, 0.5],
                           "intensity_std": [0.25, 0.25, 0.25]},
    }
    configs = tmp_path / "new_rgb_bundle" / "configs"
    configs.mkdir(parents=True)
    for name, text in render_overlay(overlay, name="new_rgb_bundle").items():
        (configs / name).write_text(text)

    for files in (["train.json"], ["train.json", "evaluate.json"], ["inference.json"]):
        parser = ConfigParser()
        parser.read_config([str(configs / f) for f in files])
        parser["bundle_root"] = str(configs.parent)
        assert parser.get_parsed_content("network_def").__class__.__name__ == "IACNN"
    assert "n_val_clips" not in json.loads((configs / "train.json").read_text())  # optional keys left unset: absent


def test_a_placeholder_the_overlay_leaves_unset_is_refused():
    with pytest.raises(RenderError, match=r"new/inference.json: spatial_size, intensity_mean, intensity_std left '<per-bundle>'"):
        render_overlay({"family": "rgb_2d", "train.json": {}}, name="new")


def test_an_unknown_family_or_file_is_refused():
    with pytest.raises(RenderError, match="unknown family 'mri'"):
        render_overlay({"family": "mri"})
    with pytest.raises(RenderError, match="metadata.json, which family 'rgb_2d' has no template of"):
        render_overlay({"family": "rgb_2d", "metadata.json": {}})


def test_an_id_matches_a_key_holding_a_hash_whole_and_walks_lists_by_index():
    template = {"validate#dataset": {"data": PER_BUNDLE}, "train": {"handlers": [{"a": 1}, {"a": 2}]}, "x": OPTIONAL}
    rendered = apply_overlay(template, {"validate#dataset#data": "@datalist", "train#handlers#1#a": 3, "new#id": 4})
    assert rendered == {"validate#dataset": {"data": "@datalist"}, "train": {"handlers": [{"a": 1}, {"a": 3}]},
                        "x": OPTIONAL, "new#id": 4}
    with pytest.raises(RenderError, match="'train#handlers#2#a': '2' is not an index of a list of 2"):
        apply_overlay(template, {"train#handlers#2#a": 0})
