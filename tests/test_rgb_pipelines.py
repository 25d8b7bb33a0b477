"""RGB reading, normalisation and channel statistics of the 2D RGB bundles (``tools.pipelines.rgb``)."""

import re

import numpy as np
import pytest
import torch
from monai.transforms import Compose
from PIL import Image

from tools.pipelines.rgb import channel_stats, normalization, rgb_inference_preprocessing, rgb_loading
from tools.runner import clear_message


def _save(path, array, mode=None):
    Image.fromarray(array, mode).save(path)
    return path


def test_rgb_loading_scales_image_to_unit_range_and_binarises_mask_at_128(tmp_path):
    image = np.zeros((6, 8, 3), np.uint8)
    image[..., 0] = 255
    mask = np.zeros((6, 8), np.uint8)
    mask[:4] = 250  # JPEG-like near-white lesion
    mask[3, 0] = 200  # an edge pixel above the threshold
    mask[4, 0] = 100  # one below it (2 of 33 non-background pixels grey: a JPEG edge, not a graded mask)
    mask[5] = 4  # JPEG noise near 0
    out = Compose(rgb_loading())({"image": str(_save(tmp_path / "a.png", image)),
                                  "label": str(_save(tmp_path / "a_mask.png", mask))})
    assert out["image"].shape == (3, 8, 6) and out["label"].shape == (1, 8, 6)
    assert float(out["image"][0].min()) == 1.0 and float(out["image"][1:].max()) == 0.0
    assert set(torch.unique(out["label"]).tolist()) == {0.0, 1.0} and int(out["label"].sum()) == 4 * 8


def test_rgb_loading_names_a_mask_whose_size_differs_from_its_image(tmp_path):
    image = _save(tmp_path / "a.png", np.zeros((6, 8, 3), np.uint8))
    mask = _save(tmp_path / "a_mask.png", np.full((6, 9), 255, np.uint8))
    with pytest.raises(ValueError, match=r"a_mask.png: 'label' has spatial shape \(9, 6\) but 'image' .*a.png"):
        data = {"image": str(image), "label": str(mask)}
        for transform in rgb_loading():  # one by one: Compose would wrap the error in a RuntimeError
            data = transform(data)


def test_normalization_is_per_channel_and_rejects_bad_std():
    x = torch.stack([torch.full((4, 4), 0.5), torch.full((4, 4), 0.2), torch.full((4, 4), 1.0)])
    out = normalization([0.5, 0.1, 0.0], [0.25, 0.1, 2.0])({"image": x})["image"]
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="std > 0"):
        normalization([0.5, 0.5, 0.5], [0.1, 0.0, 0.1])
    with pytest.raises(ValueError, match="one value per channel"):
        normalization([0.5, 0.5], [0.1, 0.1, 0.1])


def test_channel_stats_are_the_pixel_mean_and_std_over_all_images(tmp_path):
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 255, np.uint8)
    b[..., 2] = 0
    stats = channel_stats([_save(tmp_path / "a.png", a), _save(tmp_path / "b.png", b)])
    assert stats == {"mean": [0.5, 0.5, 0.0], "std": [0.5, 0.5, 0.0], "n_images": 2}
    with pytest.raises(ValueError, match="no image"):
        channel_stats([])


def test_inference_preprocessing_refuses_grey_images_and_reads_palette_images_as_three_channels(tmp_path):
    pre = rgb_inference_preprocessing([32, 32], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    grey = _save(tmp_path / "g.png", np.full((40, 50), 128, np.uint8))
    with pytest.raises(RuntimeError) as e:  # Compose wraps the loader's InputError
        pre({"image": str(grey)})
    assert re.search(r"g.png: a greyscale image \(PIL mode L\)", clear_message(e.value)[0])
    colour = np.zeros((40, 50, 3), np.uint8)
    colour[..., 0] = 200
    palette = tmp_path / "p.png"
    Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE).save(palette)
    out = pre({"image": str(palette)})
    assert out["image"].shape == (3, 32, 32)
    torch.testing.assert_close(out["image"][0], torch.full((32, 32), 200 / 255 * 2 - 1), atol=1e-5, rtol=0)
