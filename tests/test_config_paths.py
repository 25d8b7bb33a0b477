"""``verify``'s "configs stay inside the bundle" check: a bundle is published alone, so no config string may reach into
a sibling folder through ``..``, name an absolute path (or this repository's), or name a sibling bundle."""

from __future__ import annotations

import json
import re

import pytest

from tools.commands.verify import REPOSITORY, BundleCheckError, check_config_paths

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


@pytest.mark.parametrize("text, why", [
    ("/data/covid/Imgs", "an absolute path"),
    ("$'/home/me/sample_data' + '/dataset'", "an absolute path"),
    ("C:\\data\\Imgs", "an absolute path"),
    (f"$os.path.join('{REPOSITORY}', 'bundles')", "a path into the repository"),
    ("$@bundle_root.replace('polyp_endoscopy_iacnn_segmentation', 'x')", "the sibling bundle"),
])
def test_absolute_repository_and_sibling_paths_are_named_with_the_reason(tmp_path, text, why):
    bundle = _bundle(tmp_path / "covid19_lesion_ct_rcbunetpp_segmentation", {"inference.json": {"input": text}})
    with pytest.raises(BundleCheckError, match=r"configs/inference\.json: input: .*\(" + re.escape(why)):
        check_config_paths(bundle)


def test_a_folder_beside_the_bundle_with_configs_counts_as_a_sibling(tmp_path):
    (tmp_path / "my_other_bundle" / "configs").mkdir(parents=True)
    (tmp_path / "not_a_bundle").mkdir()
    bundle = _bundle(tmp_path / "mine", {"train.json": {
        "a": "$@bundle_root + '/my_other_bundle_notes'", "b": "not_a_bundle", "c": "see my_other_bundle/sample_data",
    }})
    with pytest.raises(BundleCheckError) as err:
        check_config_paths(bundle)
    assert "train.json: c:" in str(err.value) and "the sibling bundle my_other_bundle" in str(err.value)
    assert "train.json: a:" not in str(err.value) and "train.json: b:" not in str(err.value)


@pytest.mark.parametrize("text", [
    "$@bundle_root + '/models'", "https://example.org/a/b", "$os.path.expanduser('~/data')", "jpg/png",
    "$@data_root + '/ph2'", "a // comment",
])
def test_relative_paths_urls_and_the_bundle_s_own_name_pass(tmp_path, text):
    bundle = _bundle(tmp_path / "covid19_lesion_ct_rcbunetpp_segmentation", {"inference.json": {
        "x": text, "own": "covid19_lesion_ct_rcbunetpp_segmentation"}})
    check_config_paths(bundle)


@pytest.mark.parametrize("bundle", sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir()))
def test_every_shipped_bundle_passes_the_extended_check(bundle):
    check_config_paths(BUNDLES / bundle)
