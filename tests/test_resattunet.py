from __future__ import annotations

import pytest
import torch

from monai.networks.nets import ResNet
from monai.networks.nets.resnet import ResNetBlock

from custom_networks.nets.resattunet import ResAttUNet, load_torchvision_resnet34

# small but complete configurations to keep the tests fast
SMALL_2D = {"layers": (2, 2, 2, 2), "channels": (8, 16, 32, 64), "decoder_channels": (32, 16, 8, 8)}
# one identity block (layer2.1) is enough to cover both block kinds when scripting
TINY_2D = {"layers": (1, 2, 1, 1), "channels": (8, 16, 32, 64), "decoder_channels": (32, 16, 8, 8)}
SMALL_3D = {"layers": (1, 1, 1, 1), "channels": (4, 8, 16, 32), "decoder_channels": (16, 8, 4, 4)}
# a full-width ResNet34 encoder with a thin decoder: enough for the torchvision key mapping
RESNET34_THIN_DECODER = {"decoder_channels": (8, 8, 8, 8)}


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def fake_torchvision_resnet34(num_batches_tracked: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the keys and shapes of torchvision's ``resnet34().state_dict()``."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def bn(prefix: str, c: int) -> None:
        sd[f"{prefix}.weight"] = torch.rand(c, generator=gen)
        sd[f"{prefix}.bias"] = torch.randn(c, generator=gen)
        sd[f"{prefix}.running_mean"] = torch.randn(c, generator=gen)
        sd[f"{prefix}.running_var"] = torch.rand(c, generator=gen) + 0.5
        if num_batches_tracked:
            sd[f"{prefix}.num_batches_tracked"] = torch.tensor(123)

    sd["conv1.weight"] = torch.randn(64, 3, 7, 7, generator=gen)
    bn("bn1", 64)
    inplanes = 64
    for i, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for j in range(blocks):
            p = f"layer{i}.{j}"
            sd[f"{p}.conv1.weight"] = torch.randn(planes, inplanes, 3, 3, generator=gen)
            bn(f"{p}.bn1", planes)
            sd[f"{p}.conv2.weight"] = torch.randn(planes, planes, 3, 3, generator=gen)
            bn(f"{p}.bn2", planes)
            if j == 0 and i > 1:
                sd[f"{p}.downsample.0.weight"] = torch.randn(planes, inplanes, 1, 1, generator=gen)
                bn(f"{p}.downsample.1", planes)
            inplanes = planes
    sd["fc.weight"] = torch.randn(1000, 512, generator=gen)
    sd["fc.bias"] = torch.randn(1000, generator=gen)
    return sd


@pytest.fixture(scope="module")
def tv_state_dict() -> dict[str, torch.Tensor]:
    return fake_torchvision_resnet34()


def test_default_2d_output_has_input_size_and_out_channels():
    net = ResAttUNet().eval()
    with torch.no_grad():
        y = net(torch.rand(1, 3, 64, 64))
    assert y.shape == (1, 1, 64, 64)


def test_3d_output_has_input_size_and_out_channels():
    net = ResAttUNet(spatial_dims=3, in_channels=1, out_channels=2, **SMALL_3D).eval()
    with torch.no_grad():
        y = net(torch.rand(1, 1, 32, 32, 64))
    assert y.shape == (1, 2, 32, 32, 64)


@pytest.mark.parametrize("residual_encoder", [True, False])
@pytest.mark.parametrize("attention_gates", [True, False])
def test_all_four_variants_build_and_run(residual_encoder, attention_gates):
    net = ResAttUNet(
        in_channels=3, out_channels=2, residual_encoder=residual_encoder, attention_gates=attention_gates, **SMALL_2D
    ).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 3, 64, 32))
    assert y.shape == (2, 2, 64, 32)
    assert torch.isfinite(y).all()


def test_attention_gates_add_exactly_the_gate_parameters():
    with_gates = ResAttUNet(attention_gates=True, **SMALL_2D)
    without = ResAttUNet(attention_gates=False, **SMALL_2D)
    ch, dec = SMALL_2D["channels"], SMALL_2D["decoder_channels"]
    expected = 0
    for f_g, f_l in zip(dec, (ch[2], ch[1], ch[0], ch[0])):
        f_int = f_l // 2
        # W_g: 1x1 conv (+bias) + BN; W_x: 1x1 conv (+bias) + BN; psi: 1x1 conv to 1 (+bias) + BN(1)
        expected += (f_g * f_int + f_int + 2 * f_int) + (f_l * f_int + f_int + 2 * f_int) + (f_int + 1 + 2)
    assert n_params(with_gates) - n_params(without) == expected


def test_plain_encoder_differs_from_resnet_only_by_projection_shortcuts():
    res = ResAttUNet(residual_encoder=True, **SMALL_2D)
    plain = ResAttUNet(residual_encoder=False, **SMALL_2D)
    ch = SMALL_2D["channels"]
    shortcuts = sum(c_in * c_out + 2 * c_out for c_in, c_out in zip(ch[:-1], ch[1:]))  # 1x1 conv + BN
    assert n_params(res) - n_params(plain) == shortcuts


def test_encoder_is_monais_resnet34_without_classifier():
    enc = ResAttUNet().encoder
    assert isinstance(enc, ResNet) and enc.fc is None
    assert [len(enc.layer1), len(enc.layer2), len(enc.layer3), len(enc.layer4)] == [3, 4, 6, 3]
    assert sum(isinstance(m, ResNetBlock) for m in enc.modules()) == 3 + 4 + 6 + 3
    assert enc.conv1.stride == (2, 2) and enc.layer2[0].downsample[0].bias is None  # torchvision's option B


def test_encoder_stages_take_the_networks_norm_and_activation():
    net = ResAttUNet(norm=("group", {"num_groups": 4}), act="prelu", **SMALL_2D)
    block = net.encoder.layer2[0]
    assert isinstance(block.bn2, torch.nn.GroupNorm) and isinstance(block.downsample[1], torch.nn.GroupNorm)
    assert isinstance(block.act, torch.nn.PReLU)


def test_norm_without_affine_parameters_is_rejected_naming_the_alternative():
    with pytest.raises(ValueError, match="affine"):
        ResAttUNet(norm="instance", **SMALL_2D)


def test_default_encoder_has_resnet34_parameter_count():
    # torchvision resnet34 has 21,797,672 parameters, of which fc has 512 * 1000 + 1000
    assert n_params(ResAttUNet().encoder) == 21_797_672 - 513_000


def test_torchscript_matches_eager_2d():
    net = ResAttUNet(**TINY_2D).eval()
    x = torch.rand(1, 3, 64, 64)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_torchscript_matches_eager_3d():
    net = ResAttUNet(spatial_dims=3, in_channels=1, **SMALL_3D).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_torchscript_without_attention_gates_matches_eager():
    net = ResAttUNet(attention_gates=False, residual_encoder=False, **TINY_2D).eval()
    x = torch.rand(1, 3, 32, 32)
    scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


def test_forward_rejects_spatial_size_not_divisible_by_32():
    net = ResAttUNet(**SMALL_2D)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*5 = 32"):
        net(torch.rand(1, 3, 64, 48))


def test_forward_rejects_wrong_number_of_dimensions():
    net = ResAttUNet(**SMALL_2D)
    with pytest.raises(ValueError, match="spatial dims"):
        net(torch.rand(1, 3, 32, 32, 32))


@pytest.mark.parametrize("kwargs", [{"spatial_dims": 1}, {"layers": (3, 4, 6)}, {"channels": (64, 128, 256, 0)}])
def test_constructor_rejects_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        ResAttUNet(**kwargs)


def test_load_torchvision_maps_keys_onto_encoder(tv_state_dict):
    net = ResAttUNet(**RESNET34_THIN_DECODER)
    loaded = load_torchvision_resnet34(net, tv_state_dict)
    enc = net.encoder
    assert torch.equal(enc.conv1.weight, tv_state_dict["conv1.weight"])
    assert torch.equal(enc.bn1.running_mean, tv_state_dict["bn1.running_mean"])
    assert torch.equal(enc.layer3[5].conv2.weight, tv_state_dict["layer3.5.conv2.weight"])
    assert torch.equal(enc.layer1[0].bn2.bias, tv_state_dict["layer1.0.bn2.bias"])
    assert torch.equal(enc.layer2[0].downsample[0].weight, tv_state_dict["layer2.0.downsample.0.weight"])
    assert torch.equal(enc.layer2[0].downsample[1].running_var, tv_state_dict["layer2.0.downsample.1.running_var"])
    assert int(enc.layer4[2].bn2.num_batches_tracked) == 123
    # every non-fc key was loaded, fc was ignored
    assert loaded == sorted(f"encoder.{k}" for k in tv_state_dict if not k.startswith("fc."))


def test_load_torchvision_accepts_dict_without_num_batches_tracked():
    # the released ImageNet resnet34 files predate num_batches_tracked
    sd = fake_torchvision_resnet34(num_batches_tracked=False)
    net = ResAttUNet(**RESNET34_THIN_DECODER)
    loaded = load_torchvision_resnet34(net, sd)
    assert len(loaded) == len(sd) - 2
    assert torch.equal(net.encoder.layer4[0].conv1.weight, sd["layer4.0.conv1.weight"])


def test_load_torchvision_shape_mismatch_raises_naming_the_key(tv_state_dict):
    sd = dict(tv_state_dict)
    sd["layer3.5.conv2.weight"] = torch.zeros(256, 256, 1, 1)
    net = ResAttUNet(**RESNET34_THIN_DECODER)
    with pytest.raises(ValueError, match=r"shape mismatches: layer3\.5\.conv2\.weight"):
        load_torchvision_resnet34(net, sd)


def test_load_torchvision_missing_and_unexpected_keys_raise(tv_state_dict):
    sd = dict(tv_state_dict)
    del sd["layer2.0.downsample.0.weight"]
    sd["layer5.0.conv1.weight"] = torch.zeros(1)
    net = ResAttUNet(**RESNET34_THIN_DECODER)
    with pytest.raises(ValueError, match=r"missing keys: layer2\.0\.downsample\.0\.weight") as err:
        load_torchvision_resnet34(net, sd)
    assert "unexpected keys: layer5.0.conv1.weight" in str(err.value)


def test_load_torchvision_into_3d_net_raises():
    net = ResAttUNet(spatial_dims=3, **SMALL_3D)
    with pytest.raises(ValueError, match="spatial_dims=3"):
        load_torchvision_resnet34(net, {})


def test_load_torchvision_from_file_and_constructor_path(tv_state_dict, tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(tv_state_dict, path)
    net = ResAttUNet(pretrained_path=str(path), **RESNET34_THIN_DECODER)
    assert torch.equal(net.encoder.layer3[5].conv2.weight, tv_state_dict["layer3.5.conv2.weight"])
    net2 = ResAttUNet(**RESNET34_THIN_DECODER)
    assert len(load_torchvision_resnet34(net2, path)) == len(tv_state_dict) - 2


def test_load_torchvision_single_channel_input_sums_stem_over_rgb(tv_state_dict):
    net = ResAttUNet(in_channels=1, **RESNET34_THIN_DECODER)
    load_torchvision_resnet34(net, tv_state_dict)
    torch.testing.assert_close(net.encoder.conv1.weight, tv_state_dict["conv1.weight"].sum(dim=1, keepdim=True))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"residual_encoder": False}, "residual_encoder=True"),
        ({"norm": ("instance", {"affine": True})}, "norm='batch'"),
    ],
)
def test_load_torchvision_into_incompatible_encoder_raises(kwargs, message):
    net = ResAttUNet(**SMALL_2D, **kwargs)
    with pytest.raises(ValueError, match=message):
        load_torchvision_resnet34(net, {})
