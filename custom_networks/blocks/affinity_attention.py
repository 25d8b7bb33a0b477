"""Affinity (self-similarity) attention: the tractable reading of the IA-CNN spatial attention.

"Medical image segmentation with a convolutional neural network based on integrated attention" (IA-CNN),
eqs. 5-6: ``alpha = sigmoid(x . x^T)``, ``out = x + x . alpha``. Taken over pixels this is an
``(HW) x (HW)`` matrix; this module computes it over channels (``C x C``), as the channel-attention
module of DANet (Fu et al., "Dual Attention Network for Scene Segmentation", CVPR 2019, arXiv:1809.02983).
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["AffinityAttention"]

_SCALE_POWERS = {"mean": 1.0, "sqrt": 0.5, "none": 0.0}


class AffinityAttention(nn.Module):
    """Parameter-free affinity attention, the IA-CNN "spatial attention" (eqs. 5-6) computed over channels.

    With ``X`` the input reshaped to ``(B, C, N)``, ``N = H * W[* D]``::

        A     = X X^T / N**p                    # (B, C, C) affinity, p set by ``normalize``
        alpha = sigmoid(A)                      # eq. 5
        out   = x + reshape(alpha @ X) / C      # eq. 6, alpha applied to X

    Departures from the paper, and why:

    - **C x C instead of N x N.** Read literally, eq. 5 multiplies the pixel-by-feature matrix by its
      transpose, an ``N x N`` matrix: at 256 x 256 that is 65536**2 = 4.3e9 entries (17 GB in float32 per
      image, per attention stage), intractable. The affinity is computed between channels instead
      (``C x C``, the DANet channel-attention form), so memory is ``O(C**2 + C N)``, linear in the
      number of pixels. Each output channel is a sigmoid-weighted mixture of all channels, every weight
      a similarity over the whole image, so the module still aggregates global context.
    - **Scaling of the affinity** (``normalize``). Raw dot products over ``N`` pixels grow with ``N``
      and saturate the sigmoid (``alpha`` becomes all ones, no gradient, no selectivity). The default,
      ``"mean"``, divides by ``N``: ``A_ij`` is then the mean product of channels ``i`` and ``j`` over the
      image (an uncentred second moment), of the order of the features themselves and independent of the
      input size and of 2D/3D. ``"sqrt"`` (``1/sqrt(N)``, the transformer scaling) only cancels the growth
      of *zero-mean, independent* sums; features after ReLU are non-negative with non-zero mean, so their
      dot products grow like ``N`` and at 256 x 256 a factor ~256 remains and the sigmoid still
      saturates. ``"none"`` is the paper's unscaled product, kept for comparison. A fixed factor keeps
      the module parameter-free, like eqs. 5-6. The factor is applied as ``N**(-p/2)`` to both operands
      before the product, so no intermediate is of size ``N`` (no float16 overflow).
    - **Aggregation divided by C.** Unlike DANet's softmax, the sigmoid rows of ``alpha`` do not sum to
      one, so ``alpha @ X`` would be up to ``C`` times larger than ``x`` (x512 at the deepest stage) and
      would drown the residual ``x`` and the decoder's skip features. Dividing by ``C`` makes it a
      weighted average of channels, of the scale of ``x``.

    Args:
        normalize: affinity scaling, ``"mean"`` (divide by ``N``, default), ``"sqrt"`` (by ``sqrt(N)``)
            or ``"none"``.

    Shapes:
        input ``(B, C, H, W[, D])``, output the same; any number of spatial dimensions.

    Raises:
        ValueError: if ``normalize`` is not one of the above.

    Example::

        >>> att = AffinityAttention()
        >>> att(torch.rand(2, 64, 32, 32)).shape
        torch.Size([2, 64, 32, 32])
    """

    def __init__(self, normalize: str = "mean") -> None:
        super().__init__()
        if normalize not in _SCALE_POWERS:
            raise ValueError(f"normalize must be one of {sorted(_SCALE_POWERS)}, got {normalize!r}.")
        self.normalize = normalize
        self.power: float = _SCALE_POWERS[normalize]

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights ``alpha = sigmoid(X X^T / N**p)`` in (0, 1), shape ``(B, C, C)``."""
        flat = x.flatten(2)
        flat = flat * float(flat.shape[-1]) ** (-0.5 * self.power)
        return torch.sigmoid(torch.bmm(flat, flat.transpose(1, 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.weights(x)
        attended = torch.bmm(alpha, x.flatten(2)) / x.shape[1]
        return x + attended.view_as(x)

    def extra_repr(self) -> str:
        return f"normalize={self.normalize!r}"
