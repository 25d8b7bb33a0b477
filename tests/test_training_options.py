"""Non-structural options by name: losses, optimizers, activations, augmentation sets, CLAHE; each trains a step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.losses import DiceCELoss, DiceLoss, HausdorffDTLoss, SSIMLoss, TverskyLoss
from monai.transforms import Compose
from skimage.exposure import equalize_adapthist

from custom_networks.nets import VariantUNet
from tools.training_options import (
    ACTIVATIONS,
    AUGMENTATIONS,
    LOSSES,
    OPTIMIZERS,
    CLAHEd,
    RandHueSaturationd,
    StructureLoss,
    get_augmentation,
    get_loss,
    get_optimizer,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread beats two that wait for each other on shared cores
    yield
    torch.set_num_threads(threads)


def tiny_net(**kwargs) -> VariantUNet:
    torch.manual_seed(0)
    return VariantUNet(2, 3, 1, (4, 8, 16), **kwargs)


def square_mask(size: int = 16) -> torch.Tensor:
    y = torch.zeros(2, 1, size, size)
    y[:, :, 4:10, 5:12] = 1
    return y


def train_step(net: torch.nn.Module, loss_fn, optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    before = [p.detach().clone() for p in net.parameters()]
    optimizer.zero_grad()
    loss = loss_fn(net(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters())), "the step changed no parameter"
    return float(loss.detach())


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_trains_one_step_of_a_tiny_network(name):
    net = tiny_net()
    train_step(net, get_loss(name), torch.optim.Adam(net.parameters(), 1e-3), torch.rand(2, 3, 16, 16), square_mask())


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_is_near_zero_for_confident_correct_logits_and_large_for_inverted_ones(name):
    y = square_mask()
    loss = get_loss(name)
    assert loss((2 * y - 1) * 20, y) < 0.01
    assert loss((1 - 2 * y) * 20, y) > 0.5


def test_bce_dice_is_monai_dice_ce_with_sigmoid():
    logits, y = torch.randn(2, 1, 16, 16), square_mask()
    torch.testing.assert_close(get_loss("bce_dice")(logits, y), DiceCELoss(sigmoid=True)(logits, y))


def test_focal_tversky_is_tversky_to_the_power_one_over_gamma_weighting_false_negatives():
    logits, y = torch.randn(2, 1, 16, 16), square_mask()
    tversky = TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7, reduction="none")(logits, y)  # MONAI alpha = FP weight
    torch.testing.assert_close(get_loss("focal_tversky")(logits, y), (tversky ** 0.75).mean())
    torch.testing.assert_close(get_loss("focal_tversky", gamma=1.0)(logits, y), tversky.mean())
    # as many wrong pixels each way: missing foreground (FN) costs more than extra foreground (FP)
    missed, extra = y.clone(), y.clone()
    missed[:, :, 4:7, 5:12] = 0
    extra[:, :, 10:13, 5:12] = 1
    loss = get_loss("focal_tversky")
    assert loss((2 * missed - 1) * 20, y) > loss((2 * extra - 1) * 20, y)


def test_focal_tversky_rejects_non_positive_gamma():
    with pytest.raises(ValueError, match="gamma must be > 0"):
        get_loss("focal_tversky", gamma=0)


def test_dice_boundary_balanced_scales_hausdorff_term_to_dice_and_fixed_weight_adds_it():
    logits, y = torch.randn(2, 1, 16, 16, requires_grad=True), square_mask()
    dice = DiceLoss(sigmoid=True)(logits, y)
    hd = HausdorffDTLoss(sigmoid=True, include_background=True)(logits, y)
    assert hd > 5 * dice  # the raw boundary term dwarfs Dice even at 16 x 16
    balanced = get_loss("dice_boundary")(logits, y)
    torch.testing.assert_close(balanced, 2 * dice)
    balanced.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    torch.testing.assert_close(get_loss("dice_boundary", boundary_weight=0.1)(logits, y), dice + 0.1 * hd)
    with pytest.raises(ValueError, match="boundary_weight must be 'balanced' or a float >= 0"):
        get_loss("dice_boundary", boundary_weight="auto")


def test_ssim_bce_dice_adds_one_minus_ssim_of_the_probability_map():
    logits, y = torch.randn(2, 1, 16, 16, requires_grad=True), square_mask()
    expected = DiceCELoss(sigmoid=True)(logits, y) + 0.5 * SSIMLoss(2, data_range=1.0)(torch.sigmoid(logits), y)
    loss = get_loss("ssim_bce_dice", ssim_weight=0.5)(logits, y)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_ssim_of_2d_probability_maps_is_zero_for_identical_and_defined_for_empty_masks():
    ssim = SSIMLoss(2, data_range=1.0)
    y = square_mask()
    assert float(ssim(y, y)) == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros_like(y)
    assert float(ssim(empty, empty)) == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(ssim(torch.rand_like(y), empty))


def test_ssim_bce_dice_rejects_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="win_size = 11"):
        get_loss("ssim_bce_dice")(torch.randn(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


def _pranet_structure_loss(pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PraNet's MyTrain.py ``structure_loss``, line for line (2D only, images at least 31 pixels a side)."""
    weit = 1 + 5 * torch.abs(torch.nn.functional.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    wbce = torch.nn.functional.binary_cross_entropy_with_logits(pred, mask, reduction="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    pred = torch.sigmoid(pred)
    inter = ((pred * mask) * weit).sum(dim=(2, 3))
    union = ((pred + mask) * weit).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def test_structure_loss_is_pranets_weighted_bce_plus_weighted_iou():
    torch.manual_seed(0)
    logits, y = torch.randn(2, 1, 48, 40), square_mask(48)[..., :40]
    torch.testing.assert_close(StructureLoss()(logits, y), _pranet_structure_loss(logits, y))
    assert float(StructureLoss()((2 * y - 1) * 20, y)) < 0.01
    assert float(StructureLoss()((1 - 2 * y) * 20, y)) > 0.5


def test_structure_loss_weighs_boundary_pixels_and_trains_2d_and_3d_below_its_box_size():
    y = square_mask(48)
    near, far = torch.zeros_like(y), torch.zeros_like(y)
    near[:, :, 10, 8] = 8.0  # a false positive next to the square's edge
    far[:, :, 40, 40] = 8.0  # the same false positive far from it
    base = -8.0 * (1 - y) + 8.0 * y
    assert StructureLoss()(base + near, y) > StructureLoss()(base + far, y)  # the boundary pixel costs more
    flat = StructureLoss(boundary_weight=0)  # without the weight the two cost the same
    assert float(flat(base + near, y)) == pytest.approx(float(flat(base + far, y)))
    net = tiny_net()
    train_step(net, StructureLoss(), torch.optim.Adam(net.parameters(), 1e-3), torch.rand(2, 3, 16, 16), square_mask())
    logits3d = torch.randn(1, 1, 8, 8, 8, requires_grad=True)
    StructureLoss()(logits3d, (torch.rand(1, 1, 8, 8, 8) > 0.5).float()).backward()
    assert torch.isfinite(logits3d.grad).all()


@pytest.mark.parametrize("kwargs, shapes, message", [
    ({"kernel_size": 30}, None, "kernel_size must be a positive odd integer"),
    ({"boundary_weight": -1}, None, "boundary_weight must be >= 0"),
    ({}, ((1, 1, 8, 8), (1, 1, 8, 9)), "of one shape"),
    ({}, ((8, 8), (8, 8)), r"\(B, C, H, W\[, D\]\)"),
])
def test_structure_loss_rejects_bad_settings_and_shapes(kwargs, shapes, message):
    with pytest.raises(ValueError, match=message):
        StructureLoss(**kwargs)(*(torch.zeros(s) for s in shapes))


def test_unknown_loss_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"loss name must be one of \('bce_dice', 'focal_tversky', 'dice_boundary', "
                                         r"'ssim_bce_dice'\), got 'lovasz'"):
        get_loss("lovasz")


# ---------------------------------------------------------------- optimizers


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_trains_one_step_and_follows_a_learning_rate_scheduler(name):
    net = tiny_net()
    optimizer = get_optimizer(name, net.parameters(), lr=1e-2)
    assert isinstance(optimizer, torch.optim.Optimizer)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    train_step(net, get_loss("bce_dice"), optimizer, torch.rand(2, 3, 16, 16), square_mask())
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_optimizer_defaults_and_pass_through():
    params = list(tiny_net().parameters())
    assert get_optimizer("sgd", params).defaults["momentum"] == 0.9
    assert get_optimizer("sgd", params, momentum=0.5, nesterov=True).defaults["nesterov"] is True
    assert get_optimizer("adamw", params).defaults["weight_decay"] == 0.01  # torch's default kept
    assert get_optimizer("adam", params, weight_decay=1e-4).defaults["weight_decay"] == 1e-4
    lookahead = get_optimizer("radam_lookahead", params, k=3, alpha=0.8, weight_decay=1e-5)
    assert (lookahead.k, lookahead.alpha) == (3, 0.8)
    assert isinstance(lookahead.optimizer, torch.optim.RAdam) and lookahead.optimizer.defaults["weight_decay"] == 1e-5
    assert type(get_optimizer("ranger", params)).__name__ == "Ranger"


def test_unknown_optimizer_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"optimizer name must be one of \('adam', 'adamw', 'sgd', 'radam_lookahead', "
                                         r"'ranger'\), got 'lamb'"):
        get_optimizer("lamb", tiny_net().parameters())


# ---------------------------------------------------------------- activations


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_each_activation_name_trains_one_step(act):
    net = tiny_net(act=act)
    train_step(net, get_loss("bce_dice"), torch.optim.Adam(net.parameters(), 1e-3), torch.rand(2, 3, 16, 16),
               square_mask())


# ---------------------------------------------------------------- augmentation


def sample(size: int = 32) -> dict:
    rng = np.random.default_rng(0)
    label = np.zeros((1, size, size), np.float32)
    label[:, 8:20, 10:24] = 1
    return {"image": rng.random((3, size, size), dtype=np.float32), "label": label}


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_set_keeps_shapes_and_binary_masks_and_feeds_one_training_step(name):
    chain = Compose(get_augmentation(name, prob=1.0)).set_random_state(0)
    batch = [chain(sample()) for _ in range(2)]
    for d in batch:
        assert tuple(d["image"].shape) == (3, 32, 32) and tuple(d["label"].shape) == (1, 32, 32)
        assert set(np.unique(np.asarray(d["label"]))) <= {0.0, 1.0}
    x = torch.stack([torch.as_tensor(np.asarray(d["image"])) for d in batch])
    y = torch.stack([torch.as_tensor(np.asarray(d["label"])) for d in batch])
    net = tiny_net()
    train_step(net, get_loss("bce_dice"), torch.optim.Adam(net.parameters(), 1e-3), x, y)


def test_augmentation_sets_nest_and_none_is_empty():
    names = [[type(t).__name__ for t in get_augmentation(n)] for n in AUGMENTATIONS]
    assert names[0] == []
    assert names[1] == ["RandFlipd", "RandFlipd"]
    assert names[2] == names[1] + ["RandRotate90d", "RandRotated"]
    assert names[3] == names[2] + ["Rand2DElasticd", "RandScaleIntensityd", "RandScaleIntensityFixedMeand",
                                   "RandAdjustContrastd"]


def test_flips_move_image_and_mask_together():
    d = sample()
    out = Compose(get_augmentation("flip", prob=1.0))(dict(d))
    np.testing.assert_array_equal(np.asarray(out["image"]), d["image"][:, ::-1, ::-1])
    np.testing.assert_array_equal(np.asarray(out["label"]), d["label"][:, ::-1, ::-1])


def test_intensity_augmentations_touch_images_only():
    for t in get_augmentation("full")[-3:]:
        assert tuple(t.keys) == ("image",)
    rotated = get_augmentation("flip_rotate")[-1]
    assert list(rotated.mode) == ["bilinear", "nearest"]


@pytest.mark.parametrize("kwargs, message", [({"name": "heavy"}, r"augmentation name must be one of \('none', 'flip', "
                                                                 r"'flip_rotate', 'full'\), got 'heavy'"),
                                             ({"name": "flip", "prob": 1.5}, r"prob must be in \[0, 1\]")])
def test_augmentation_rejects_unknown_set_or_probability(kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_augmentation(**kwargs)


# ---------------------------------------------------------------- CLAHE


def low_contrast_rgb(size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(1)
    ramp = np.linspace(0.4, 0.6, size, dtype=np.float32)[None, :] * np.ones((size, 1), np.float32)
    return np.stack([ramp * 0.9, ramp, ramp * 0.5]) + rng.normal(0, 0.01, (3, size, size)).astype(np.float32)


def test_clahe_value_mode_is_scikit_image_on_the_rgb_image_and_raises_contrast():
    image = low_contrast_rgb()
    out = CLAHEd("image")({"image": image})["image"]
    expected = np.moveaxis(equalize_adapthist(np.moveaxis(image, 0, -1)), -1, 0)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.dtype == np.float32 and out.shape == image.shape and 0 <= out.min() and out.max() <= 1
    assert out.max(0).std() > 2 * image.max(0).std()  # the HSV value channel: contrast at least doubled


def test_clahe_channels_mode_equalises_only_the_chosen_channels_and_keeps_metadata():
    image = MetaTensor(torch.as_tensor(low_contrast_rgb()), meta={"filename_or_obj": "fundus.png"})
    out = CLAHEd("image", mode="channels", channels=[1])({"image": image})["image"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "fundus.png"
    torch.testing.assert_close(out[[0, 2]], image.as_tensor()[[0, 2]])
    np.testing.assert_allclose(out[1].numpy(), equalize_adapthist(image[1].numpy()), atol=1e-6)


@pytest.mark.parametrize("image, kwargs, message", [
    (np.full((3, 16, 16), 2.0, np.float32), {}, r"values in \[0, 1\] for 'image'"),
    (np.zeros((16, 16), np.float32), {}, r"channel-first 2D image \(C, H, W\)"),
    (np.zeros((1, 16, 16), np.float32), {}, r"needs an RGB \(3-channel\) image"),
])
def test_clahe_rejects_images_it_cannot_equalise(image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        CLAHEd("image", **kwargs)({"image": image})


def test_clahe_rejects_unknown_mode():
    with pytest.raises(ValueError, match=r"mode must be one of \('value', 'channels'\)"):
        CLAHEd("image", mode="lab")


def test_hue_saturation_identity_settings_leave_the_image_unchanged():
    image = MetaTensor(torch.rand(3, 8, 9))
    out = RandHueSaturationd("image", hue_degrees=0.0, saturation=(1.0, 1.0), prob=1.0)({"image": image})["image"]
    assert isinstance(out, MetaTensor) and out.shape == image.shape
    torch.testing.assert_close(out.as_tensor(), image.as_tensor(), atol=1e-5, rtol=0)


def test_zero_saturation_gives_the_grey_image_of_the_same_luma():
    image = torch.rand(3, 8, 8)
    out = RandHueSaturationd("image", hue_degrees=0.0, saturation=(0.0, 0.0), prob=1.0)({"image": image})["image"]
    luma = 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]
    for c in range(3):
        torch.testing.assert_close(out[c], luma, atol=1e-5, rtol=0)


def test_hue_rotation_keeps_luma_and_changes_colour():
    image = 0.4 + 0.2 * torch.rand(3, 8, 8)  # mid-range: nothing is clipped
    t = RandHueSaturationd("image", hue_degrees=60.0, saturation=(1.0, 1.0), prob=1.0)
    t.set_random_state(3)
    out = t({"image": image})["image"]
    weights = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
    torch.testing.assert_close((out * weights).sum(0), (image * weights).sum(0), atol=1e-5, rtol=0)
    assert (out - image).abs().max() > 1e-3


def test_hue_saturation_with_prob_zero_and_label_untouched():
    data = {"image": torch.rand(3, 4, 4), "label": torch.ones(1, 4, 4)}
    out = RandHueSaturationd("image", prob=0.0)(data)
    assert out["image"] is data["image"] and out["label"] is data["label"]


def test_hue_saturation_refuses_a_grey_image_and_bad_ranges():
    with pytest.raises(ValueError, match="RGB image"):
        RandHueSaturationd("image", prob=1.0)({"image": torch.rand(1, 4, 4)})
    with pytest.raises(ValueError, match="hue_degrees"):
        RandHueSaturationd("image", hue_degrees=200.0)
    with pytest.raises(ValueError, match="saturation"):
        RandHueSaturationd("image", saturation=(1.2, 0.8))


def _batch(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(shape, generator=g)
    label = (torch.rand((shape[0], 1, *shape[2:]), generator=g) > 0.7).float()
    return {"image": MetaTensor(image), "label": MetaTensor(label)}


def test_multiscale_batch_draws_pranets_scales_rounded_to_the_divisor_and_keeps_masks_binary():
    from tools.augmentation import MultiScaleBatch

    prepare = MultiScaleBatch(scales=(0.75, 1.0, 1.25), divisor=32, seed=0)
    seen = set()
    for _ in range(30):
        image, label = prepare(_batch((2, 3, 256, 256)), torch.device("cpu"))
        seen.add(tuple(image.shape[2:]))
        assert image.shape[:2] == (2, 3) and label.shape == (2, 1, *image.shape[2:])
        assert set(torch.unique(label).tolist()) <= {0.0, 1.0}
    assert seen == {(192, 192), (256, 256), (320, 320)}  # PraNet: round(256 * rate / 32) * 32
    assert prepare.size((352, 250), 0.75) == [256, 192] and prepare.size((20, 20), 0.75) == [32, 32]
    # the same seed draws the same scales; a 3D batch is resized trilinearly
    a, b = MultiScaleBatch(seed=3), MultiScaleBatch(seed=3)
    assert [a.rng.integers(3) for _ in range(10)] == [b.rng.integers(3) for _ in range(10)]
    image, label = MultiScaleBatch(scales=(0.5,), divisor=8)(_batch((1, 1, 32, 32, 16)))
    assert image.shape == (1, 1, 16, 16, 8) and label.shape == (1, 1, 16, 16, 8)
    # a mask's foreground keeps its place: a centred square stays centred
    square = torch.zeros(1, 1, 64, 64)
    square[..., 16:48, 16:48] = 1
    _, label = MultiScaleBatch(scales=(0.5,), divisor=8)({"image": torch.rand(1, 3, 64, 64), "label": square})
    assert label[0, 0, 8:24, 8:24].all() and label.sum() == 16 * 16


@pytest.mark.parametrize("kwargs, batch, message", [
    ({"scales": ()}, None, "non-empty"),
    ({"scales": (1.0, 0.0)}, None, "> 0"),
    ({"divisor": 0}, None, "divisor"),
    ({}, {"image": torch.rand(3, 64, 64), "label": torch.zeros(1, 64, 64)}, r"\(B, C, H, W\[, D\]\)"),
    ({}, {"image": torch.rand(2, 3, 64, 64), "label": torch.zeros(2, 1, 32, 32)}, "does not match"),
])
def test_multiscale_batch_rejects_bad_settings_and_shapes(kwargs, batch, message):
    from tools.augmentation import MultiScaleBatch

    with pytest.raises(ValueError, match=message):
        MultiScaleBatch(**kwargs)(batch)
