"""Colour fundus photographs (DRIVE retinal vessels): reading, the field-of-view (FOV) mask, the green channel with
CLAHE, and writing the vessel probability map beside the binary mask.

The fundus bundle's configs build these by ``_target_`` (``tools.pipelines.fundus.<name>``; they import the module
with ``$import tools.pipelines.fundus``). Every step is a MONAI transform or a small one defined here.

The usual preprocessing of vessel segmentation (e.g. Zana and Klein 2001; most DRIVE U-Nets since): the green
channel, where vessels have the most contrast, equalised with CLAHE (:class:`tools.training_options.CLAHEd`), then
normalised with the training split's mean and standard deviation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import (
    AsDiscreted,
    EnsureChannelFirstd,
    Lambdad,
    MapTransform,
    SaveImaged,
    ScaleIntensityRanged,
)

from tools.errors import OutputError
from tools.io import AtomicPILWriter
from tools.masks import mask_path
from tools.pipelines.rgb import rgb_reader
from tools.pipelines.slices import grey_reader
from tools.options import as_flag
from tools.runner import run_inference
from tools.training_options import CLAHEd
from tools.transforms import CheckBinaryMaskd, CheckedLoadImaged, CheckInputd

__all__ = ["FOV_THRESHOLD", "PROB_POSTFIX", "DeriveFOVd", "green_channel", "fundus_loading", "probability_path",
           "probability_saver", "run_fundus_inference"]

FOV_THRESHOLD = 0.1
"""Brightest-channel level (of [0, 1]) above which a pixel is in the derived FOV. On the 20 DRIVE training images
the derived FOV differs from the release's FOV masks on 0.17% of the pixels on average (0.72% at most)."""

PROB_POSTFIX = "prob"


class DeriveFOVd(MapTransform):
    """The FOV mask of a fundus photograph when none is given: ``max over channels of the image >= threshold``.

    Fundus cameras leave the area outside the circular aperture black; the brightest channel (red, in practice)
    separates it from the retina. A case that has its FOV mask (``fov_key`` present) keeps it.

    Args:
        image_key: the image, ``(C, H, W)`` in [0, 1] (before the green channel is taken).
        fov_key: where the FOV mask ``(1, H, W)`` in {0, 1} is read or written.
        threshold: :data:`FOV_THRESHOLD` by default.
    """

    def __init__(self, image_key: str = "image", fov_key: str = "fov", threshold: float = FOV_THRESHOLD) -> None:
        super().__init__([image_key], allow_missing_keys=False)
        self.image_key, self.fov_key, self.threshold = image_key, fov_key, float(threshold)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        if self.fov_key not in d:
            image = torch.as_tensor(d[self.image_key])  # a MetaTensor stays one: the FOV keeps the image's metadata
            d[self.fov_key] = (image.amax(dim=0, keepdim=True) >= self.threshold).to(torch.float32)
        return d


def green_channel(image):
    """The green channel ``(1, H, W)`` of an RGB image ``(3, H, W)`` (metadata kept)."""
    return image[1:2]


def fundus_loading(keys: Sequence[str] = ("image", "label", "fov"), clahe: bool = True, clahe_clip_limit: float = 0.01,
                   fov_threshold: float = FOV_THRESHOLD, allow_empty_label: bool = False) -> list:
    """Read a fundus photograph, its manual vessel mask and its FOV mask as the network sees them.

    Steps: load (image as RGB, grey pictures refused; masks as grey; read errors name the file), channel first,
    check 2D / channels / finite / non-empty vessel mask / masks of the image's size (errors name the file), image
    0..255 -> [0, 1], vessel mask checked to be 0/255 and binarised at 128, FOV mask binarised at 128 or, when the item
    has none, derived from the image (:class:`DeriveFOVd`), the green channel, CLAHE on it (``clahe``). Mean/std
    normalisation is left out so that intensity augmentation can come before it
    (:func:`tools.pipelines.rgb.normalization`).

    Args:
        keys: ``"image"``, optionally ``"label"`` (the manual vessel mask) and ``"fov"`` (the FOV mask; an item
            without it gets a derived one).
        clahe: equalise the green channel with CLAHE (:class:`tools.training_options.CLAHEd`, ``mode="channels"``).
        clahe_clip_limit: CLAHE's clip limit (scikit-image's, normalised; 0.01).
        fov_threshold: of :class:`DeriveFOVd`.
        allow_empty_label: accept an all-zero vessel mask.

    Returns:
        a list of transforms: ``image`` ``(1, H, W)`` in [0, 1], ``label`` and ``fov`` ``(1, H, W)`` in {0, 1}.
    """
    keys = list(keys)
    masks = [k for k in keys if k != "image"]
    label_keys = [k for k in masks if k != "fov"]
    out: list = [CheckedLoadImaged(keys="image", reader=rgb_reader(), image_only=True)]
    if masks:
        out.append(CheckedLoadImaged(keys=masks, reader=grey_reader(), image_only=True, allow_missing_keys=True))
    out += [
        EnsureChannelFirstd(keys=keys, allow_missing_keys=True),
        CheckInputd(keys=keys, spatial_dims=2, channels={"image": (3,), **{k: (1,) for k in masks}},
                    label_keys=label_keys, allow_empty_label=allow_empty_label, same_spatial_shape=True,
                    allow_missing_keys=True),
        ScaleIntensityRanged(keys="image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
    ]
    if label_keys:
        out += [CheckBinaryMaskd(keys=label_keys), AsDiscreted(keys=label_keys, threshold=128)]
    if "fov" in keys:
        out += [AsDiscreted(keys="fov", threshold=128, allow_missing_keys=True),
                DeriveFOVd("image", "fov", fov_threshold)]
    out.append(Lambdad(keys="image", func=green_channel))
    if clahe:
        out.append(CLAHEd(keys="image", mode="channels", clip_limit=clahe_clip_limit))
    return out


def probability_path(input_path: str | Path, output_dir: str | Path) -> Path:
    """The file :func:`probability_saver` writes for ``input_path``: ``output_dir/<input name>_prob.png``."""
    mask = mask_path(input_path, output_dir, volume=False)
    return mask.with_name(mask.name[: -len("_mask.png")] + f"_{PROB_POSTFIX}.png")


def probability_saver(output_dir: str, key: str = "prob", overwrite: bool = False) -> SaveImaged:
    """Write the vessel probability map as an 8-bit grey PNG, ``round(255 p)`` (0 = background, 255 = vessel with
    probability 1), whole or not at all, at :func:`probability_path`. An existing file is replaced only with
    ``overwrite``."""
    saver = SaveImaged(keys=key, output_dir=output_dir, output_postfix=PROB_POSTFIX, output_dtype=np.uint8,
                       resample=False, separate_folder=False, output_ext=".png", writer=AtomicPILWriter, scale=255)
    return saver.set_options(write_kwargs={"overwrite": as_flag(overwrite, "overwrite")})


def run_fundus_inference(evaluator, datalist: Sequence[Mapping], output_dir: str | Path, overwrite=False) -> None:
    """:func:`tools.runner.run_inference` (checks of the output folder and the mask files, the run, the skipped
    inputs), after refusing existing probability maps unless ``overwrite``, before the model runs.

    Raises:
        OutputError: naming the probability maps that exist already.
    """
    if not as_flag(overwrite, "overwrite"):
        existing = [str(p) for p in (probability_path(d["image"], output_dir) for d in datalist) if p.exists()]
        if existing:
            raise OutputError(
                f"{len(existing)} probability map(s) exist already (an earlier run?): {', '.join(existing[:5])}"
                f"{' ...' if len(existing) > 5 else ''}. Pass --overwrite true to replace them, or give another "
                "--output_dir; nothing was written."
            )
    run_inference(evaluator, datalist, output_dir, volume=False, overwrite=overwrite)
