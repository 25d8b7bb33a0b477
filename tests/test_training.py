"""Fast training: precision and memory-format choice, the mixed-precision inferer, the training benchmark's
results file, and every bundle's ``multi_gpu_train.json`` under ``torchrun`` on CPUs (Gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.inferers import SimpleInferer, SliceInferer

from custom_networks.nets import RCBUNetPlusPlus
from tools import training
from tools.commands.benchmark import benchmark_training
from tools.training import MixedPrecisionInferer, prepare_network, resolve_memory_format, resolve_precision

from conftest import BUNDLES, REPO

RCB = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation"
RES = BUNDLES / "covid19_lesion_ct_resattunet_segmentation"
POLYP = BUNDLES / "polyp_endoscopy_iacnn_segmentation"
SKIN = BUNDLES / "skin_lesion_dermoscopy_iacnn_segmentation"
# tiny networks and splits of the bundles' sample data (the same overrides as the bundles' own tests)
TINY = {
    RCB: {"network_def#features": [4, 8, 8, 8, 8], "val_count": 2},
    RES: {"network_def#layers": [1, 1, 1, 1], "network_def#channels": [8, 16, 32, 64],
          "network_def#decoder_channels": [32, 16, 8, 8], "spatial_size": [64, 64], "val_count": 2,
          "dataset_dir": str(RCB / "sample_data" / "dataset")},
    POLYP: {"channels": [4, 8, 8, 16, 16], "spatial_size": [64, 64], "n_val_clips": 2},
    SKIN: {"channels": [4, 8, 8, 16, 16], "spatial_size": [64, 64], "val_fraction": 0.5},  # 2 of 4: one per rank
}


def test_auto_precision_is_bf16_on_a_cpu_with_bf16_units_and_fp32_without(monkeypatch):
    monkeypatch.setattr(training, "cpu_supports_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(training, "cpu_supports_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "fp32"  # emulated bf16 would be slower than fp32


def test_auto_precision_is_monai_amp_on_cuda_and_fp32_can_be_forced():
    assert resolve_precision("auto", "cuda:0") == "amp"
    assert resolve_precision("fp32", "cuda:0") == "fp32"
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("amp", "cpu") == "fp32"  # CUDA's fp16 AMP does not exist on a CPU
    assert training.uses_monai_amp("amp") and not training.uses_monai_amp("bf16")


@pytest.mark.parametrize("bad", ["fp16", "half", ""])
def test_unknown_precision_is_refused_with_the_choices(bad):
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        resolve_precision(bad, "cpu")
    with pytest.raises(ValueError, match="resolve 'auto'"):
        MixedPrecisionInferer(precision="auto")


def test_memory_format_auto_is_channels_last_in_2d_and_contiguous_in_3d():
    assert resolve_memory_format("auto", 2) == torch.channels_last
    assert resolve_memory_format("auto", 3) == torch.contiguous_format
    assert resolve_memory_format("channels_last", 3) == torch.channels_last_3d
    assert resolve_memory_format("contiguous", 2) == torch.contiguous_format
    with pytest.raises(ValueError, match="memory_format must be one of"):
        resolve_memory_format("nhwc", 2)


def test_bf16_inferer_runs_the_network_in_bf16_and_returns_fp32_channels_last_inputs():
    seen = {}

    def network(x):
        seen["channels_last"] = x.is_contiguous(memory_format=torch.channels_last)
        out = torch.nn.functional.conv2d(x, torch.ones(1, x.shape[1], 3, 3), padding=1)
        seen["dtype"] = out.dtype
        return out, out * 2  # e.g. deep-supervision heads

    out = MixedPrecisionInferer(SimpleInferer(), precision="bf16", memory_format="channels_last")(
        torch.rand(2, 3, 8, 8), network)
    assert seen == {"channels_last": True, "dtype": torch.bfloat16}
    assert isinstance(out, tuple) and all(o.dtype == torch.float32 for o in out)


def test_fp32_inferer_leaves_precision_alone():
    out = MixedPrecisionInferer(precision="fp32", memory_format="contiguous")(
        torch.rand(1, 1, 8, 8), lambda x: torch.nn.functional.conv2d(x, torch.ones(1, 1, 3, 3)))
    assert out.dtype == torch.float32


def test_bf16_predictions_of_a_network_agree_with_fp32_within_bf16_rounding():
    torch.manual_seed(0)
    net = RCBUNetPlusPlus(2, 1, 1, features=(4, 8, 8, 8, 8)).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        ref = torch.sigmoid(net(x))
        fast_net = prepare_network(RCBUNetPlusPlus(2, 1, 1, features=(4, 8, 8, 8, 8)), "cpu", "channels_last")
        fast_net.load_state_dict(net.state_dict())
        fast = torch.sigmoid(MixedPrecisionInferer(precision="bf16")(x, fast_net.eval()))
    assert fast.dtype == torch.float32
    assert (fast - ref).abs().max() < 0.05  # bf16 keeps 8 bits of mantissa
    assert ((fast > 0.5) == (ref > 0.5)).float().mean() > 0.95


def test_bf16_inferer_wraps_a_slice_inferer_for_volumes():
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    out = MixedPrecisionInferer(SliceInferer(roi_size=(8, 8), spatial_dim=2), precision="bf16")(
        torch.rand(1, 1, 8, 8, 5), net)
    assert out.shape == (1, 1, 8, 8, 5) and out.dtype == torch.float32


def test_a_bf16_channels_last_training_loop_learns():
    torch.manual_seed(0)
    net = prepare_network(RCBUNetPlusPlus(2, 1, 1, features=(4, 8, 8, 8, 8), deep_supervision=False), "cpu",
                          "channels_last")
    inferer = MixedPrecisionInferer(precision="bf16", memory_format="channels_last")
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    x = torch.rand(4, 1, 32, 32)
    y = (x > 0.5).float()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(inferer(x, net), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("bundle", [RCB, RES, POLYP, SKIN], ids=lambda b: b.name.split("_")[-2])
def test_every_train_config_wires_precision_memory_format_and_inferers(bundle):
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update({"bundle_root": str(bundle), **TINY[bundle], "dataset_dir": str(bundle / "sample_data" / "dataset")})
    assert parser["mixed_precision"] == "auto" and parser["memory_format"] == "auto"
    assert parser.get_parsed_content("precision") in ("bf16", "fp32")  # this CPU, no CUDA in tests
    for engine in ("train#trainer", "validate#evaluator"):
        assert isinstance(parser.get_parsed_content(f"{engine}#inferer"), MixedPrecisionInferer)
        assert parser.get_parsed_content(f"{engine}#amp") is False
    net = parser.get_parsed_content("network")
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_training_benchmark_writes_baseline_default_and_matmul_peaks(tmp_path):
    out = tmp_path / "bench.json"
    result = benchmark_training(RCB, out, steps=1, warmup=1, rounds=1,
                                overrides={"network_def#features": [4, 8, 8, 8, 8], "train#dataloader#batch_size": 2})
    assert json.loads(out.read_text()) == result
    for key in ("baseline", "default"):
        assert result[key]["images_per_s"] > 0 and result[key]["gflop_per_s"] > 0
    assert result["baseline"]["precision"] == "fp32" and result["baseline"]["memory_format"] == "contiguous"
    assert {"precision", "memory_format", "compiled"} <= set(result["default"])
    from tools.training import cpu_supports_bf16

    peaks = result["matmul_gflop_per_s"]
    assert peaks["fp32"] > 0 and (peaks["bf16"] > 0 if cpu_supports_bf16() else peaks["bf16"] is None)
    assert result["device"] and result["cpu_threads"] >= 1 and result["gflop_per_image"] > 0
    assert set(result["variants"]) >= {"bf16_contiguous", "bf16_channels_last"}


def _torchrun(bundle: Path, args: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps(args))
    configs = bundle / "configs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "training",
           "--config_file", f"['{configs / 'train.json'}','{configs / 'multi_gpu_train.json'}']",
           "--logging_file", str(configs / "logging.conf"), "--args_file", str(args_file)]
    # Gloo on the loopback interface: a sandbox's host name may not resolve to a reachable address
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "GLOO_SOCKET_IFNAME": "lo"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", [RCB, RES, POLYP, SKIN], ids=lambda b: b.name.split("_")[-2])
def test_multi_gpu_config_trains_under_torchrun_on_cpus_and_its_weights_load_for_inference(bundle, tmp_path):
    out = tmp_path / "run"
    args = {"bundle_root": str(bundle), "dataset_dir": str(bundle / "sample_data" / "dataset"),
            "output_dir": str(out), "ckpt_dir": str(out / "models"), "train#trainer#max_epochs": 1,
            "val_interval": 1, "train#handlers#-1#persist": False, **TINY[bundle]}
    proc = _torchrun(bundle, args, tmp_path)
    assert proc.returncode == 0, "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                                            if "Warning" not in line and "warn(" not in line)[-6000:]
    # rank 0 alone writes the checkpoints and logs
    assert (out / "models" / "model.pt").is_file()
    assert len(list(out.glob("resume_checkpoint_epoch=1.pt"))) == 1
    writers = {p.name.split(".")[4] for p in out.glob("events.out.tfevents.*")}  # ...tfevents.<time>.<host>.<pid>.<n>
    assert len(writers) == 1
    state = torch.load(out / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # DDP's prefix is not saved: inference loads it
    infer = ConfigParser()
    infer.read_config(str(bundle / "configs" / "inference.json"))
    infer.update({"bundle_root": str(bundle), **{k: v for k, v in TINY[bundle].items() if k != "dataset_dir"
                                                 and "val" not in k}})
    net = infer.get_parsed_content("network_def")
    net.load_state_dict(state)
