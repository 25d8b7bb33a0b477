"""VariantUNet, its units and attention options, and the cascade: shapes, TorchScript, gradients, errors, sizes."""

from __future__ import annotations

import itertools

import pytest
import torch
from monai.networks.blocks import ChannelSELayer, SimpleASPP, UnetResBlock
from monai.networks.nets.attentionunet import AttentionBlock
from monai.networks.nets.basic_unet import TwoConv
from monai.networks.nets.densenet import _DenseBlock

from custom_networks.blocks import CBAM, DenseUnit, InceptionBlock, NoSkipGate, get_unit, register_unit, unit_names
from custom_networks.blocks import unet_units
from custom_networks.nets import CascadeUNet, VariantUNet, variant_cascade

TINY = (4, 8, 16, 32, 64)
SHALLOW = (4, 8, 16)  # where the behaviour does not depend on depth: faster to build, run and script
UNITS = ("double_conv", "residual", "inception", "dense")
SKIPS = (None, "attention_gate")
BLOCKS = (None, "cbam", "se")
BOTTLENECKS = (None, "aspp")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # these networks are a few thousand parameters: one thread is faster than two that wait for each other
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny(**kwargs) -> VariantUNet:
    return VariantUNet(**{"spatial_dims": 2, "in_channels": 3, "out_channels": 2, "features": TINY, **kwargs})


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize("unit, skip, block, bottleneck", list(itertools.product(UNITS, SKIPS, BLOCKS, BOTTLENECKS)))
def test_every_option_combination_gives_logits_of_input_size_2d(unit, skip, block, bottleneck):
    net = tiny(unit=unit, skip_attention=skip, block_attention=block, bottleneck=bottleneck).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 32, 32)).shape == (1, 2, 32, 32)


@pytest.mark.parametrize("unit, skip, block, bottleneck", [
    ("double_conv", None, None, None),
    ("residual", "attention_gate", "cbam", "aspp"),
    ("inception", "attention_gate", "se", None),
    ("dense", None, "cbam", "aspp"),
])
def test_3d_options_give_logits_of_input_size(unit, skip, block, bottleneck):
    net = VariantUNet(3, 1, 2, TINY, unit=unit, skip_attention=skip, block_attention=block, bottleneck=bottleneck)
    with torch.no_grad():
        assert net.eval()(torch.rand(1, 1, 16, 16, 16)).shape == (1, 2, 16, 16, 16)


@pytest.mark.parametrize("act", ["relu", "leakyrelu", "prelu", "elu", "gelu", "mish", "swish",
                                 ("leakyrelu", {"negative_slope": 0.1})])
def test_every_activation_builds_and_runs(act):
    with torch.no_grad():
        assert tiny(features=SHALLOW, act=act, unit="residual").eval()(torch.rand(1, 3, 8, 8)).shape == (1, 2, 8, 8)


@pytest.mark.parametrize("norm", ["instance", ("group", {"num_groups": 2})])
def test_other_norms_build_and_run(norm):
    with torch.no_grad():
        assert tiny(features=SHALLOW, norm=norm).eval()(torch.rand(1, 3, 8, 8)).shape == (1, 2, 8, 8)


def test_three_levels_need_inputs_divisible_by_4_only():
    net = tiny(features=(4, 8, 16)).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 12, 20)).shape == (1, 2, 12, 20)


# ---------------------------------------------------------------- structure


def test_units_are_the_named_monai_and_project_blocks():
    kinds = {"double_conv": TwoConv, "residual": UnetResBlock, "inception": InceptionBlock, "dense": DenseUnit}
    for name, kind in kinds.items():
        net = tiny(unit=name)
        assert all(isinstance(stage[-2], kind) for stage in net.encoder)
        assert all(isinstance(stage.unit, kind) for stage in net.decoder)


def test_block_attention_follows_units_at_the_named_positions():
    enc = tiny(block_attention="cbam", attention_positions=("encoder",))
    assert [isinstance(s[-1], CBAM) for s in enc.encoder] == [True] * 5
    assert not any(isinstance(s.attention, CBAM) for s in enc.decoder)
    dec = tiny(block_attention="se", attention_positions="decoder")
    assert not any(isinstance(m, ChannelSELayer) for m in dec.encoder.modules())
    assert [isinstance(s.attention, ChannelSELayer) for s in dec.decoder] == [True] * 4


def test_skip_attention_gates_every_skip_with_monai_attention_block():
    assert all(isinstance(s.gate, AttentionBlock) for s in tiny(skip_attention="attention_gate").decoder)
    assert all(isinstance(s.gate, NoSkipGate) for s in tiny().decoder)


def test_aspp_is_monai_simple_aspp_after_deepest_level():
    net = tiny(bottleneck="aspp")
    assert isinstance(net.bottleneck, SimpleASPP)
    assert [c.dilation for c in net.bottleneck.convs] == [(1, 1), (2, 2), (4, 4), (6, 6)]


def test_inception_block_splits_width_over_four_branches_and_dilates_the_fifth_order_branch():
    block = InceptionBlock(2, 3, 10)
    x = torch.rand(1, 3, 8, 8)
    widths = [b(x).shape[1] for b in (block.branch1, block.branch2, block.branch3, block.branch4)]
    assert widths == [4, 2, 2, 2]
    assert [c.conv.kernel_size for c in block.branch3] == [(1, 1), (3, 3), (3, 3)]  # 5x5 as two 3x3
    dilated = InceptionBlock(2, 3, 8, dilation=2)
    assert [c.conv.dilation for c in dilated.branch3] == [(1, 1), (2, 2)]
    assert dilated(x).shape == (1, 8, 8, 8)


def test_dense_unit_uses_monai_dense_block_growing_to_twice_its_width():
    unit = DenseUnit(2, 3, 8)
    assert isinstance(unit.dense, _DenseBlock) and len(unit.dense) == 4
    assert unit.dense(torch.rand(1, 8, 4, 4)).shape[1] == 16  # 8 + 4 layers * growth 2
    assert unit(torch.rand(1, 3, 4, 4)).shape == (1, 8, 4, 4)


def test_unit_options_reach_the_unit():
    net = tiny(unit="dense", unit_options={"layers": 2, "growth_rate": 3})
    assert len(net.encoder[0][0].dense) == 2 and net.encoder[0][0].transition.conv.in_channels == 4 + 2 * 3


# ---------------------------------------------------------------- deep supervision


def test_deep_supervision_stacks_main_then_auxiliary_heads_in_training_only():
    torch.manual_seed(0)
    net = tiny(features=(4, 8, 16, 32), deep_supervision=True).train()
    x = torch.rand(2, 3, 16, 16)
    out = net(x)
    assert out.shape == (2, 3, 2, 16, 16)  # main + heads at 1/2, 1/4
    net.deep_supervision = False
    torch.testing.assert_close(out[:, 0], net(x))  # same batch statistics, same main head
    net.deep_supervision = True
    assert net.eval()(x).shape == (2, 2, 16, 16)


# ---------------------------------------------------------------- TorchScript


@pytest.mark.parametrize("kwargs", [
    {},
    {"unit": "residual", "skip_attention": "attention_gate", "block_attention": "cbam", "act": "mish"},
    {"unit": "inception", "block_attention": "se", "bottleneck": "aspp", "unit_options": {"dilation": 2}},
    {"unit": "dense", "act": "prelu", "deep_supervision": True},
], ids=["double_conv", "residual-gate-cbam-mish", "inception-dilated-se-aspp", "dense-prelu-ds"])
def test_scripted_network_equals_eager(kwargs):
    torch.manual_seed(0)
    net = tiny(features=SHALLOW, **kwargs).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_scripted_network_keeps_deep_supervision_in_training():
    net = tiny(features=SHALLOW, deep_supervision=True)
    assert torch.jit.script(net).train()(torch.rand(2, 3, 16, 16)).shape == (2, 2, 2, 16, 16)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("unit", UNITS)
def test_gradients_reach_every_parameter_with_all_options_on(unit):
    # (a gradient may be exactly 0, e.g. a dead ReLU in a 1-unit CBAM/SE hidden layer; it must exist and be finite)
    torch.manual_seed(0)
    net = tiny(features=(8, 16, 32), unit=unit, skip_attention="attention_gate", block_attention="cbam",
               bottleneck="aspp", dropout=0.1, deep_supervision=True, act="leakyrelu")
    net(torch.rand(2, 3, 16, 16)).square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("kwargs, message", [
    ({"spatial_dims": 1}, r"spatial_dims must be one of \(2, 3\), got 1"),
    ({"unit": "resnet"}, r"unit must be one of \('double_conv', 'residual', 'inception', 'dense'.*got 'resnet'"),
    ({"skip_attention": "gate"}, r"skip_attention must be one of \(None, 'attention_gate'\), got 'gate'"),
    ({"block_attention": "eca"}, r"block_attention must be one of \(None, 'cbam', 'se'\), got 'eca'"),
    ({"bottleneck": "dilated"}, r"bottleneck must be one of \(None, 'aspp'\), got 'dilated'"),
    ({"attention_positions": ("encoder", "skip")},
     r"attention_positions entries must be one of \('encoder', 'decoder'\), got 'skip'"),
    ({"act": "tanh"},
     r"act must be one of \('relu', 'leakyrelu', 'prelu', 'elu', 'gelu', 'mish', 'swish'\), got 'tanh'"),
    ({"norm": "layer"}, r"norm must be one of \('batch', 'instance', 'group'\), got 'layer'"),
    ({"features": (8,)}, r"features must have at least 2 positive widths"),
    ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ({"bottleneck": "aspp", "features": (4, 8, 18)}, r"features\[-1\] = 18 divisible by len\(aspp_dilations\) = 4"),
    ({"unit": "inception", "features": (2, 8)}, r"out_channels must be >= 4"),
    ({"unit": "dense", "unit_options": {"layers": 0}}, r"layers must be a positive integer"),
])
def test_wrong_arguments_raise_value_error_naming_argument_and_allowed_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_unknown_unit_option_raises_type_error():
    with pytest.raises(TypeError):
        tiny(unit="double_conv", unit_options={"dilation": 2})


@pytest.mark.parametrize("shape, message", [((1, 3, 32, 24), "divisible by 2\\*\\*4 = 16"),
                                            ((1, 3, 32, 32, 32), "expected a 4D input")])
def test_forward_rejects_inputs_it_cannot_segment(shape, message):
    with pytest.raises(ValueError, match=message):
        tiny()(torch.rand(shape))


def test_registered_unit_is_available_by_name_and_duplicates_are_refused():
    def plain(spatial_dims, in_channels, out_channels, act, norm, dropout):
        return torch.nn.Conv2d(in_channels, out_channels, 3, padding=1)

    register_unit("plain_conv_test", plain)
    try:
        assert "plain_conv_test" in unit_names()
        assert tiny(features=SHALLOW, unit="plain_conv_test").eval()(torch.rand(1, 3, 8, 8)).shape == (1, 2, 8, 8)
        with pytest.raises(ValueError, match="already registered"):
            register_unit("residual", plain)
    finally:
        unet_units._UNITS.pop("plain_conv_test")
    with pytest.raises(ValueError, match="unit must be one of"):
        get_unit("plain_conv_test", 2, 3, 4)


# ---------------------------------------------------------------- parameter counts


def test_activation_choice_changes_parameters_only_for_prelu():
    base = n_params(tiny())
    assert n_params(tiny(act="leakyrelu")) == n_params(tiny(act="mish")) == base
    prelu = tiny(act="prelu")
    assert n_params(prelu) == base + sum(isinstance(m, torch.nn.PReLU) for m in prelu.modules())  # 1 slope each


def test_residual_unit_adds_exactly_its_projection_shortcuts():
    res = tiny(unit="residual")
    shortcuts = sum(n_params(b.conv3) + n_params(b.norm3) for b in res.modules() if isinstance(b, UnetResBlock))
    assert n_params(res) - n_params(tiny()) == shortcuts > 0


def test_options_add_exactly_their_blocks_parameters():
    base = n_params(tiny())
    gated = tiny(skip_attention="attention_gate")
    assert n_params(gated) - base == sum(n_params(m) for m in gated.modules() if isinstance(m, AttentionBlock))
    cbam = tiny(block_attention="cbam")
    assert n_params(cbam) - base == sum(n_params(m) for m in cbam.modules() if isinstance(m, CBAM))
    assert sum(isinstance(m, CBAM) for m in cbam.modules()) == 5 + 4
    encoder_only = tiny(block_attention="se", attention_positions=("encoder",))
    assert base < n_params(encoder_only) < n_params(tiny(block_attention="se"))
    aspp = tiny(bottleneck="aspp")
    assert n_params(aspp) - base == n_params(aspp.bottleneck)
    deep = tiny(deep_supervision=True)
    assert n_params(deep) - base == sum((f * 2 + 2) for f in TINY[1:4])  # 1x1 heads at levels 1..3, 2 outputs


def test_unit_sizes_order_at_equal_widths():
    sizes = {u: n_params(tiny(unit=u)) for u in UNITS}
    assert sizes["inception"] < sizes["double_conv"] < sizes["residual"] < sizes["dense"]


# ---------------------------------------------------------------- cascade


def test_cascade_stage2_sees_image_and_stage1_probabilities():
    net = variant_cascade(2, in_channels=3, out_channels=2, features=(4, 8, 16))
    assert net.stage1.encoder[0][0].conv_0.conv.in_channels == 3
    assert net.stage2.encoder[0][0].conv_0.conv.in_channels == 5
    x = torch.rand(2, 3, 16, 16)
    assert net.train()(x).shape == (2, 2, 2, 16, 16)  # stage 2, stage 1
    assert net.eval()(x).shape == (2, 2, 16, 16)


def test_cascade_output_is_stage2_of_image_and_sigmoid_or_softmax_of_stage1():
    torch.manual_seed(0)
    s1, s2 = tiny(features=(4, 8)).eval(), VariantUNet(2, 5, 2, (4, 8)).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        for activation, act in (("sigmoid", torch.sigmoid), ("softmax", lambda t: torch.softmax(t, 1))):
            net = CascadeUNet(s1, s2, activation=activation).eval()
            torch.testing.assert_close(net(x), s2(torch.cat([x, act(s1(x))], dim=1)))


def test_cascade_detach_keeps_stage2_loss_out_of_stage1():
    for detach, reaches in ((True, False), (False, True)):
        net = variant_cascade(2, 3, 1, features=(4, 8), detach_stage1=detach, deep_supervision=False)
        net(torch.rand(2, 3, 8, 8)).mean().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.stage1.parameters()) == reaches


def test_cascade_stage_options_override_common_ones():
    net = variant_cascade(2, 3, 1, features=(4, 8, 16), unit="residual", stage2={"skip_attention": "attention_gate"})
    assert isinstance(net.stage1.encoder[0][0], UnetResBlock) and isinstance(net.stage2.encoder[0][0], UnetResBlock)
    assert isinstance(net.stage1.decoder[0].gate, NoSkipGate) and isinstance(net.stage2.decoder[0].gate, AttentionBlock)


@pytest.mark.parametrize("kwargs, message", [
    ({"stage1": {"in_channels": 4}}, "stage1 options must not set"),
    ({"deep_supervision": True, "stage2": {"out_channels": 3}}, "stage2 options must not set"),
    ({"activation": "relu"}, r"activation must be one of \('sigmoid', 'softmax'\)"),
])
def test_cascade_rejects_options_it_wires_and_unknown_activation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        variant_cascade(2, 3, 1, features=(4, 8), **kwargs)


def test_scripted_cascade_equals_eager():
    torch.manual_seed(0)
    net = variant_cascade(2, 3, 1, features=(4, 8, 16), skip_attention="attention_gate").eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))
