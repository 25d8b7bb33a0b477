"""RCB-UNet++ and its blocks: shapes in 2D and 3D, the attention formulas, deep supervision, TorchScript."""

import pytest
import torch
from monai.networks.blocks import UnetResBlock

from custom_networks.blocks import CBAM, ChannelAttention, SpatialAttention
from custom_networks.nets import RCBUNetPlusPlus

TINY = (4, 8, 8, 16, 16)


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 16, 12, 10)), (3, (2, 16, 6, 5, 4))])
def test_cbam_keeps_shape(spatial_dims, shape):
    assert CBAM(spatial_dims, 16)(torch.rand(shape)).shape == shape


def test_channel_attention_matches_cbam_equation():
    gate = ChannelAttention(2, channels=4, reduction=2)
    x = torch.randn(1, 4, 5, 5)
    mlp = gate.mlp
    w = torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    torch.testing.assert_close(gate(x), x * w)


def test_channel_attention_residual_adds_input():
    gate = ChannelAttention(2, channels=4, reduction=2, residual=True)
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(gate(x), x + x * gate.weights(x))


def test_spatial_attention_uses_channel_mean_and_max():
    gate = SpatialAttention(2, kernel_size=3)
    x = torch.randn(1, 6, 4, 4)
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
    torch.testing.assert_close(gate(x), x * torch.sigmoid(gate.conv(pooled)))


def test_spatial_attention_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        SpatialAttention(2, kernel_size=4)


def test_encoder_nodes_are_residual_blocks_followed_by_cbam():
    net = RCBUNetPlusPlus(2, features=TINY)
    for node in (net.x00, net.x10, net.x20, net.x30, net.x40):
        assert isinstance(node[-2], UnetResBlock) and isinstance(node[-1], CBAM)
    assert isinstance(net.x04.convs, UnetResBlock)


@pytest.mark.parametrize("spatial_dims, size", [(2, (32, 32)), (2, (24, 40)), (3, (16, 16, 16))])
def test_eval_output_has_input_size(spatial_dims, size):
    net = RCBUNetPlusPlus(spatial_dims, in_channels=1, out_channels=2, features=TINY).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, *size)).shape == (1, 2, *size)


def test_training_mode_returns_four_stacked_heads():
    net = RCBUNetPlusPlus(2, features=TINY).train()
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 4, 1, 32, 32)


def test_eval_output_is_mean_of_heads_or_last_head():
    torch.manual_seed(0)
    net = RCBUNetPlusPlus(2, features=TINY)
    x = torch.rand(1, 1, 32, 32)
    net.eval()
    net.training = True  # heads of the eval-mode (running-stat) network, stacked
    with torch.no_grad():
        for m in net.modules():
            if m is not net:
                m.eval()
        heads = net(x)
        net.training = False
        torch.testing.assert_close(net(x), heads.mean(dim=1))
        net.eval_mean = False
        torch.testing.assert_close(net(x), heads[:, -1])


def test_scripted_network_matches_eager():
    net = RCBUNetPlusPlus(2, features=TINY).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_rejects_wrong_number_of_features():
    with pytest.raises(ValueError, match="5 entries"):
        RCBUNetPlusPlus(2, features=(4, 8, 16))
