"""RGB photographs (colonoscopy frames, dermoscopy images): the transform chains of the 2D RGB bundles.

The polyp (CVC-ClinicDB) and skin-lesion (PH2, ISIC 2018) bundles read images and masks the same way; their configs
build these chains by ``_target_`` so that the reading, checking and normalisation live once. Every step is a MONAI
transform; :func:`channel_stats` computes the per-channel mean and standard deviation the configs normalise with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.bundle import ConfigParser
from monai.data import PILReader
from monai.transforms import AsDiscreted, Compose, EnsureChannelFirstd, NormalizeIntensityd, Resized, ScaleIntensityRanged

from tools.input_checks import rgb_converter
from tools.pipelines.slices import grey_reader
from tools.transforms import CheckBinaryMaskd, CheckedLoadImaged, CheckInputd

__all__ = ["rgb_reader", "rgb_loading", "normalization", "rgb_inference_preprocessing", "channel_stats",
           "bundle_channel_stats"]


def rgb_reader() -> PILReader:
    """MONAI's ``PILReader`` that converts palette and RGBA images to three channels (``"RGB"``) and refuses grey
    pictures, on which the networks give near-empty masks (:func:`tools.input_checks.rgb_converter`)."""
    return PILReader(converter=rgb_converter)


def rgb_loading(keys: Sequence[str] = ("image", "label"), allow_empty_label: bool = False) -> list:
    """Read 8-bit RGB images and their 0/255 masks: ``image`` ``(3, H, W)`` in [0, 1], ``label`` ``(1, H, W)`` in {0, 1}.

    Steps: load (image as RGB, grey pictures refused; mask as grey; read errors name the file), channel first, check
    2D / channels / finite / non-empty mask / mask of the image's size / mask 0/255 (label maps and graded masks
    refused: :func:`tools.input_checks.check_binary_mask`; errors name the file), image 0..255 -> [0, 1], mask
    binarised at 128 (JPEG-compressed masks carry grey values). Mean/std normalisation is left out so that brightness augmentation can come before it
    (:func:`normalization`).

    Args:
        keys: ``"image"`` and optionally ``"label"``.
        allow_empty_label: accept an all-zero mask (a frame without a polyp); training masks should not be empty.

    Returns:
        a list of transforms, so that configs can append resizing, augmentation and normalisation.
    """
    keys = list(keys)
    label_keys = [k for k in keys if k != "image"]
    out: list = [CheckedLoadImaged(keys="image", reader=rgb_reader(), image_only=True)]
    if label_keys:
        out.append(CheckedLoadImaged(keys=label_keys, reader=grey_reader(), image_only=True))
    out += [
        EnsureChannelFirstd(keys=keys),
        CheckInputd(keys=keys, spatial_dims=2, channels={"image": (3,), **{k: (1,) for k in label_keys}},
                    label_keys=label_keys, allow_empty_label=allow_empty_label, same_spatial_shape=True),
        ScaleIntensityRanged(keys="image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
    ]
    if label_keys:
        out += [CheckBinaryMaskd(keys=label_keys), AsDiscreted(keys=label_keys, threshold=128)]
    return out


def normalization(mean: Sequence[float], std: Sequence[float]) -> NormalizeIntensityd:
    """Per-channel ``(x - mean) / std`` of ``image`` (values in [0, 1]); ``mean`` and ``std`` have one value a channel."""
    if len(mean) != len(std) or min(std) <= 0:
        raise ValueError(f"mean {list(mean)} and std {list(std)} need one value per channel and std > 0.")
    return NormalizeIntensityd(keys="image", subtrahend=np.asarray(mean, dtype=np.float32),
                               divisor=np.asarray(std, dtype=np.float32), channel_wise=True)


def rgb_inference_preprocessing(spatial_size: Sequence[int], mean: Sequence[float], std: Sequence[float]) -> Compose:
    """Inference chain: :func:`rgb_loading` of the image, resized to ``spatial_size`` (bilinear), normalised."""
    return Compose([*rgb_loading(("image",)), Resized(keys="image", spatial_size=list(spatial_size), mode="bilinear"),
                    normalization(mean, std)])


def channel_stats(image_paths: Sequence[str | Path]) -> dict:
    """Per-channel mean and standard deviation of RGB images scaled to [0, 1], over all their pixels.

    The bundles normalise with the training split's statistics ("normalised by mean and std", IA-CNN paper,
    section on implementation); this computes them.

    Returns:
        ``{"mean": [r, g, b], "std": [r, g, b], "n_images": N}`` rounded to 4 decimals.

    Raises:
        ValueError: if ``image_paths`` is empty or an image cannot be read (naming it).
    """
    if not image_paths:
        raise ValueError("no image to compute channel statistics over.")
    load = Compose(rgb_loading(("image",)))
    total, total_sq, count = np.zeros(3), np.zeros(3), 0
    for path in image_paths:
        x = np.asarray(load({"image": str(path)})["image"], dtype=np.float64).reshape(3, -1)
        total += x.sum(axis=1)
        total_sq += (x**2).sum(axis=1)
        count += x.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return {"mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in std],
            "n_images": len(image_paths)}


def bundle_channel_stats(bundle_dir: str | Path, dataset_dir: str | Path | None = None) -> dict:
    """:func:`channel_stats` of the training split of a bundle's ``configs/train.json`` (its ``split`` id, first part),
    with the bundle's data root or ``dataset_dir``."""
    bundle = Path(bundle_dir).resolve()
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser["bundle_root"] = str(bundle)
    if dataset_dir is not None:
        parser["dataset_dir"] = str(Path(dataset_dir).expanduser().resolve())
    train = parser.get_parsed_content("split")[0]
    stats = channel_stats([item["image"] for item in train])
    return json.loads(json.dumps(stats))
