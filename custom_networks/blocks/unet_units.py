"""Encoder/decoder units of a U-Net, registered by name, so that a U-Net is assembled around any of them.

A *unit* is what a U-Net level computes between two resolution changes: ``(B, in_channels, H, W[, D]) ->
(B, out_channels, H, W[, D])``. Every unit is built by ``builder(spatial_dims, in_channels, out_channels, act=...,
norm=..., dropout=..., **options)``; :func:`get_unit` looks the builder up by name:

- ``double_conv``: two ``3x3 conv, norm, act`` (MONAI ``basic_unet.TwoConv``); U-Net, Ronneberger et al. 2015,
  arXiv:1505.04597.
- ``residual``: two 3x3 convolutions with an identity (or 1x1 projection) shortcut, activation after the sum (MONAI
  ``UnetResBlock``); He et al. 2016, arXiv:1512.03385, in a U-Net: Zhang et al. 2018, arXiv:1711.10684.
- ``inception``: four parallel branches, concatenated (:class:`~custom_networks.blocks.inception.InceptionBlock`);
  Szegedy et al. 2015, arXiv:1409.4842.
- ``dense``: stem, DenseNet dense block, 1x1 transition (:class:`~custom_networks.blocks.dense.DenseUnit`, on MONAI's
  ``_DenseBlock``); Huang et al. 2017, arXiv:1608.06993.

Options of a unit (``options`` of :func:`get_unit`): ``inception``: ``dilation``; ``dense``: ``layers``,
``growth_rate``, ``bn_size``; ``double_conv`` and ``residual`` take none.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn
from monai.networks.blocks import UnetResBlock
from monai.networks.nets.basic_unet import TwoConv

from custom_networks.blocks.dense import DenseUnit
from custom_networks.blocks.inception import InceptionBlock

__all__ = ["get_unit", "register_unit", "unit_names"]


def _double_conv(spatial_dims: int, in_channels: int, out_channels: int, act, norm, dropout: float) -> nn.Module:
    # U-Net's level: two 3x3 conv-norm-act (no bias: a norm follows); MONAI's BasicUNet block.
    return TwoConv(spatial_dims, in_channels, out_channels, act=act, norm=norm, bias=False, dropout=dropout)


def _residual(spatial_dims: int, in_channels: int, out_channels: int, act, norm, dropout: float) -> nn.Module:
    # conv3-norm-act-conv3-norm, + identity (1x1 conv + norm where the width changes), act after the sum.
    return UnetResBlock(
        spatial_dims, in_channels, out_channels, kernel_size=3, stride=1, norm_name=norm, act_name=act,
        dropout=dropout if dropout > 0 else None,
    )


_UNITS: dict[str, Callable[..., nn.Module]] = {
    "double_conv": _double_conv,
    "residual": _residual,
    "inception": InceptionBlock,
    "dense": DenseUnit,
}


def unit_names() -> tuple[str, ...]:
    """Names accepted by :func:`get_unit`, in registration order."""
    return tuple(_UNITS)


def register_unit(name: str, builder: Callable[..., nn.Module]) -> None:
    """Make ``builder`` available as unit ``name`` (e.g. from a bundle's ``scripts/``).

    ``builder(spatial_dims, in_channels, out_channels, act=..., norm=..., dropout=..., **options)`` must return a
    module mapping ``(B, in_channels, *S)`` to ``(B, out_channels, *S)``.

    Raises:
        ValueError: if ``name`` is already registered (a built-in unit cannot be replaced by accident).
    """
    if name in _UNITS:
        raise ValueError(f"unit {name!r} is already registered; registered units: {unit_names()}.")
    _UNITS[name] = builder


def get_unit(
    name: str,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    act: tuple | str = "relu",
    norm: tuple | str = "batch",
    dropout: float = 0.0,
    **options,
) -> nn.Module:
    """Build the unit registered as ``name``.

    Args:
        name: one of :func:`unit_names` (``"double_conv"``, ``"residual"``, ``"inception"``, ``"dense"``).
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        act: activation, a MONAI ``Act`` name or ``(name, kwargs)``.
        norm: normalisation, a MONAI ``Norm`` name or ``(name, kwargs)``.
        dropout: dropout probability inside the unit, 0 for none.
        options: unit-specific keyword arguments (see the module docstring).

    Shapes:
        the unit maps ``(B, in_channels, H, W[, D])`` to ``(B, out_channels, H, W[, D])``.

    Raises:
        ValueError: if ``name`` is not registered (the message lists the registered names).
        TypeError: if ``options`` has a keyword the unit does not take.
    """
    if name not in _UNITS:
        raise ValueError(f"unit must be one of {unit_names()}, got {name!r}.")
    return _UNITS[name](spatial_dims, in_channels, out_channels, act=act, norm=norm, dropout=dropout, **options)
