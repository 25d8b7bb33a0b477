"""Test-time flip augmentation (tools.inferers.FlipTTAInferer)."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer

from tools.inferers import FlipTTAInferer


def biased_net(x: torch.Tensor) -> torch.Tensor:
    """Not flip-equivariant: adds a ramp along W, so flipping changes its output."""
    ramp = torch.linspace(0, 1, x.shape[-1]).view(1, 1, 1, -1)
    return x[:, :1] + ramp


def test_no_flips_is_the_plain_inferer():
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(FlipTTAInferer(SimpleInferer(), flips=[])(x, biased_net), biased_net(x))


def test_horizontal_flip_averages_the_output_and_its_unflipped_mirror():
    x = torch.rand(2, 3, 8, 8)
    out = FlipTTAInferer(SimpleInferer(), flips=[[3]])(x, biased_net)
    expected = (biased_net(x) + torch.flip(biased_net(torch.flip(x, (3,))), (3,))) / 2
    torch.testing.assert_close(out, expected)
    # the ramp and its mirror average to a constant 0.5 offset
    torch.testing.assert_close(out, x[:, :1] + 0.5)


def test_flip_equivariant_network_is_unchanged_by_four_flips():
    conv = torch.nn.Conv2d(3, 1, 1)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        out = FlipTTAInferer(SlidingWindowInferer((4, 4)), flips=[[2], [3], [2, 3]])(x, conv)
        torch.testing.assert_close(out, conv(x))


def test_deep_supervision_lists_are_averaged_elementwise():
    x = torch.rand(1, 1, 4, 4)
    out = FlipTTAInferer(flips=[[2]])(x, lambda t: [t, 2 * t])
    assert isinstance(out, list) and len(out) == 2
    torch.testing.assert_close(out[1], 2 * x)


def test_bad_axes_are_refused():
    with pytest.raises(ValueError, match="spatial axes"):
        FlipTTAInferer(flips=[[1]])
    with pytest.raises(ValueError, match="do not exist"):
        FlipTTAInferer(flips=[[4]])(torch.rand(1, 1, 4, 4), lambda t: t)
