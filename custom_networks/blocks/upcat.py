"""MONAI's ``UpCat`` with a forward pass that ``torch.compile`` can trace whole.

MONAI's ``monai.networks.nets.basic_unet.UpCat`` always calls ``F.pad(x, sp, "replicate")``, with zero padding when
the up-sampled and skip features already match, and tests ``torch.jit.isinstance`` on the skip input. Under
``torch.compile`` the latter breaks the graph at every decoder stage (the resumed frames are recompiled per
feature size until dynamo's recompile limit), and the backward of a zero-size ``replication_pad2d`` fails in
inductor's fake-tensor check for channels-last inputs (torch 2.13). The class below is MONAI's block (same
submodules, so the same state-dict keys) whose ``forward`` pads only when a size differs (odd input sizes after
2x pooling), which is what the padding is for.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from monai.networks.nets.basic_unet import UpCat as _MonaiUpCat

__all__ = ["UpCat"]


class UpCat(_MonaiUpCat):
    """Up-sample ``x``, pad it to the skip features' size where they differ by one (odd sizes), concatenate
    ``[x_e, up(x)]`` on channels and apply ``self.convs`` (MONAI's ``TwoConv`` unless a subclass replaces it).

    Same arguments as MONAI's ``UpCat``. Shapes: ``x`` ``(B, in_chns, *S)``, ``x_e`` ``(B, cat_chns, *2S[+1])``
    or ``None`` -> ``(B, out_chns, *size of x_e)`` (``*2S`` without ``x_e``).
    """

    def forward(self, x: torch.Tensor, x_e: Optional[torch.Tensor]) -> torch.Tensor:  # noqa: UP045 (TorchScript)
        x_0 = self.upsample(x)
        if x_e is None:
            return self.convs(x_0)
        if self.is_pad:
            pad: list[int] = []
            needed = False
            for i in range(x.dim() - 2):  # F.pad lists the last dimension first
                extra = int(x_e.shape[-i - 1] - x_0.shape[-i - 1])
                pad += [0, extra]
                needed = needed or extra != 0
            if needed:
                x_0 = F.pad(x_0, pad, "replicate")
        return self.convs(torch.cat([x_e, x_0], dim=1))
