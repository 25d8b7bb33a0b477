"""``verify``'s "configs stay inside the bundle" check: a bundle is published alone, so no config string may reach into
a sibling folder through ``..``."""

from __future__ import annotations

import json

import pytest

from tools.verify import BundleCheckError, check_config_paths

from conftest import BUNDLES


def _bundle(tmp_path, configs: dict[str, dict]):
    for name, config in configs.items():
        path = tmp_path / "configs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config))
    return tmp_path


def test_a_path_into_a_sibling_bundle_is_named_with_its_file_and_config_id(tmp_path):
    bundle = _bundle(tmp_path, {"train.json": {
        "bundle_root": ".", "sample_data_dir": "$@bundle_root + '/../other_bundle/sample_data'",
        "train": {"handlers": [{"log_dir": "$@bundle_root + '/eval'"}, {"load_path": "../models/model.pt"}]},
    }})
    with pytest.raises(BundleCheckError) as err:
        check_config_paths(bundle)
    message = str(err.value)
    assert "configs/train.json: sample_data_dir: \"$@bundle_root + '/../other_bundle/sample_data'\"" in message
    assert "configs/train.json: train#handlers#1#load_path: '../models/model.pt'" in message
    assert "log_dir" not in message


def test_baseline_overlays_are_checked_too(tmp_path):
    bundle = _bundle(tmp_path, {"train.json": {}, "baselines/unet.json": {"ckpt_dir": "$@bundle_root + '/..'"}})
    with pytest.raises(BundleCheckError, match=r"configs/baselines/unet\.json: ckpt_dir"):
        check_config_paths(bundle)


@pytest.mark.parametrize("text", ["$@bundle_root + '/models'", "see ...", "a..b", "$@bundle_root + '/sample_data'"])
def test_strings_without_a_parent_folder_component_pass(tmp_path, text):
    check_config_paths(_bundle(tmp_path, {"inference.json": {"x": text}, "metadata.json": {"note": "../ in prose"}}))


@pytest.mark.parametrize("bundle", [
    "covid19_lesion_ct_rcbunetpp_segmentation",
    "covid19_lesion_ct_resattunet_segmentation",
    "polyp_endoscopy_iacnn_segmentation",
    "skin_lesion_dermoscopy_iacnn_segmentation",
])
def test_shipped_bundles_stay_inside_their_folders(bundle):
    check_config_paths(BUNDLES / bundle)
