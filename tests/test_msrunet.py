"""MSR-UNet and its multi-scale residual unit: Res2Net's receptive fields, CBAM's channel gate, the residual sum,
the ablation units, shapes in 2D and 3D (odd sizes included), TorchScript and gradients."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss
from monai.networks.nets.basic_unet import TwoConv

from custom_networks.blocks import ChannelAttention, MultiScaleConv, MultiScaleResidualUnit
from custom_networks.nets import MSRUNet

TINY = (4, 8, 16, 32, 64)
ABLATIONS = [(unit, ca) for unit in ("plain", "residual", "multiscale") for ca in (False, True)]


def _positive_linear(module: torch.nn.Module) -> torch.nn.Module:
    """All conv weights positive and biases zero: no cancellation, so a gradient is non-zero exactly where the
    output depends on the input (with ``norm=None, act=None``, the block is linear)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(p.abs() + 0.1 if name.endswith("weight") else torch.zeros_like(p))
    return module


def _extent(grad: torch.Tensor) -> list[int]:
    """Side lengths of the bounding box of the non-zero entries of ``grad`` (B, C, spatial...)."""
    nz = grad.abs().sum(dim=(0, 1)).nonzero()
    return (nz.max(0).values - nz.min(0).values + 1).tolist()


# ---------------------------------------------------------------- multi-scale convolution (Res2Net eq. 1)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_res2net_groups_see_receptive_fields_1_3_5_7(spatial_dims):
    conv = _positive_linear(MultiScaleConv(spatial_dims, 2, 8, scales=4, norm=None, act=None))
    size = (15,) * spatial_dims
    centre = (slice(None), slice(None)) + (7,) * spatial_dims
    extents = []
    for k in range(4):
        x = torch.rand(1, 2, *size, requires_grad=True)
        conv.groups(x)[k][centre].sum().backward()
        extents.append(_extent(x.grad))
    assert extents == [[n] * spatial_dims for n in (1, 3, 5, 7)]


def test_res2net_hierarchy_follows_eq_1():
    torch.manual_seed(0)
    conv = MultiScaleConv(2, 3, 12, scales=3).eval()
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        x1, x2, x3 = torch.split(conv.conv_in(x), 4, dim=1)
        y2 = conv.convs[0](x2)
        y3 = conv.convs[1](x3 + y2)
        torch.testing.assert_close(conv(x), conv.conv_out(torch.cat([x1, y2, y3], dim=1)))


def test_res2net_rejects_width_not_divisible_by_scales_and_fewer_than_two_scales():
    with pytest.raises(ValueError, match="divisible by scales"):
        MultiScaleConv(2, 4, 10, scales=4)
    with pytest.raises(ValueError, match="scales must be >= 2"):
        MultiScaleConv(2, 4, 8, scales=1)


# ---------------------------------------------------------------- multi-scale residual unit


def test_unit_is_relu_of_gated_body_plus_projected_shortcut():
    torch.manual_seed(0)
    unit = MultiScaleResidualUnit(2, 3, 8, reduction=2).eval()
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        body = unit.body(x)
        gate = unit.attention
        expected = torch.relu(gate(body) + unit.shortcut(x))
        torch.testing.assert_close(unit(x), expected)
        assert unit.shortcut.conv.kernel_size == (1, 1)


def test_unit_channel_attention_is_cbams_gate():
    unit = MultiScaleResidualUnit(2, 8, 8, reduction=2)
    gate = unit.attention
    assert isinstance(gate, ChannelAttention) and not gate.residual
    x = torch.randn(2, 8, 6, 6)
    mlp = gate.mlp
    w = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))  # Woo et al. eq. 2
    torch.testing.assert_close(gate(x), x * w)


def test_unit_without_attention_and_equal_widths_is_relu_of_body_plus_identity():
    unit = MultiScaleResidualUnit(2, 8, 8, channel_attention=False).eval()
    assert isinstance(unit.attention, torch.nn.Identity) and isinstance(unit.shortcut, torch.nn.Identity)
    x = torch.randn(1, 8, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(unit(x), torch.relu(unit.body(x) + x))


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 3, 12, 10)), (3, (1, 3, 6, 5, 4))])
def test_unit_maps_in_to_out_channels_at_same_size(spatial_dims, shape):
    assert MultiScaleResidualUnit(spatial_dims, 3, 8)(torch.rand(shape)).shape == (shape[0], 8, *shape[2:])


# ---------------------------------------------------------------- MSR-UNet


@pytest.mark.parametrize("unit, channel_attention", ABLATIONS)
def test_every_ablation_builds_and_runs_with_the_asked_unit_and_gate(unit, channel_attention):
    net = MSRUNet(2, 1, 2, features=TINY, unit=unit, channel_attention=channel_attention).eval()
    kinds = {"plain": TwoConv, "residual": MultiScaleResidualUnit, "multiscale": MultiScaleResidualUnit}
    assert sum(isinstance(m, kinds[unit]) for m in net.modules()) == 9  # 5 encoder + 4 decoder units
    assert sum(isinstance(m, MultiScaleConv) for m in net.modules()) == (9 if unit == "multiscale" else 0)
    assert sum(isinstance(m, ChannelAttention) for m in net.modules()) == (9 if channel_attention else 0)
    with torch.no_grad():
        assert net(torch.rand(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_residual_ablation_unit_has_two_3x3_convs_as_body():
    net = MSRUNet(2, 1, 1, features=TINY, unit="residual")
    unit = net.encoder[0]
    assert [c.conv.kernel_size for c in unit.body] == [(3, 3), (3, 3)]


@pytest.mark.parametrize("spatial_dims, size", [(2, (32, 32)), (3, (16, 16, 16))])
def test_output_has_input_size_in_2d_and_3d(spatial_dims, size):
    net = MSRUNet(spatial_dims, in_channels=1, out_channels=3, features=TINY).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, *size)).shape == (1, 3, *size)


@pytest.mark.parametrize("size", [(33, 27), (17, 16), (16, 49)])
def test_odd_sizes_give_the_input_size_back(size):
    net = MSRUNet(2, 1, 1, features=TINY).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, *size)).shape == (1, 1, *size)


def test_rejects_spatial_size_smaller_than_the_deepest_pooling():
    with pytest.raises(ValueError, match="at least 2\\*\\*4 = 16"):
        MSRUNet(2, 1, 1, features=TINY)(torch.rand(1, 1, 15, 32))


def test_rejects_input_of_wrong_dimensionality():
    with pytest.raises(ValueError, match="expected a 4D input"):
        MSRUNet(2, 1, 1, features=TINY)(torch.rand(1, 1, 16, 16, 16))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"unit": "dense"}, "unit must be one of"),
        ({"features": (8,)}, "at least 2"),
        ({"features": (4, 6, 8)}, "divisible by scales"),
        ({"scales": 1}, "scales must be >= 2"),
    ],
)
def test_rejects_invalid_construction_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MSRUNet(**{"features": TINY, **kwargs})


def test_widths_not_divisible_by_scales_are_fine_for_other_units():
    assert MSRUNet(2, 1, 1, features=(4, 6, 10), unit="plain")(torch.rand(2, 1, 16, 16)).shape == (2, 1, 16, 16)


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 1, 32, 48)), (3, (1, 1, 16, 16, 16))])
def test_scripted_network_matches_eager(spatial_dims, shape):
    torch.manual_seed(0)
    net = MSRUNet(spatial_dims, 1, 2, features=TINY).eval()
    x = torch.rand(shape)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_bce_dice_loss_backpropagates_to_every_parameter():
    # (a gradient may still be exactly 0: with TINY widths the channel MLP has 1 hidden ReLU unit, which may be dead)
    torch.manual_seed(0)
    net = MSRUNet(2, 1, 1, features=TINY)
    x, y = torch.rand(2, 1, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    loss = DiceCELoss(sigmoid=True)(net(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert net.encoder[0].body.convs[-1].conv.weight.grad.abs().sum() > 0  # the deepest Res2Net group learns
