"""The CUDA paths: a bundle's inference on a CT volume and a few AMP training steps on the GPU.

Skipped without CUDA (CI has none); run on a GPU machine with ``python -m pytest -q tests/test_cuda.py``.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, run

from tools.training import resolve_precision

from conftest import BUNDLES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

RCB = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation"


def test_auto_precision_on_cuda_is_monai_amp():
    assert resolve_precision("auto", torch.device("cuda:0")) == "amp"


def test_ct_volume_inference_runs_on_the_gpu_and_keeps_the_input_geometry(tmp_path):
    volume = RCB / "sample_data" / "ct" / "example_ct_sm.nii.gz"
    run(config_file=str(RCB / "configs" / "inference.json"), logging_file=str(RCB / "configs" / "logging.conf"),
        bundle_root=str(RCB), input=str(volume), output_dir=str(tmp_path))
    mask = nib.load(tmp_path / "example_ct_sm_mask.nii.gz")
    source = nib.load(volume)
    assert mask.shape == source.shape
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)


def test_amp_training_steps_of_the_bundle_network_reduce_the_loss_on_the_gpu():
    parser = ConfigParser()
    parser.read_config(str(RCB / "configs" / "train.json"))
    parser.update({"bundle_root": str(RCB), "network_def#features": [8, 16, 16, 32, 32]})
    assert parser.get_parsed_content("precision") == "amp"
    assert parser.get_parsed_content("train#trainer#amp") is True
    net = parser.get_parsed_content("network")
    loss_fn = parser.get_parsed_content("train#trainer#loss_function")
    inferer = parser.get_parsed_content("train#trainer#inferer")
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    scaler = torch.amp.GradScaler("cuda")
    torch.manual_seed(0)
    x = torch.rand(4, 1, 64, 64, device="cuda")
    y = (x > 0.5).float()
    losses = []
    for _ in range(20):
        opt.zero_grad()
        with torch.autocast("cuda"):
            pred = inferer(x, net)
        loss = loss_fn(pred.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
