"""Tests of IA-CNN and its blocks: scale feature attention, affinity (spatial) attention, channel attention reuse."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceCELoss

from custom_networks.blocks import AffinityAttention, ScaleFeatureAttention
from custom_networks.blocks.cbam import ChannelAttention
from custom_networks.blocks.upcat import UpCat
from custom_networks.nets import IACNN

SMALL = (4, 8, 16, 32, 64)


@pytest.fixture(scope="module")
def default_net() -> IACNN:
    torch.manual_seed(0)
    return IACNN().eval()


# ---------------------------------------------------------------- scale feature attention


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 3, 16, 12)), (3, (1, 3, 8, 6, 4))])
def test_sfa_maps_in_channels_to_out_channels_at_same_size(spatial_dims, shape):
    block = ScaleFeatureAttention(spatial_dims, in_channels=3, out_channels=5)
    assert block(torch.rand(shape)).shape == (shape[0], 5, *shape[2:])


def test_sfa_branches_are_1x1_then_3x3_chains_of_lengths_3_2_1():
    block = ScaleFeatureAttention(2, 3, 5)
    kernels = [[conv.conv.kernel_size for conv in b] for b in (block.branch1, block.branch2, block.branch3)]
    assert kernels == [[(1, 1), (3, 3), (3, 3)], [(1, 1), (3, 3)], [(1, 1)]]


@pytest.mark.parametrize("kept", ["branch1", "branch2", "branch3"])
def test_sfa_output_is_sum_of_branches_so_zeroing_two_leaves_the_third(kept):
    torch.manual_seed(0)
    block = ScaleFeatureAttention(2, 3, 6).eval()
    for name in {"branch1", "branch2", "branch3"} - {kept}:
        for p in getattr(block, name)[-1].parameters():  # last conv + norm of the branch: output exactly 0
            torch.nn.init.zeros_(p)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        expected = getattr(block, kept)(x)
        assert expected.abs().sum() > 0
        torch.testing.assert_close(block(x), expected)


# ---------------------------------------------------------------- affinity (spatial) attention


@pytest.mark.parametrize("shape", [(2, 6, 8, 8), (1, 4, 4, 6, 5)])
def test_affinity_attention_preserves_shape_in_2d_and_3d(shape):
    att = AffinityAttention()
    x = torch.rand(shape)
    assert att(x).shape == x.shape
    assert att.weights(x).shape == (shape[0], shape[1], shape[1])


def test_affinity_attention_matches_hand_computation():
    # channel 0 = [1, 1, 1, 1], channel 1 = [2, 0, 0, 0] over N = 4 pixels (2 x 2), C = 2.
    x = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 0.0]]]])
    # affinity / N: <c0,c0> = 4/4 = 1, <c0,c1> = 2/4 = 0.5, <c1,c1> = 4/4 = 1
    s1, s05 = 1 / (1 + math.exp(-1.0)), 1 / (1 + math.exp(-0.5))
    c0, c1 = torch.tensor([1.0, 1, 1, 1]), torch.tensor([2.0, 0, 0, 0])
    expected = torch.stack(
        [c0 + (s1 * c0 + s05 * c1) / 2, c1 + (s05 * c0 + s1 * c1) / 2]  # out = x + alpha @ X / C
    ).reshape(1, 2, 2, 2)
    att = AffinityAttention()
    torch.testing.assert_close(att.weights(x), torch.tensor([[[s1, s05], [s05, s1]]]))
    torch.testing.assert_close(att(x), expected)


def test_affinity_attention_sqrt_scaling_divides_by_sqrt_n():
    x = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]], [[2.0, 0.0], [0.0, 0.0]]]])
    expected = torch.sigmoid(torch.tensor([[[4.0, 2.0], [2.0, 4.0]]]) / 2.0)  # sqrt(4) = 2
    torch.testing.assert_close(AffinityAttention("sqrt").weights(x), expected)


def test_affinity_attention_memory_is_c_squared_so_256x256_runs():
    # the literal pixel affinity would be 65536**2 floats (17 GB); the channel affinity is 8 x 8.
    x = torch.rand(1, 8, 256, 256)
    att = AffinityAttention()
    with torch.no_grad():
        assert att.weights(x).shape == (1, 8, 8)
        assert att(x).shape == x.shape


def test_affinity_mean_scaling_does_not_saturate_at_256x256_but_raw_product_does():
    x = torch.rand(1, 8, 256, 256)  # non-negative, like post-ReLU features
    assert AffinityAttention("mean").weights(x).max() < 0.8
    assert AffinityAttention("none").weights(x).min() == 1.0


@pytest.mark.parametrize(
    "block, shape",
    [(ScaleFeatureAttention(3, 2, 4), (1, 2, 4, 4, 4)), (AffinityAttention(), (2, 3, 4, 5, 6))],
    ids=["sfa-3d", "affinity-3d"],
)
def test_blocks_scripted_equal_eager_in_eval(block, shape):
    block.eval()
    x = torch.rand(shape)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(block)(x), block(x))


def test_affinity_attention_rejects_unknown_normalize():
    with pytest.raises(ValueError, match="normalize"):
        AffinityAttention("softmax")


# ---------------------------------------------------------------- IA-CNN


def test_iacnn_channel_attention_is_residual_cbam_gate_on_three_deepest_decoder_stages(default_net):
    gates = [m for m in default_net.modules() if isinstance(m, ChannelAttention)]
    assert len(gates) == 3 and all(g.residual for g in gates)
    for k, stage in enumerate(default_net.decoder):
        kinds = [type(m) for m in stage.attention.children()]
        assert kinds == ([AffinityAttention, ChannelAttention] if k < 3 else [])  # SA then CA


@pytest.mark.parametrize("stages", [0, 5])
def test_iacnn_attention_stages_sets_number_of_attended_decoder_stages(stages):
    net = IACNN(channels=SMALL, attention_stages=stages)
    assert sum(isinstance(m, AffinityAttention) for m in net.modules()) == stages
    assert sum(isinstance(m, ChannelAttention) for m in net.modules()) == stages


def test_iacnn_has_five_sfa_encoder_stages_and_sfa_bottleneck(default_net):
    assert len(default_net.encoder) == 5 and len(default_net.decoder) == 5
    assert sum(isinstance(m, ScaleFeatureAttention) for m in default_net.modules()) == 6


def test_iacnn_2d_output_has_input_spatial_size(default_net):
    with torch.no_grad():
        assert default_net(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_iacnn_3d_output_has_input_spatial_size():
    net = IACNN(spatial_dims=3, in_channels=1, out_channels=2, channels=SMALL).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 32, 32, 32)).shape == (1, 2, 32, 32, 32)


def test_iacnn_scripted_equals_eager_in_eval():
    torch.manual_seed(0)
    net = IACNN(channels=SMALL).eval()
    scripted = torch.jit.script(net)
    x = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x))


@pytest.mark.parametrize("shape", [(1, 3, 48, 64), (1, 3, 64, 40)])
def test_iacnn_rejects_spatial_size_not_divisible_by_32(shape):
    net = IACNN(channels=SMALL)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*5 = 32"):
        net(torch.rand(shape))


def test_iacnn_rejects_input_of_wrong_dimensionality():
    with pytest.raises(ValueError, match="expected a 4D input"):
        IACNN(channels=SMALL)(torch.rand(1, 3, 32, 32, 32))


@pytest.mark.parametrize(
    "kwargs", [{"spatial_dims": 1}, {"attention_stages": 6}, {"channels": ()}, {"channels": (4, 8, 12, 24, 48)}]
)
def test_iacnn_rejects_invalid_construction_arguments(kwargs):
    with pytest.raises(ValueError):
        IACNN(**kwargs)


def test_iacnn_decoder_stages_are_upcat_keeping_then_halving_the_channels(default_net):
    upcats = [stage.upcat for stage in default_net.decoder]
    assert all(isinstance(u, UpCat) for u in upcats)
    ups = [(u.upsample.deconv.in_channels, u.upsample.deconv.out_channels) for u in upcats]
    assert ups == [(512, 512), (512, 256), (256, 128), (128, 64), (64, 32)]


def test_iacnn_loads_a_checkpoint_saved_with_the_pre_upcat_decoder_keys_strictly():
    torch.manual_seed(0)
    source = IACNN(channels=SMALL).eval()
    renames = {".upcat.upsample.": ".up.", ".upcat.convs.conv_0.": ".fuse.0.", ".upcat.convs.conv_1.": ".fuse.1."}
    old = {}
    for key, value in source.state_dict().items():
        for new, before in renames.items():
            key = key.replace(new, before)
        old[key] = value
    assert "decoder.0.fuse.1.conv.weight" in old and "decoder.4.up.deconv.bias" in old
    net = IACNN(channels=SMALL).eval()
    net.load_state_dict(old, strict=True)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), source(x), rtol=0, atol=0)


def test_iacnn_bce_dice_loss_backpropagates_to_every_parameter():
    # (a gradient can still be exactly 0: with SMALL widths the channel MLP has 1 hidden ReLU unit, which may be dead)
    torch.manual_seed(0)
    net = IACNN(channels=SMALL)
    x, y = torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    loss = DiceCELoss(sigmoid=True)(net(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
