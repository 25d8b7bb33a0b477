"""NumPy re-implementation of the Inf-Net MATLAB evaluation toolbox.

Reference
---------
D.-P. Fan, T. Zhou, G.-P. Ji, Y. Zhou, G. Chen, H. Fu, J. Shen, L. Shao,
"Inf-Net: Automatic COVID-19 Lung Infection Segmentation from CT Images",
IEEE Transactions on Medical Imaging 39(8), 2020 (section "Evaluation Metrics").
Official code: https://github.com/DengPingFan/Inf-Net, folder ``EvaluationTool/``.

The MATLAB files and what each one maps to here (all read from ``EvaluationTool/`` of
DengPingFan/Inf-Net at d4dd1e8, the repository's newest commit; the metric files have not
changed since fb3a03b, 2020-05-12, only ``main.m`` has, see below):

* ``main.m`` -- the per-image protocol implemented by :func:`infnet_image_metrics`:
  GT binarised with ``gt > 128`` (8-bit masks, line 97), the prediction read from
  an 8-bit PNG with ``im2double`` (line 110; :func:`infnet_png_roundtrip`),
  normalised with ``mapminmax(resmap(:)', 0, 1)`` (line 113;
  :func:`minmax_normalise`), S-measure on the normalised map, a loop over
  ``Thresholds = 1:-1/255:0`` (line 35; :data:`THRESHOLDS`) calling
  ``Fmeasure_calu`` (binarisation ``resmap >= threshold``) and ``Enhancedmeasure``
  on ``Bi_resmap`` (line 125, see "two versions" below), and
  ``MAE = mean2(abs(gt - resmap))`` (line 134). Reported numbers are ``meanDic``,
  ``meanSen``, ``meanSpe``, ``Sm``, ``meanEm``, ``MAE``: the per-threshold curves
  are averaged over images, then over the 256 thresholds.
* ``Fmeasure_calu.m`` -- Dice, sensitivity (recall), specificity (and precision)
  at one threshold: :func:`threshold_curves`.
* ``Enhancedmeasure.m`` (E-measure; Fan et al., "Enhanced-alignment Measure for
  Binary Foreground Map Evaluation", IJCAI 2018): :func:`e_measure`.
* ``StructureMeasure.m``, ``S_object.m``, ``S_region.m`` and its local functions
  ``centroid``, ``divideGT``, ``Divideprediction``, ``ssim`` (S-measure; Fan et
  al., "Structure-measure: A New Way to Evaluate Foreground Maps", ICCV 2017):
  :func:`s_measure`.
* MATLAB's own ``mapminmax`` (Deep Learning / Neural Network Toolbox, NNT >= 7)
  and the colon operator ``1:-1/255:0``: :func:`minmax_normalise`,
  :data:`THRESHOLDS`.
* The test script ``MyTest_LungInf.py`` and SciPy's ``misc.imsave``, which write
  the maps that ``main.m`` reads: :func:`infnet_png_roundtrip`.

Two versions of ``main.m``
--------------------------
Line 125 binarised the map for the E-measure with ``Bi_resmap(resmap>threshold)=1``
from the first version (1617422, 2020-05-12) until 2020-11-21, when commit e723632
("Update main.m") changed it to ``resmap>=threshold``, the rule ``Fmeasure_calu``
uses for Dice. The paper's table was produced in May 2020, with ``>``; this port
therefore defaults to ``>`` (``emeasure_threshold_op="gt"``) and offers the current
file's ``>=`` as ``emeasure_threshold_op="ge"``. (An earlier version of this module
said it followed the current ``main.m`` while implementing ``>``.)

The two rules differ only where a map value equals a threshold, so for a float map
almost never, and for an 8-bit map (below) less than one would think: when every
level ``k/255`` of the map is itself a threshold, ``>`` at one level selects what
``>=`` selects at the next level up, the 256-threshold sum telescopes, and
``meanEm`` changes by ``(E(nothing selected) - E(everything selected)) / 256``,
which is 0 for a GT that is neither empty nor full (both score 1/4 a pixel) and
``H*W / (256 * (H*W - 1))`` (~0.0039) for an empty GT. MATLAB's ``1:-1/255:0``
misses ``k/255`` by an ulp at 36 of the 256 levels, which breaks the telescoping a
little: on the real slices of the Octave cross-check, ``meanEm(>) - meanEm(>=)``
was between -2.1e-4 and 1.4e-4 per slice, and 3.7e-3 on an empty GT.

8-bit maps
----------
Inf-Net's test script writes every map as an 8-bit PNG and ``main.m`` reads it
back, so the values that meet the 256 thresholds are multiples of 1/255 and tie
with them. :func:`infnet_image_metrics` reproduces that round trip by default
(``quantise_8bit=True``); :func:`infnet_png_roundtrip` documents each step
(min-max stretch to 0..255, rounding half up, ``k/255``). On the synthetic maps
of the Octave cross-check the round trip moves the 256-threshold means by up to
2e-3 (about half a threshold step) and the S-measure and MAE by ~1e-5.

Cross-check with GNU Octave
---------------------------
``tests/test_infnet_octave.py`` runs the upstream ``.m`` files under GNU Octave
(from the folder ``INFNET_EVALTOOL_DIR``; skipped without it, without
``octave-cli`` or without the real data) on four real COVID-19 GT slices and an
empty GT with synthetic 8-bit prediction maps, and compares every per-image
figure with this port. Given Octave's own threshold vector they agree: Dice,
sensitivity and specificity curves exactly, S-measure and MAE to 1e-12 (measured
1.5e-13), E-measure to 1e-11 (measured 4.4e-12; Octave sums the pixels one by
one, :func:`_e_measure_from_counts` four weighted values). With :data:`THRESHOLDS`
they differ, because Octave builds ``1:-1/255:0`` as ``base + k*increment``
while MATLAB (emulated here) fills it from both ends: 72 of the 256 entries differ
by 1 to 24 ulps (at most 6.9e-17), an 8-bit level lying between the two values
flips as a whole, a single threshold's Dice / specificity / E-measure moves by up
to 0.017 / 0.064 / 0.15, and a per-image 256-threshold mean by up to 2.1e-3
(asserted: 2.5e-3). Results of ``main.m`` run under Octave therefore differ from
MATLAB's (and this port's) in the third decimal.

The toolbox's quirks are reproduced on purpose (each one is documented on the
function concerned):

* ``mapminmax`` leaves a constant map (or one whose range is below ~1e-14)
  unchanged instead of mapping it to 0; there is no ``eps`` in its denominator;
  it multiplies by the reciprocal of the range (so the maximum can come out as
  ``1 - 2**-53`` and then fails ``>= 1`` at the first threshold).
* ``Fmeasure_calu`` sets every score to 0 when ``TP == 0`` (so an image with an
  empty GT scores Dice = sensitivity = specificity = 0 at every threshold), and
  its specificity ``TN / (TN + FP)`` is ``0/0 = NaN`` for a full GT when TP > 0.
* ``Enhancedmeasure`` divides by ``H*W - 1 + eps`` (a perfect prediction scores
  ``H*W / (H*W - 1)`` > 1), has special branches for an all-zero / all-one GT,
  and puts ``eps`` in the alignment denominator.
* ``StructureMeasure`` returns ``1 - mean(pred)`` / ``mean(pred)`` for an
  all-zero / all-one GT, clamps negative scores to 0, rounds the GT centroid
  with MATLAB's ``round`` (half away from zero) on 1-based indices, and gives
  ``NaN`` when the centroid falls in the last row or column (one of the four
  regions is then empty and ``mean2`` of an empty array is ``NaN``; its zero
  weight does not stop ``0 * NaN = NaN``).

``eps`` is MATLAB's ``eps`` = ``2.220446049250313e-16`` (= ``np.finfo(float).eps``).
The 256-threshold loop is vectorised with sorted values and ``np.searchsorted``
(exact integer confusion counts, identical to the loop; the E-measure sums the
four possible per-pixel values weighted by their counts, equal to the loop up to
floating-point summation order: ~1e-15 relative on small maps, up to ~5e-12 on
the 400 x 400 slices of the Octave cross-check).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "EPS",
    "THRESHOLDS",
    "EMEASURE_OPS",
    "infnet_png_roundtrip",
    "minmax_normalise",
    "threshold_curves",
    "s_measure",
    "e_measure",
    "mae",
    "infnet_image_metrics",
]

#: MATLAB's ``eps`` (distance from 1.0 to the next double), used by every file of the toolbox.
EPS: float = float(np.finfo(np.float64).eps)


def _matlab_round(x: float) -> int:
    """MATLAB ``round``: half away from zero (``np.round`` rounds half to even)."""
    ax = abs(x)
    r = math.floor(ax)
    if ax - r >= 0.5:  # exact for doubles, unlike floor(ax + 0.5)
        r += 1
    return int(r) if x >= 0 else -int(r)


def _matlab_colon(a: float, d: float, b: float) -> np.ndarray:
    """Emulate MATLAB's ``a:d:b`` for a non-integer step (MathWorks' ``colonop`` algorithm).

    MATLAB does not accumulate ``a + k*d`` over the whole range: it fills the
    first half with ``a + k*d`` and the second half with ``last - k*d`` (``last``
    snapped to ``b`` when within ``2*eps*max(|a|,|b|)``), and an even count puts
    ``(a + last)/2`` in the middle, so the vector is symmetric. For
    ``1:-1/255:0`` this differs from ``np.linspace(1, 0, 256)`` by at most one ulp
    in 72 entries, which only matters for map values exactly on a threshold.
    """
    tol = 2.0 * EPS * max(abs(a), abs(b))
    sig = math.copysign(1.0, d)
    n = _matlab_round((b - a) / d)
    if sig * (a + n * d - b) > tol:
        n -= 1
    last = a + n * d
    if sig * (last - b) > -tol:
        last = b
    v = np.zeros(n + 1, dtype=np.float64)
    k = np.arange(0, n // 2 + 1, dtype=np.float64)
    ki = k.astype(np.int64)
    v[ki] = a + k * d
    v[n - ki] = last - k * d
    if n % 2 == 0:
        v[n // 2] = (a + last) / 2.0
    return v


#: ``Thresholds = 1:-1/255:0`` of ``main.m``: shape (256,), float64, from 1.0 down to 0.0.
THRESHOLDS: np.ndarray = _matlab_colon(1.0, -1.0 / 255.0, 0.0)
THRESHOLDS.setflags(write=False)

#: E-measure binarisation of ``main.m`` line 125: ``"gt"`` = ``resmap > threshold`` (the published
#: table, May 2020), ``"ge"`` = ``resmap >= threshold`` (since commit e723632, 2020-11-21).
EMEASURE_OPS: dict[str, str] = {"gt": ">", "ge": ">="}


def _check_emeasure_op(op: str) -> str:
    if op not in EMEASURE_OPS:
        raise ValueError(f"emeasure_threshold_op must be one of {sorted(EMEASURE_OPS)}, got {op!r}")
    return op


# --------------------------------------------------------------------------- validation


def _check_2d(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2D (H, W) array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ValueError(f"{name} must be numeric or boolean, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} must be real-valued, got dtype {arr.dtype}")
    return arr


def _as_pred(pred: np.ndarray, name: str = "pred") -> np.ndarray:
    arr = _check_2d(pred, name).astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str = "pred", name_b: str = "gt") -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape} "
            "(resize the prediction to the GT size first, as main.m does with imresize)"
        )


def _binarise_gt(gt: np.ndarray) -> np.ndarray:
    """Binarise a ground-truth mask (the rule used by every public function).

    * boolean -> used as is (``main.m`` keeps a logical GT unchanged);
    * numeric with maximum <= 1 (0/1 masks, or soft masks in [0, 1]) -> ``gt > 0.5``;
    * numeric with maximum in (1, 255] (0/255 8-bit masks) -> ``gt > 128``, the
      rule of ``main.m`` (``gt = gt(:,:,1) > 128``).

    Raises ValueError for non-2D, empty, NaN/inf, negative or > 255 values.
    """
    arr = _check_2d(gt, "gt")
    if arr.dtype == np.bool_:
        return arr.copy()
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("gt contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 255:
        raise ValueError(
            f"gt values must lie in [0, 1] or [0, 255] (bool, 0/1 or 0/255 masks), got range [{lo}, {hi}]"
        )
    if hi <= 1.0:
        return arr > 0.5
    return arr > 128


# --------------------------------------------------------------------------- normalisation


def minmax_normalise(pred: np.ndarray) -> np.ndarray:
    """Min-max normalise a map to [0, 1] exactly like ``main.m``'s ``mapminmax(resmap(:)', 0, 1)``.

    ``main.m`` does not use ``(x - min) / (max - min + eps)``: it calls MATLAB's
    ``mapminmax`` (NNT >= 7: ``+mapminmax/create.m`` and ``apply.m``), which
    computes ``gain = 1 / (max - min)`` and ``y = (x - min) * gain + 0``. When
    the range is 0, not finite, or so small that ``|gain| > 1e14``, mapminmax
    sets ``gain = 1`` and the offset to ``ymin = 0``, i.e. **returns the map
    unchanged** (a constant map of 0.7 stays 0.7, not 0). Both behaviours are
    reproduced on purpose, including the multiply-by-reciprocal rounding (the
    maximum may come out as ``1 - 2**-53`` rather than exactly 1).

    (``main.m`` reads the map from an 8-bit PNG via ``im2double``; this function
    does not quantise, :func:`infnet_png_roundtrip` does. On a round-tripped map,
    which holds both 0 and 1 unless it is constant, mapminmax is the identity.)

    Args:
        pred: (H, W) real array, any range; bool/int are cast to float64.

    Returns:
        (H, W) float64 array, in [0, 1] unless the map was left unchanged.

    Raises:
        ValueError: if ``pred`` is not a non-empty 2D real array or contains NaN/inf.
    """
    x = _as_pred(pred)
    xmin = float(x.min())
    xmax = float(x.max())
    xrange = xmax - xmin
    gain = 1.0 / xrange if xrange != 0 else math.inf
    if (not math.isfinite(xrange)) or xrange == 0 or abs(gain) > 1e14:
        gain, offset = 1.0, 0.0
    else:
        offset = xmin
    return (x - offset) * gain + 0.0


def infnet_png_roundtrip(pred: np.ndarray) -> np.ndarray:
    """The map ``main.m`` reads back after Inf-Net's test script saved ``pred`` as an 8-bit PNG.

    Inf-Net never evaluates a float map: ``MyTest_LungInf.py`` (lines 57-59 at d4dd1e8;
    lines 39-41 in the May 2020 version 1617422) does

    1. ``res = (res - res.min()) / (res.max() - res.min() + 1e-8)`` on the float32
       sigmoid map;
    2. ``misc.imsave(path, res)`` with SciPy 1.2.2 (its ``requirements.txt``), which
       calls ``toimage`` -> ``bytescale(data, high=255, low=0)``: with ``cmin, cmax``
       the map's minimum and maximum (``cmax - cmin`` replaced by 1 when 0), it computes
       ``(data - cmin) * (255 / (cmax - cmin))``, clips to [0, 255], adds 0.5 and casts
       to ``uint8`` (truncation), i.e. **stretches min..max to 0..255 and rounds half
       up**. It does *not* compute ``round(prob * 255)``: the maximum of every map is
       saved as 255 and its minimum as 0, whatever their probabilities;

    and ``main.m`` line 110 reads it with ``im2double``, giving ``k / 255``.

    Resizing happens before step 1 upstream (May 2020: bilinear upsampling of the
    logits to the GT size; since 8cbf357 no resizing in the script and ``main.m``
    ``imresize``-s the uint8 PNG); here the caller passes a map at the GT size.

    Both steps are computed in float32 as in the script (NumPy 1.18 promotion: the
    Python-float scalars ``1e-8`` and ``255 / cscale`` are rounded to float32 before
    they meet the float32 array), so a value exactly on a rounding boundary goes the
    same way as upstream. A constant map becomes all 0 (step 1 divides 0 by 1e-8).
    The round trip is idempotent on maps of multiples of 1/255 that contain 0 and 1.

    Args:
        pred: (H, W) real map, any finite range (normally the foreground
            probability); bool/int are cast.

    Returns:
        (H, W) float64 array of values ``k / 255``, ``k`` in 0..255; it holds 0 and 1
        unless ``pred`` is constant (then it is all 0).

    Raises:
        ValueError: if ``pred`` is not a non-empty 2D real array or contains NaN/inf.
    """
    x = _as_pred(pred).astype(np.float32)
    lo = x.min()
    res = (x - lo) / np.float32(float(x.max() - lo) + 1e-8)  # MyTest_LungInf.py line 58
    cmin, cmax = res.min(), res.max()  # scipy.misc.bytescale
    cscale = cmax - cmin
    if cscale == 0:
        cscale = np.float32(1.0)
    scaled = (res - cmin) * np.float32(255.0 / float(cscale))
    k = (np.clip(scaled, np.float32(0), np.float32(255)) + np.float32(0.5)).astype(np.uint8)
    return k.astype(np.float64) / 255.0  # main.m: im2double


# --------------------------------------------------------------------------- E-measure


def _e_measure_from_counts(
    tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray, n_obj: int, n_total: int
) -> np.ndarray:
    """``Enhancedmeasure.m`` from confusion counts (vectorised over thresholds).

    For a binary map and a binary GT the per-pixel enhanced-alignment value only
    depends on the (FM, GT) pair, so the sum over pixels is
    ``TP*v11 + FP*v10 + FN*v01 + TN*v00`` with the very same per-pixel values as
    the MATLAB code.
    """
    tp, fp, fn, tn = (np.asarray(c, dtype=np.float64) for c in (tp, fp, fn, tn))
    denom = (n_total - 1) + EPS  # [w,h] = size(GT); w*h - 1 + eps
    npos = tp + fp
    if n_obj == 0:  # sum(dGT(:)) == 0: enhanced_matrix = 1 - dFM
        return (n_total - npos) / denom
    if n_obj == n_total:  # sum(~dGT(:)) == 0: enhanced_matrix = dFM
        return npos / denom
    mu_fm = npos / n_total  # mean2(dFM)
    mu_gt = n_obj / n_total  # mean2(dGT)

    def enhanced(fm_value: float, gt_value: float) -> np.ndarray:
        align_fm = fm_value - mu_fm
        align_gt = gt_value - mu_gt
        align = 2.0 * (align_gt * align_fm) / (align_gt * align_gt + align_fm * align_fm + EPS)
        return ((align + 1.0) ** 2) / 4.0

    total = tp * enhanced(1.0, 1.0) + fp * enhanced(1.0, 0.0) + fn * enhanced(0.0, 1.0) + tn * enhanced(0.0, 0.0)
    return total / denom


def e_measure(pred_binary: np.ndarray, gt: np.ndarray) -> float:
    """Enhanced-alignment measure of a binary map (``Enhancedmeasure.m``; Fan et al., IJCAI 2018).

    With ``phi_X = X - mean(X)`` (FM and GT as doubles) the alignment matrix is
    ``xi = 2 * phi_GT * phi_FM / (phi_GT^2 + phi_FM^2 + eps)``, the enhanced
    alignment ``(xi + 1)^2 / 4`` and the score its sum divided by
    ``H*W - 1 + eps`` (the toolbox's denominator, reproduced on purpose: a perfect
    prediction scores ``H*W / (H*W - 1)``, slightly above 1). Special cases of the
    MATLAB file, reproduced: all-zero GT -> enhanced matrix ``1 - FM`` (score
    ``#(FM == 0) / (H*W - 1 + eps)``); all-one GT -> enhanced matrix ``FM``.

    Args:
        pred_binary: (H, W) binary map; like MATLAB's ``logical(FM)`` every
            non-zero value counts as foreground. (``main.m`` builds it as
            ``normalised_pred > threshold``, or ``>=`` since e723632.)
        gt: (H, W) ground truth, bool / 0-1 / 0-255 (see ``_binarise_gt``).

    Returns:
        float in [0, H*W / (H*W - 1)].

    Raises:
        ValueError: non-2D/empty input, shape mismatch, NaN/inf in ``pred_binary``, invalid gt values.
    """
    fm = _as_pred(pred_binary, "pred_binary") != 0
    g = _binarise_gt(gt)
    _check_same_shape(fm, g, "pred_binary", "gt")
    n_total = fm.size
    n_obj = int(g.sum())
    tp = int(np.count_nonzero(fm & g))
    fp = int(np.count_nonzero(fm)) - tp
    fn = n_obj - tp
    tn = n_total - tp - fp - fn
    return float(_e_measure_from_counts(tp, fp, fn, tn, n_obj, n_total))


# --------------------------------------------------------------------------- threshold curves


def threshold_curves(
    pred: np.ndarray,
    gt: np.ndarray,
    emeasure_threshold_op: str = "gt",
    thresholds: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-threshold Dice, sensitivity, specificity and E-measure (``main.m`` loop).

    For every ``t`` in :data:`THRESHOLDS` (1, 1-1/255, ..., 0):

    * ``Fmeasure_calu.m`` on ``pred >= t``: with TP, FP, FN, TN counted against
      the GT, ``dice = 2*TP / (|GT| + |pred >= t|)``, ``sensitivity = TP / |GT|``,
      ``specificity = TN / (TN + FP)``; **all three are 0 when TP == 0**
      (MATLAB's ``if NumAnd == 0`` branch, reproduced: an empty GT gives 0
      everywhere, even for a perfect empty prediction). For a full GT and
      TP > 0 the specificity is ``0/0 = NaN``, as in MATLAB.
    * ``Enhancedmeasure.m`` on ``pred > t`` (``emeasure_threshold_op="gt"``, the
      ``main.m`` of the published table) or ``pred >= t`` (``"ge"``, ``main.m``
      since 2020-11-21), see :func:`e_measure` and the module docstring.

    Vectorised: the map is sorted once and the counts for all thresholds come
    from ``np.searchsorted``; Dice / sensitivity / specificity are bit-identical
    to the per-threshold loop, the E-measure equal up to summation order.

    Args:
        pred: (H, W) map, normally the output of :func:`minmax_normalise` (any
            finite range is accepted, as ``Fmeasure_calu`` does not check it).
        gt: (H, W) ground truth, bool / 0-1 / 0-255.
        emeasure_threshold_op: ``"gt"`` (``>``, default) or ``"ge"`` (``>=``).
        thresholds: 1D threshold vector replacing :data:`THRESHOLDS` (e.g. the
            one another implementation of ``1:-1/255:0`` produced, to compare
            with it); default :data:`THRESHOLDS`.

    Returns:
        dict with keys ``"dice"``, ``"sensitivity"``, ``"specificity"``,
        ``"e_measure"``; each a float64 array of shape (256,) aligned with
        :data:`THRESHOLDS` (index 0 is threshold 1, index 255 threshold 0).
        Values in [0, 1] (E-measure up to ``H*W / (H*W - 1)``; specificity NaN
        for a full GT).

    Raises:
        ValueError: non-2D/empty input, shape mismatch, NaN/inf in ``pred``, invalid gt values,
            unknown ``emeasure_threshold_op``, or ``thresholds`` not a non-empty finite 1D array.
    """
    p = _as_pred(pred)
    g = _binarise_gt(gt)
    _check_same_shape(p, g)
    side = "right" if _check_emeasure_op(emeasure_threshold_op) == "gt" else "left"
    t = THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)):
        raise ValueError(f"thresholds must be a non-empty finite 1D array, got shape {t.shape}")
    flat = p.ravel()
    gflat = g.ravel()
    n_total = flat.size
    all_sorted = np.sort(flat)
    fg_sorted = np.sort(flat[gflat])
    n_obj = int(fg_sorted.size)  # num_obj = sum(sum(gtMap))

    # Fmeasure_calu: Label3(sMap >= threshold) = 1
    num_rec = n_total - np.searchsorted(all_sorted, t, side="left")  # FP + TP
    num_and = n_obj - np.searchsorted(fg_sorted, t, side="left")  # TP
    num_no_rec = n_total - num_rec  # FN + TN
    fn = n_obj - num_and
    fp = num_rec - num_and
    tn = num_no_rec - fn
    has_tp = num_and != 0
    tp_f = num_and.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        sens = np.where(has_tp, tp_f / n_obj if n_obj else 0.0, 0.0)
        spec = np.where(has_tp, tn / (tn + fp).astype(np.float64), 0.0)
        dice = np.where(has_tp, (2.0 * tp_f) / (n_obj + num_rec), 0.0)

    # main.m: Bi_resmap(resmap > threshold) = 1 (">=" since e723632); Enhancedmeasure(Bi_resmap, gt)
    npos_gt = n_total - np.searchsorted(all_sorted, t, side=side)
    tp_gt = n_obj - np.searchsorted(fg_sorted, t, side=side)
    fp_gt = npos_gt - tp_gt
    fn_gt = n_obj - tp_gt
    tn_gt = n_total - npos_gt - fn_gt
    emeasure = _e_measure_from_counts(tp_gt, fp_gt, fn_gt, tn_gt, n_obj, n_total)

    return {
        "dice": np.asarray(dice, dtype=np.float64),
        "sensitivity": np.asarray(sens, dtype=np.float64),
        "specificity": np.asarray(spec, dtype=np.float64),
        "e_measure": np.asarray(emeasure, dtype=np.float64),
    }


# --------------------------------------------------------------------------- S-measure


def _centroid(gt: np.ndarray) -> tuple[int, int]:
    """``centroid`` of ``S_region.m``: 1-based MATLAB ``(X, Y)`` = (column, row).

    Empty GT: ``X = round(cols/2)``, ``Y = round(rows/2)`` (the image centre).
    Otherwise ``X = round(sum_j colsum_j * j / total)`` and likewise for Y with
    1-based ``j``. ``round`` is MATLAB's (half away from zero), reproduced on
    purpose: e.g. ``round(2.5) = 3`` where ``np.round`` gives 2. The sums are
    integers (exact in float64), so the rounding decision matches MATLAB's.
    """
    g = np.asarray(gt, dtype=bool)
    rows, cols = g.shape
    total = int(g.sum())
    if total == 0:
        return _matlab_round(cols / 2), _matlab_round(rows / 2)
    col_idx = np.arange(1, cols + 1, dtype=np.int64)
    row_idx = np.arange(1, rows + 1, dtype=np.int64)
    sx = int((g.sum(axis=0).astype(np.int64) * col_idx).sum())
    sy = int((g.sum(axis=1).astype(np.int64) * row_idx).sum())
    return _matlab_round(sx / total), _matlab_round(sy / total)


def _ssim_region(pred: np.ndarray, gt: np.ndarray) -> float:
    """``ssim`` sub-function of ``S_region.m`` (not Wang et al.'s windowed SSIM).

    ``x, y`` means, ``sigma_x2, sigma_y2, sigma_xy`` sums of squares /
    cross-products divided by ``N - 1 + eps``; ``alpha = 4*x*y*sigma_xy``,
    ``beta = (x^2 + y^2)(sigma_x2 + sigma_y2)``; score ``alpha / (beta + eps)``
    if ``alpha != 0``, 1 if ``alpha == beta == 0``, else 0. An empty region
    gives NaN, like MATLAB's ``mean2([])``.
    """
    n = pred.size
    if n == 0:
        return math.nan
    d_gt = gt.astype(np.float64)
    x = float(pred.mean())
    y = float(d_gt.mean())
    dx = pred - x
    dy = d_gt - y
    denom = (n - 1) + EPS
    sigma_x2 = float((dx * dx).sum()) / denom
    sigma_y2 = float((dy * dy).sum()) / denom
    sigma_xy = float((dx * dy).sum()) / denom
    alpha = 4.0 * x * y * sigma_xy
    beta = (x * x + y * y) * (sigma_x2 + sigma_y2)
    if alpha != 0:
        return alpha / (beta + EPS)
    if beta == 0:
        return 1.0
    return 0.0


def _s_region(pred: np.ndarray, gt: np.ndarray) -> float:
    """``S_region.m``: split at the GT centroid, area-weighted sum of 4 region scores.

    ``LT = (1:Y, 1:X)``, ``RT = (1:Y, X+1:end)``, ``LB = (Y+1:end, 1:X)``,
    ``RB = (Y+1:end, X+1:end)`` in MATLAB's 1-based inclusive indexing, i.e.
    ``[:Y, :X]``, ``[:Y, X:]``, ``[Y:, :X]``, ``[Y:, X:]`` here; weights
    ``X*Y/area``, ``(W-X)*Y/area``, ``X*(H-Y)/area`` and ``1 - w1 - w2 - w3``.
    A zero-weight empty region still contributes ``0 * NaN = NaN`` (MATLAB
    behaviour, kept).
    """
    hei, wid = gt.shape
    X, Y = _centroid(gt)
    area = wid * hei
    w1 = (X * Y) / area
    w2 = ((wid - X) * Y) / area
    w3 = (X * (hei - Y)) / area
    w4 = 1.0 - w1 - w2 - w3
    q1 = _ssim_region(pred[:Y, :X], gt[:Y, :X])
    q2 = _ssim_region(pred[:Y, X:], gt[:Y, X:])
    q3 = _ssim_region(pred[Y:, :X], gt[Y:, :X])
    q4 = _ssim_region(pred[Y:, X:], gt[Y:, X:])
    return w1 * q1 + w2 * q2 + w3 * q3 + w4 * q4


def _object_score(values: np.ndarray) -> float:
    """``Object`` sub-function of ``S_object.m`` on the selected pixels.

    ``2 * x / (x^2 + 1 + sigma_x + eps)`` with ``x`` the mean and ``sigma_x``
    MATLAB's ``std`` (N - 1 normalisation, 0 for a single value).
    """
    if values.size == 0:  # cannot happen when 0 < mean(GT) < 1
        return math.nan
    x = float(values.mean())
    sigma_x = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return 2.0 * x / (x * x + 1.0 + sigma_x + EPS)


def _s_object(pred: np.ndarray, gt: np.ndarray) -> float:
    """``S_object.m``: ``u * O_FG + (1 - u) * O_BG`` with ``u = mean(GT)``.

    ``O_FG`` scores ``pred`` inside the GT, ``O_BG`` scores ``1 - pred`` outside it.
    """
    o_fg = _object_score(pred[gt])
    o_bg = _object_score(1.0 - pred[~gt])
    u = float(gt.mean())
    return u * o_fg + (1.0 - u) * o_bg


def s_measure(pred: np.ndarray, gt: np.ndarray, alpha: float = 0.5) -> float:
    """Structure-measure (``StructureMeasure.m``; Fan et al., ICCV 2017).

    ``S = alpha * S_object + (1 - alpha) * S_region`` (``alpha = 0.5`` in the
    toolbox), clamped to 0 when negative. Branches reproduced from the MATLAB file:

    * all-zero GT (``mean2(GT) == 0``): ``S = 1 - mean(pred)``;
    * all-one GT (``mean2(GT) == 1``): ``S = mean(pred)``;
    * otherwise the object-aware term (:func:`_s_object`) and the region-aware
      term (:func:`_s_region`: split at the GT centroid rounded MATLAB-style to
      1-based indices, ``ssim`` with ``N - 1 + eps`` denominators and its
      ``alpha == beta == 0 -> 1`` rule). If the centroid lies in the last row or
      column, one region is empty and, exactly as in MATLAB, the result is NaN.

    Args:
        pred: (H, W) map in [0, 1] (the output of :func:`minmax_normalise`).
        gt: (H, W) ground truth, bool / 0-1 / 0-255.
        alpha: weight of the object-aware term, in [0, 1].

    Returns:
        float in [0, 1] (NaN in the empty-region case above).

    Raises:
        ValueError: non-2D/empty input, shape mismatch, NaN/inf, ``pred``
            outside [0, 1] (StructureMeasure.m errors too), invalid gt or alpha.
    """
    p = _as_pred(pred)
    g = _binarise_gt(gt)
    _check_same_shape(p, g)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if p.max() > 1 or p.min() < 0:
        raise ValueError(
            "pred must lie in [0, 1] for the S-measure (StructureMeasure.m raises the same error); "
            "normalise it with minmax_normalise first"
        )
    y = float(g.mean())
    if y == 0:
        return float(1.0 - p.mean())
    if y == 1:
        return float(p.mean())
    q = alpha * _s_object(p, g) + (1.0 - alpha) * _s_region(p, g)
    if q < 0:
        q = 0.0
    return float(q)


# --------------------------------------------------------------------------- MAE


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error ``mean2(abs(double(logical(gt)) - resmap))`` of ``main.m``.

    Args:
        pred: (H, W) map, normally the output of :func:`minmax_normalise`.
        gt: (H, W) ground truth, bool / 0-1 / 0-255.

    Returns:
        float >= 0 (in [0, 1] for a map in [0, 1]).

    Raises:
        ValueError: non-2D/empty input, shape mismatch, NaN/inf in ``pred``, invalid gt values.
    """
    p = _as_pred(pred)
    g = _binarise_gt(gt)
    _check_same_shape(p, g)
    return float(np.abs(g.astype(np.float64) - p).mean())


# --------------------------------------------------------------------------- per-image protocol


def infnet_image_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    quantise_8bit: bool = True,
    emeasure_threshold_op: str = "gt",
) -> dict[str, float]:
    """All per-image numbers of Inf-Net's ``main.m`` for one prediction / GT pair.

    Steps: binarise GT (bool as is; max <= 1 -> ``> 0.5``; 0..255 -> ``> 128``
    as ``main.m``), the 8-bit PNG round trip of Inf-Net's test script and
    ``main.m`` (:func:`infnet_png_roundtrip`, unless ``quantise_8bit=False``),
    ``pred = minmax_normalise(pred)`` (``mapminmax``), then S-measure and MAE on
    the normalised map and the means over the 256 thresholds of the
    :func:`threshold_curves` curves.

    ``main.m`` averages each curve over images first (``column_Dic =
    mean(threshold_Dice, 1)``) and then over thresholds (``meanDic =
    mean(column_Dic)``). Both are plain means over a full image x threshold
    table, so the dataset value equals the mean over images of the per-image
    ``mean_*_256`` returned here. (NaN propagates in both orders.)

    Args:
        pred: (H, W) raw probability map (any finite range), already resized to
            the GT size by the caller.
        gt: (H, W) ground truth, bool / 0-1 / 0-255.
        quantise_8bit: evaluate the map Inf-Net would have saved and read back
            (default, as the published figures were computed); ``False`` uses the
            float map as given.
        emeasure_threshold_op: ``"gt"`` (``>``, the published table, default) or
            ``"ge"`` (``>=``, ``main.m`` since 2020-11-21); see the module docstring.

    Returns:
        dict with float values and keys ``"mean_dice_256"``,
        ``"mean_sensitivity_256"``, ``"mean_specificity_256"``,
        ``"mean_e_measure_256"``, ``"s_measure"``, ``"mae"``.

    Raises:
        ValueError: non-2D/empty input, shape mismatch, NaN/inf in ``pred``,
            invalid gt values, unknown ``emeasure_threshold_op``, or (with
            ``quantise_8bit=False``) a constant map outside [0, 1] (mapminmax
            leaves it unchanged and StructureMeasure.m rejects it).
    """
    p = _as_pred(pred)
    g = _binarise_gt(gt)
    _check_same_shape(p, g)
    _check_emeasure_op(emeasure_threshold_op)
    if quantise_8bit:
        p = infnet_png_roundtrip(p)
    p = minmax_normalise(p)
    curves = threshold_curves(p, g, emeasure_threshold_op)
    return {
        "mean_dice_256": float(np.mean(curves["dice"])),
        "mean_sensitivity_256": float(np.mean(curves["sensitivity"])),
        "mean_specificity_256": float(np.mean(curves["specificity"])),
        "mean_e_measure_256": float(np.mean(curves["e_measure"])),
        "s_measure": s_measure(p, g),
        "mae": mae(p, g),
    }
