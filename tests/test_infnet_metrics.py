"""Tests for tools.metrics.infnet (NumPy port of Inf-Net's MATLAB EvaluationTool).

Expected values are derived by hand from the MATLAB formulas (main.m,
Fmeasure_calu.m, Enhancedmeasure.m, StructureMeasure.m, S_object.m, S_region.m).
"""

import math

import numpy as np
import pytest

from tools.metrics.infnet import (
    EMEASURE_OPS,
    EPS,
    THRESHOLDS,
    _centroid,
    _s_object,
    _s_region,
    e_measure,
    infnet_image_metrics,
    infnet_png_roundtrip,
    mae,
    minmax_normalise,
    s_measure,
    threshold_curves,
)

# 4x4 GT with a 2x2 object in the top-left corner: |GT| = 4, N = 16.
GT4 = np.zeros((4, 4), dtype=bool)
GT4[:2, :2] = True

# Index 127 of 1:-1/255:0 is 128/255 ~= 0.50196.
IDX_HALF = 127


# --------------------------------------------------------------------------- naive reference


def _naive_curves(pred, gt, emeasure_op="gt"):
    """Straight per-threshold loop transcribing main.m / Fmeasure_calu.m / Enhancedmeasure.m."""
    gt = gt.astype(bool)
    n = gt.size
    out = {k: np.zeros(len(THRESHOLDS)) for k in ("dice", "sensitivity", "specificity", "e_measure")}
    for i, t in enumerate(THRESHOLDS):
        label = pred >= t
        num_rec = int(label.sum())
        num_no_rec = n - num_rec
        num_and = int((label & gt).sum())
        num_obj = int(gt.sum())
        fn = num_obj - num_and
        fp = num_rec - num_and
        tn = num_no_rec - fn
        if num_and == 0:
            dice = sens = spec = 0.0
        else:
            sens = num_and / num_obj
            spec = tn / (tn + fp) if (tn + fp) else math.nan
            dice = 2 * num_and / (num_obj + num_rec)
        out["dice"][i], out["sensitivity"][i], out["specificity"][i] = dice, sens, spec

        fm = ((pred > t) if emeasure_op == "gt" else (pred >= t)).astype(float)
        dgt = gt.astype(float)
        if dgt.sum() == 0:
            enh = 1.0 - fm
        elif (dgt == 0).sum() == 0:
            enh = fm
        else:
            afm = fm - fm.mean()
            agt = dgt - dgt.mean()
            align = 2.0 * (agt * afm) / (agt * agt + afm * afm + EPS)
            enh = ((align + 1.0) ** 2) / 4.0
        out["e_measure"][i] = enh.sum() / (n - 1 + EPS)
    return out


# --------------------------------------------------------------------------- thresholds


def test_thresholds_are_256_values_from_one_down_to_zero():
    assert THRESHOLDS.shape == (256,)
    assert THRESHOLDS.dtype == np.float64
    assert THRESHOLDS[0] == 1.0 and THRESHOLDS[-1] == 0.0
    assert np.all(np.diff(THRESHOLDS) < 0)
    np.testing.assert_allclose(THRESHOLDS, 1.0 - np.arange(256) / 255.0, rtol=0, atol=1e-15)


def test_thresholds_follow_matlab_symmetric_colon_construction():
    k = np.arange(128)
    np.testing.assert_array_equal(THRESHOLDS[k], 1.0 + k * (-1.0 / 255.0))
    np.testing.assert_array_equal(THRESHOLDS[255 - k], 0.0 - k * (-1.0 / 255.0))


# --------------------------------------------------------------------------- min-max normalisation


def test_minmax_normalise_maps_range_to_zero_one():
    out = minmax_normalise(np.array([[2.0, 4.0], [6.0, 3.0]]))
    np.testing.assert_array_equal(out, [[0.0, 0.5], [1.0, 0.25]])


def test_minmax_normalise_leaves_constant_map_unchanged_like_mapminmax():
    np.testing.assert_array_equal(minmax_normalise(np.full((3, 3), 0.7)), np.full((3, 3), 0.7))
    np.testing.assert_array_equal(minmax_normalise(np.zeros((2, 2))), np.zeros((2, 2)))


def test_minmax_normalise_leaves_map_with_range_below_1e14_gain_unchanged():
    pred = np.array([[0.3, 0.3 + 4e-15]])
    np.testing.assert_array_equal(minmax_normalise(pred), pred)


def test_minmax_normalise_multiplies_by_reciprocal_so_max_can_miss_one():
    # 49 * (1/49) == 1 - 2**-53 in double precision, as in MATLAB's mapminmax.
    out = minmax_normalise(np.array([[0.0, 49.0]]))
    assert out[0, 1] == 49.0 * (1.0 / 49.0) < 1.0
    # ... hence nothing passes ">= 1" at the first threshold and Dice is 0 there.
    curves = threshold_curves(out, np.array([[False, True]]))
    assert curves["dice"][0] == 0.0
    assert curves["dice"][1] == 1.0


# --------------------------------------------------------------------------- threshold curves (Fmeasure_calu)


def _pred4():
    return np.array(
        [
            [1.0, 0.8, 0.6, 0.0],
            [0.2, 0.8, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )


def test_curves_dice_sensitivity_specificity_at_half_threshold_by_hand():
    # pred >= 128/255: {1.0, 0.8, 0.8 (in GT), 0.6 (outside)} -> TP=3, FP=1, FN=1, TN=11.
    curves = threshold_curves(_pred4(), GT4)
    assert curves["dice"][IDX_HALF] == pytest.approx(2 * 3 / (4 + 4))
    assert curves["sensitivity"][IDX_HALF] == pytest.approx(3 / 4)
    assert curves["specificity"][IDX_HALF] == pytest.approx(11 / 12)


def test_curves_e_measure_at_half_threshold_by_hand():
    # mu_FM = mu_GT = 1/4. TP, TN pixels: alignment 1 -> enhanced 1;
    # FP, FN pixels: alignment 2*(0.75*-0.25)/(0.75^2+0.25^2) = -0.6 -> (0.4)^2/4 = 0.04.
    curves = threshold_curves(_pred4(), GT4)
    assert curves["e_measure"][IDX_HALF] == pytest.approx((3 + 0.04 + 0.04 + 11) / 15, rel=1e-12)


def test_curves_use_ge_for_dice_and_strict_gt_for_e_measure():
    # pred == 1 exactly: ">= 1" selects the object, "> 1" selects nothing.
    pred = GT4.astype(float)
    curves = threshold_curves(pred, GT4)
    assert curves["dice"][0] == 1.0
    # empty FM with a non-trivial GT: every pixel has alignment 0 -> enhanced 1/4.
    assert curves["e_measure"][0] == pytest.approx(16 * 0.25 / 15, rel=1e-12)


def test_curves_e_measure_ge_binarises_like_dice_as_main_m_since_e723632():
    # pred == 1 exactly: ">= 1" selects the object for the E-measure too -> perfect score N/(N-1).
    curves = threshold_curves(GT4.astype(float), GT4, emeasure_threshold_op="ge")
    assert curves["e_measure"][0] == pytest.approx(16 / 15, rel=1e-12)


def test_emeasure_op_changes_only_the_e_measure():
    gt_op = threshold_curves(_pred4(), GT4, "gt")
    ge_op = threshold_curves(_pred4(), GT4, "ge")
    for key in ("dice", "sensitivity", "specificity"):
        np.testing.assert_array_equal(gt_op[key], ge_op[key])
    assert not np.array_equal(gt_op["e_measure"], ge_op["e_measure"])
    assert EMEASURE_OPS == {"gt": ">", "ge": ">="}


def test_unknown_emeasure_op_raises_value_error():
    with pytest.raises(ValueError, match="emeasure_threshold_op"):
        threshold_curves(_pred4(), GT4, emeasure_threshold_op=">=")
    with pytest.raises(ValueError, match="emeasure_threshold_op"):
        infnet_image_metrics(_pred4(), GT4, emeasure_threshold_op="gte")


def test_thresholds_argument_replaces_the_matlab_colon_vector():
    # 128/255 as the naive k/255 gives it, against the colon value one ulp away: a pixel of exactly 128/255
    # passes ">=" only when the threshold is not above it.
    value = 128 / 255
    pred = np.array([[value, 0.0], [0.0, 0.0]])
    gt = np.array([[True, False], [False, False]])
    curves = threshold_curves(pred, gt, thresholds=np.array([value, np.nextafter(value, 2.0)]))
    assert curves["dice"].shape == (2,)
    assert curves["dice"][0] == 1.0 and curves["dice"][1] == 0.0
    with pytest.raises(ValueError, match="thresholds"):
        threshold_curves(pred, gt, thresholds=np.array([[0.5]]))


def test_curves_zero_when_true_positives_are_zero():
    pred = np.zeros((4, 4))
    pred[3, 3] = 1.0  # only a false positive above every threshold > 0
    curves = threshold_curves(pred, GT4)
    # Without the TP == 0 branch specificity would be 11/12 here.
    assert np.all(curves["dice"][:255] == 0.0)
    assert np.all(curves["sensitivity"][:255] == 0.0)
    assert np.all(curves["specificity"][:255] == 0.0)
    # threshold 0: everything positive, TP=4, FP=12, TN=0.
    assert curves["dice"][255] == pytest.approx(8 / 20)
    assert curves["sensitivity"][255] == 1.0
    assert curves["specificity"][255] == 0.0


def test_curves_perfect_binary_prediction_exact_values():
    curves = threshold_curves(GT4.astype(float), GT4)
    np.testing.assert_array_equal(curves["dice"][:255], 1.0)
    assert curves["dice"][255] == pytest.approx(2 * 4 / (4 + 16))  # threshold 0 selects all pixels
    np.testing.assert_array_equal(curves["sensitivity"], 1.0)
    np.testing.assert_array_equal(curves["specificity"][:255], 1.0)
    assert curves["specificity"][255] == 0.0
    # E-measure of a perfect map is N/(N-1) (denominator H*W - 1 + eps), not 1.
    np.testing.assert_allclose(curves["e_measure"][1:], 16 / 15, rtol=1e-12)


def test_curves_empty_gt_gives_zero_dice_sensitivity_specificity_everywhere():
    curves = threshold_curves(np.zeros((4, 4)), np.zeros((4, 4), dtype=bool))
    for key in ("dice", "sensitivity", "specificity"):
        np.testing.assert_array_equal(curves[key], 0.0)
    # E-measure empty-GT branch: sum(1 - FM)/(N - 1 + eps); pred > t is empty for all t.
    np.testing.assert_allclose(curves["e_measure"], 16 / 15, rtol=1e-12)


def test_curves_full_gt_specificity_is_nan_like_matlab_zero_over_zero():
    curves = threshold_curves(_pred4(), np.ones((4, 4), dtype=bool))
    assert np.isnan(curves["specificity"][IDX_HALF])  # TN + FP == 0, TP > 0
    assert curves["sensitivity"][IDX_HALF] == pytest.approx(4 / 16)


@pytest.mark.parametrize("emeasure_op", ["gt", "ge"])
@pytest.mark.parametrize("gt_kind", ["random", "empty", "full", "single_pixel"])
def test_vectorised_curves_equal_naive_loop(gt_kind, emeasure_op):
    rng = np.random.default_rng(1234)
    shape = (17, 23)
    # values include exact threshold values to exercise >= / > ties
    pred = np.where(rng.random(shape) < 0.5, rng.choice(THRESHOLDS, size=shape), rng.random(shape))
    gt = {
        "random": rng.random(shape) > 0.6,
        "empty": np.zeros(shape, dtype=bool),
        "full": np.ones(shape, dtype=bool),
        "single_pixel": np.pad(np.ones((1, 1), dtype=bool), ((5, 11), (7, 15))),
    }[gt_kind]
    fast = threshold_curves(pred, gt, emeasure_op)
    slow = _naive_curves(pred, gt, emeasure_op)
    for key in ("dice", "sensitivity", "specificity"):
        np.testing.assert_array_equal(fast[key], slow[key], err_msg=key)
    np.testing.assert_allclose(fast["e_measure"], slow["e_measure"], rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- E-measure


def test_e_measure_empty_gt_branch_counts_background_agreement():
    fm = np.zeros((4, 4))
    fm[0, :3] = 1  # 3 false positives, 13 true negatives
    assert e_measure(fm, np.zeros((4, 4))) == pytest.approx(13 / 15, rel=1e-12)


def test_e_measure_full_gt_branch_counts_foreground_agreement():
    fm = np.zeros((4, 4))
    fm[0, :3] = 1
    assert e_measure(fm, np.ones((4, 4))) == pytest.approx(3 / 15, rel=1e-12)


def test_e_measure_perfect_prediction_is_n_over_n_minus_one():
    assert e_measure(GT4, GT4) == pytest.approx(16 / 15, rel=1e-12)


def test_e_measure_treats_any_nonzero_as_foreground_like_logical():
    fm = np.where(GT4, 0.3, 0.0)
    assert e_measure(fm, GT4) == e_measure(GT4, GT4)


# --------------------------------------------------------------------------- S-measure


def test_s_measure_empty_gt_is_one_minus_mean_prediction():
    pred = np.array([[0.2, 0.4], [0.6, 0.0]])
    assert s_measure(pred, np.zeros((2, 2), dtype=bool)) == pytest.approx(1 - 0.3)


def test_s_measure_full_gt_is_mean_prediction():
    pred = np.array([[0.2, 0.4], [0.6, 0.0]])
    assert s_measure(pred, np.ones((2, 2), dtype=bool)) == pytest.approx(0.3)


def test_s_measure_perfect_prediction_is_exactly_one():
    assert s_measure(GT4.astype(float), GT4) == 1.0


def test_s_measure_hand_computed_3x3():
    gt = np.array([[0, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
    pred = np.array([[0, 1, 0], [0, 0.5, 0], [0, 0, 0]], dtype=float)
    # Object: FG values {1, 0.5}: mean 0.75, std sqrt(0.125); BG (1 - pred) all 1 -> 1.
    s_obj = 2 / 9 * (1.5 / (0.75**2 + 1 + math.sqrt(0.125))) + 7 / 9
    # Region: centroid X = 2, Y = round(1.5) = 2; LT ssim = 192/225, the 3 others are 1;
    # weights 4/9, 2/9, 2/9, 1/9.
    s_reg = 4 / 9 * 192 / 225 + 5 / 9
    assert _s_object(pred, gt) == pytest.approx(s_obj, rel=1e-12)
    assert _s_region(pred, gt) == pytest.approx(s_reg, rel=1e-12)
    assert s_measure(pred, gt) == pytest.approx(0.5 * s_obj + 0.5 * s_reg, rel=1e-12)


def test_s_measure_single_foreground_pixel_uses_zero_std():
    # MATLAB std of one value is 0 (numpy ddof=1 would give NaN).
    gt = np.array([[1, 0], [0, 0]], dtype=bool)
    pred = np.array([[1.0, 0.0], [0.0, 0.5]])
    bg = np.array([1.0, 1.0, 0.5])
    o_bg = 2 * bg.mean() / (bg.mean() ** 2 + 1 + bg.std(ddof=1))
    s_obj = 0.25 * 1.0 + 0.75 * o_bg
    assert s_measure(pred, gt) == pytest.approx(0.5 * s_obj + 0.5 * 1.0, rel=1e-12)


def test_s_measure_alpha_weights_object_and_region_terms():
    gt = np.array([[0, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
    pred = np.array([[0, 1, 0], [0, 0.5, 0], [0, 0, 0]], dtype=float)
    assert s_measure(pred, gt, alpha=1.0) == pytest.approx(_s_object(pred, gt))
    assert s_measure(pred, gt, alpha=0.0) == pytest.approx(_s_region(pred, gt))


def test_s_measure_negative_score_is_clamped_to_zero():
    gt = np.array([[0, 1, 0], [0, 1, 1], [0, 1, 1]], dtype=bool)
    pred = 1.0 - gt
    # S_object = 0; regions LT, RT, LB have ssim -1, RB (gt 1, pred 0) has alpha = beta = 0 -> 1.
    assert _s_object(pred, gt) == 0.0
    assert _s_region(pred, gt) == pytest.approx(-8 / 9 + 1 / 9, rel=1e-12)
    assert s_measure(pred, gt) == 0.0


def test_s_measure_is_nan_when_centroid_in_last_column_like_matlab():
    gt = np.zeros((3, 3), dtype=bool)
    gt[:2, 2] = True  # centroid X = 3 = width -> right regions empty, mean2([]) = NaN
    assert _centroid(gt) == (3, 2)
    assert math.isnan(s_measure(gt.astype(float), gt))


def test_s_measure_rejects_prediction_outside_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        s_measure(np.full((2, 2), 1.5), np.eye(2, dtype=bool))


# --------------------------------------------------------------------------- centroid


def test_centroid_of_empty_gt_is_image_centre_rounded_half_away_from_zero():
    # 5 rows x 7 cols: X = round(7/2) = 4, Y = round(5/2) = 3 (np.round would give 2).
    assert _centroid(np.zeros((5, 7), dtype=bool)) == (4, 3)


def test_centroid_uses_one_based_indices_and_matlab_rounding():
    gt = np.zeros((4, 4), dtype=bool)
    gt[0, 1:3] = True  # columns 2 and 3 (1-based): X = round(2.5) = 3, Y = 1
    assert _centroid(gt) == (3, 1)


# --------------------------------------------------------------------------- MAE


def test_mae_is_mean_absolute_difference():
    pred = np.array([[1.0, 0.5], [0.25, 0.0]])
    gt = np.array([[1, 1], [0, 0]], dtype=bool)
    assert mae(pred, gt) == pytest.approx((0 + 0.5 + 0.25 + 0) / 4)


# --------------------------------------------------------------------------- GT binarisation


def test_gt_encodings_bool_01_and_0255_are_equivalent():
    pred = _pred4()
    ref = threshold_curves(pred, GT4)
    for gt in (GT4.astype(np.uint8), GT4.astype(np.uint8) * 255, GT4.astype(float)):
        got = threshold_curves(pred, gt)
        for key in ref:
            np.testing.assert_array_equal(got[key], ref[key])


def test_gt_0_255_is_binarised_above_128_like_main_m():
    gt = np.array([[128, 129], [0, 255]], dtype=np.uint8)
    assert mae(np.zeros((2, 2)), gt) == pytest.approx(2 / 4)  # 129 and 255 are foreground


# --------------------------------------------------------------------------- 8-bit PNG round trip


def test_png_roundtrip_stretches_minimum_to_0_and_maximum_to_255_not_prob_times_255():
    # scipy.misc.imsave -> bytescale stretches min..max to 0..255; round(prob*255) would give 51, 128, 204.
    out = infnet_png_roundtrip(np.array([[0.2, 0.5], [0.8, 0.8]]))
    np.testing.assert_array_equal(out * 255, [[0, 128], [255, 255]])  # 0.5 -> 127.5 -> rounds half up


def test_png_roundtrip_reproduces_the_bytescale_example_of_scipy_1_2_docs():
    # docs.scipy.org/doc/scipy-1.2.0/reference/generated/scipy.misc.bytescale.html, "bytescale(img)"
    img = np.array([[91.06794177, 3.39058326, 84.4221549],
                    [73.88003259, 80.91433048, 4.88878881],
                    [51.53875334, 34.45808177, 27.5873488]])
    np.testing.assert_array_equal(infnet_png_roundtrip(img) * 255, [[255, 0, 236], [205, 225, 4], [140, 90, 70]])


def test_png_roundtrip_rounds_half_up_like_bytescale():
    # range 0..510 -> scale 0.5 exactly: 1 -> 0.5 -> 1 and 5 -> 2.5 -> 3 (np.round: 0 and 2).
    out = infnet_png_roundtrip(np.array([[0.0, 1.0, 5.0, 510.0]]))
    np.testing.assert_array_equal(out * 255, [[0, 1, 3, 255]])


def test_png_roundtrip_gives_multiples_of_1_over_255_exactly_as_im2double():
    rng = np.random.default_rng(3)
    out = infnet_png_roundtrip(rng.random((9, 11)))
    k = np.round(out * 255)
    np.testing.assert_array_equal(out, k / 255.0)
    assert out.min() == 0.0 and out.max() == 1.0


def test_png_roundtrip_of_constant_map_is_all_zero():
    np.testing.assert_array_equal(infnet_png_roundtrip(np.full((3, 3), 0.7)), np.zeros((3, 3)))


def test_png_roundtrip_is_idempotent_on_8bit_maps():
    rng = np.random.default_rng(4)
    k = rng.integers(0, 256, size=(13, 7))
    k[0, 0], k[0, 1] = 0, 255
    np.testing.assert_array_equal(infnet_png_roundtrip(k / 255.0), k / 255.0)


def test_infnet_image_metrics_evaluates_the_8bit_map_by_default():
    rng = np.random.default_rng(5)
    pred = rng.random((16, 16))
    gt = rng.random((16, 16)) > 0.6
    assert infnet_image_metrics(pred, gt) == infnet_image_metrics(infnet_png_roundtrip(pred), gt, quantise_8bit=False)
    assert infnet_image_metrics(pred, gt) != infnet_image_metrics(pred, gt, quantise_8bit=False)


def test_emeasure_op_on_empty_gt_changes_mean_e_measure_by_n_over_256_n_minus_one():
    # Empty-GT branch, binary map with n0 zeros: ">" scores N (t = 1, nothing selected) + 255*n0, ">=" 255*n0
    # (t = 0 selects every pixel: 0); both over 256*(N - 1 + eps).
    pred = np.zeros((4, 4))
    pred[0, :3] = 1.0
    gt = np.zeros((4, 4), dtype=bool)
    gt_op = infnet_image_metrics(pred, gt)
    ge_op = infnet_image_metrics(pred, gt, emeasure_threshold_op="ge")
    assert {k for k in gt_op if gt_op[k] != ge_op[k]} == {"mean_e_measure_256"}
    assert gt_op["mean_e_measure_256"] - ge_op["mean_e_measure_256"] == pytest.approx(16 / (256 * 15), rel=1e-12)


def test_emeasure_op_leaves_mean_e_measure_of_8bit_map_on_exact_thresholds_unchanged():
    # Where every level k/255 of the map is itself a threshold, ">" at level k selects what ">=" selects at the
    # next level up, so the 256-threshold sums telescope to E(nothing) - E(everything) = 1/4 - 1/4 per pixel = 0
    # for a GT that is neither empty nor full. (With MATLAB's colon the ulp-off thresholds break this slightly.)
    rng = np.random.default_rng(6)
    pred = infnet_png_roundtrip(rng.random((20, 20)))
    gt = rng.random((20, 20)) > 0.7
    exact = (255 - np.arange(256)) / 255.0
    gt_op = threshold_curves(pred, gt, "gt", thresholds=exact)["e_measure"]
    ge_op = threshold_curves(pred, gt, "ge", thresholds=exact)["e_measure"]
    assert not np.array_equal(gt_op, ge_op)
    assert gt_op.mean() == pytest.approx(ge_op.mean(), rel=1e-12)


# --------------------------------------------------------------------------- per-image protocol


def test_infnet_image_metrics_keys():
    out = infnet_image_metrics(_pred4(), GT4)
    assert set(out) == {
        "mean_dice_256",
        "mean_sensitivity_256",
        "mean_specificity_256",
        "mean_e_measure_256",
        "s_measure",
        "mae",
    }
    assert all(isinstance(v, float) for v in out.values())


def test_infnet_image_metrics_perfect_prediction_exact_values():
    out = infnet_image_metrics(GT4.astype(float), GT4)
    assert out["mean_dice_256"] == pytest.approx((255 + 0.4) / 256, rel=1e-12)
    assert out["mean_sensitivity_256"] == 1.0
    assert out["mean_specificity_256"] == pytest.approx(255 / 256, rel=1e-12)
    assert out["mean_e_measure_256"] == pytest.approx((4 / 15 + 255 * 16 / 15) / 256, rel=1e-12)
    assert out["s_measure"] == 1.0
    assert out["mae"] == 0.0


def test_infnet_image_metrics_normalises_prediction_itself():
    pred = _pred4()
    a = infnet_image_metrics(pred, GT4)
    # range [0, 4]: mapminmax multiplies by 1/4 (exact), giving back the same map;
    # without normalisation the S-measure would reject values > 1.
    b = infnet_image_metrics(pred * 4.0, GT4)
    assert b == a


def test_dataset_mean_over_images_then_thresholds_equals_mean_of_per_image_means():
    rng = np.random.default_rng(7)
    preds = [rng.random((9, 11)) for _ in range(3)]
    gts = [rng.random((9, 11)) > 0.5 for _ in range(3)]
    maps = [minmax_normalise(infnet_png_roundtrip(p)) for p in preds]  # what main.m reads back from the PNGs
    table = np.stack([threshold_curves(m, g)["dice"] for m, g in zip(maps, gts)])
    protocol = table.mean(axis=0).mean()  # main.m: column_Dic = mean(.,1); meanDic = mean(column_Dic)
    per_image = np.mean([infnet_image_metrics(p, g)["mean_dice_256"] for p, g in zip(preds, gts)])
    assert per_image == pytest.approx(protocol, rel=1e-12)


def test_infnet_image_metrics_of_a_512x512_image_are_finite_and_in_range():
    # (its speed is a benchmark's business, not a test's: no wall-clock assertion)
    rng = np.random.default_rng(0)
    pred = rng.random((512, 512))
    gt = rng.random((512, 512)) > 0.8
    result = infnet_image_metrics(pred, gt)
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in result.values())


# --------------------------------------------------------------------------- errors


def test_shape_mismatch_raises_value_error():
    with pytest.raises(ValueError, match="same shape"):
        infnet_image_metrics(np.zeros((4, 4)), np.zeros((4, 5), dtype=bool))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_prediction_raises_value_error(bad):
    pred = _pred4()
    pred[1, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        infnet_image_metrics(pred, GT4)


def test_non_2d_input_raises_value_error():
    with pytest.raises(ValueError, match="2D"):
        threshold_curves(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="2D"):
        mae(np.zeros(16), np.zeros(16, dtype=bool))


def test_gt_out_of_range_raises_value_error():
    with pytest.raises(ValueError, match="gt values"):
        mae(np.zeros((2, 2)), np.array([[0, 300], [0, 0]]))
