"""tools.metrics.infnet against Inf-Net's own MATLAB files, run under GNU Octave.

Opt-in: the upstream ``.m`` files are not part of this repository, so the test reads them from the folder named
by ``INFNET_EVALTOOL_DIR`` (``EvaluationTool/`` of https://github.com/DengPingFan/Inf-Net) and needs
``octave-cli`` (Debian: ``apt-get install octave``) and the real GT masks under ``SEG_DATA_ROOT``
(``covid19_ct_lesion_medseg/TrainingSet/LungInfection-Train/Doctor-label/GT``); it skips, saying which, without
any of them. Octave lacks ``mean2`` (image package) and ``mapminmax`` (MATLAB's Deep Learning Toolbox), so the
test puts two small stand-ins on Octave's path: ``mean2`` as MATLAB defines it (``sum(x(:)) / numel(x)``) and
``mapminmax`` restricted to what ``main.m`` needs (the maps here hold 0 and 255, where it is the identity).

Inputs: 4 real GT slices plus an all-empty GT, each with a synthetic prediction (the GT blurred, shifted and
noised, seeded) saved as the 8-bit PNG Inf-Net's test script would write (:func:`infnet_png_roundtrip`).
Octave runs ``main.m``'s per-image body (lines 90-134) on the PNGs; the port gets the same PNG's ``k/255`` values.

What must agree, and why:

* Given Octave's own threshold vector, the port reproduces every per-image curve: Dice, sensitivity and
  specificity exactly; S-measure and MAE to 1e-12 (measured <= 1.5e-13) and the E-measure, both ``>`` and
  ``>=``, to 1e-11 (measured <= 4.4e-12, 5e-12 relative): Octave sums ~10^5 per-pixel values one by one, the
  port sums four values weighted by their counts.
* With the port's :data:`THRESHOLDS` (MATLAB's colon) they differ, and only because the threshold vectors do:
  Octave computes ``1:-1/255:0`` as ``base + k*increment``, MATLAB from both ends, and 72 of the 256 entries
  differ by 1 to 24 ulps (at most 6.9e-17). A curve may differ only at such a threshold *and* where a pixel level
  ``k/255`` lies between the two values; there the whole level flips, so one threshold's value can move a lot
  (measured up to 0.017 for Dice, 0.064 for specificity, 0.15 for the E-measure), and each per-image
  256-threshold mean moves by at most :data:`MEAN_TOLERANCE`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tools.metrics.infnet import THRESHOLDS, infnet_png_roundtrip, mae, s_measure, threshold_curves

OCTAVE = shutil.which("octave-cli")
EVALTOOL = Path(os.environ.get("INFNET_EVALTOOL_DIR", "")) if os.environ.get("INFNET_EVALTOOL_DIR") else None
NEEDED = ("Fmeasure_calu.m", "Enhancedmeasure.m", "StructureMeasure.m", "S_object.m", "S_region.m")
GT_DIR = Path("covid19_ct_lesion_medseg/TrainingSet/LungInfection-Train/Doctor-label/GT")
GT_FILES = ("0.png", "2.png", "16.png", "29.png")  # lesion fractions 0.36, 0.009, 0.02, 0.39

#: Largest difference of a per-image 256-threshold mean (Dice, sensitivity, specificity, E-measure with ``>`` or
#: ``>=``) between the port (MATLAB's colon) and Inf-Net's files under Octave (Octave's colon) on these inputs.
#: Measured (Octave 7.3, Inf-Net d4dd1e8): Dice 1.3e-3, sensitivity 2.7e-4, specificity 2.1e-3, E-measure 1.1e-3
#: (``>``) and 2.1e-3 (``>=``); asserted with a small margin. Caused by the threshold vectors alone, as the exact
#: agreement given Octave's vector shows.
MEAN_TOLERANCE = 2.5e-3

pytestmark = [
    pytest.mark.skipif(OCTAVE is None, reason="GNU Octave not installed (no octave-cli on PATH)"),
    pytest.mark.skipif(
        EVALTOOL is None or not all((EVALTOOL / f).is_file() for f in NEEDED),
        reason="set INFNET_EVALTOOL_DIR to a folder holding Inf-Net's EvaluationTool/*.m "
        f"({', '.join(NEEDED)}; https://github.com/DengPingFan/Inf-Net)",
    ),
]

SHIMS = {
    "mean2.m": "function y = mean2(x)\n  y = sum(x(:)) / numel(x);\nend\n",
    # main.m calls mapminmax(row, 0, 1); the 8-bit maps here span 0..1, where MATLAB's is the identity
    "mapminmax.m": (
        "function y = mapminmax(x, ymin, ymax)\n"
        "  r = max(x) - min(x);\n"
        "  if r == 0 || ~isfinite(r), y = x; else y = (x - min(x)) * ((ymax - ymin) / r) + ymin; end\n"
        "end\n"
    ),
}

# main.m's per-image body (lines 90-134) for the files listed in names.txt; writes per image
# [Sm, MAE, Dic(256), Sen(256), Spe(256), E_gt(256), E_ge(256)] and the threshold vector as float64.
DRIVER = r"""
warning('off', 'all');
names = strsplit(strtrim(fileread('names.txt')), "\n");
Thresholds = 1:-1/255:0;
fid = fopen('thresholds.bin', 'w'); fwrite(fid, Thresholds, 'double'); fclose(fid);
out = fopen('octave.bin', 'w');
for i = 1:numel(names)
  gt = imread(['gt/' names{i}]);
  if ~islogical(gt)
    gt = gt(:,:,1) > 128;
  end
  resmap = imread(['pred/' names{i}]);
  resmap = im2double(resmap(:,:,1));
  resmap = reshape(mapminmax(resmap(:)', 0, 1), size(resmap));
  Sm = StructureMeasure(resmap, logical(gt));
  [Dic, Sen, Spe, Egt, Ege] = deal(zeros(1, length(Thresholds)));
  for t = 1:length(Thresholds)
    threshold = Thresholds(t);
    [~, Sen(t), Spe(t), Dic(t), ~] = Fmeasure_calu(resmap, double(gt), size(gt), threshold);
    Bi = zeros(size(resmap)); Bi(resmap > threshold) = 1; Egt(t) = Enhancedmeasure(Bi, gt);
    Bi = zeros(size(resmap)); Bi(resmap >= threshold) = 1; Ege(t) = Enhancedmeasure(Bi, gt);
  end
  MAE = mean2(abs(double(logical(gt)) - resmap));
  fwrite(out, [Sm, MAE, Dic, Sen, Spe, Egt, Ege], 'double');
end
fclose(out);
"""


def _prediction(gt: np.ndarray, seed: int) -> np.ndarray:
    """A plausible soft prediction: the GT blurred, shifted by a few pixels, with noise, through a sigmoid."""
    rng = np.random.default_rng(seed)
    soft = ndimage.gaussian_filter(gt.astype(np.float64), sigma=3.0 + seed)
    soft = ndimage.shift(soft, (2 * seed - 3, 3 - seed), order=1, mode="constant")
    logits = 8.0 * (soft - 0.4) + rng.normal(0.0, 1.0, gt.shape)
    return 1.0 / (1.0 + np.exp(-logits))


@pytest.fixture(scope="module")
def compared(data_root, tmp_path_factory):
    """(names, GT masks, 8-bit maps, Octave's per-image results, Octave's threshold vector)."""
    gt_dir = data_root / GT_DIR
    if not all((gt_dir / f).is_file() for f in GT_FILES):
        pytest.skip(f"COVID-19 GT masks not found under {gt_dir}")
    work = tmp_path_factory.mktemp("octave")
    for sub in ("gt", "pred"):
        (work / sub).mkdir()
    for name in NEEDED:
        shutil.copy(EVALTOOL / name, work / name)
    for name, text in SHIMS.items():
        (work / name).write_text(text)
    masks = {name: np.asarray(Image.open(gt_dir / name).convert("L")) for name in GT_FILES}
    masks["empty.png"] = np.zeros_like(masks[GT_FILES[0]])  # exercises every empty-GT branch
    names, gts, maps = list(masks), [], []
    for seed, name in enumerate(names):
        Image.fromarray(masks[name]).save(work / "gt" / name)
        k = np.round(infnet_png_roundtrip(_prediction(masks[name] > 128, seed)) * 255).astype(np.uint8)
        Image.fromarray(k).save(work / "pred" / name)
        gts.append(masks[name] > 128)
        maps.append(np.asarray(Image.open(work / "pred" / name)).astype(np.float64) / 255.0)
    (work / "names.txt").write_text("\n".join(names) + "\n")
    (work / "driver.m").write_text(DRIVER)
    run = subprocess.run([OCTAVE, "--no-gui", "--quiet", "driver.m"], cwd=work, capture_output=True, text=True,
                         timeout=600)
    assert (work / "octave.bin").is_file(), f"Octave failed (rc {run.returncode}):\n{run.stdout}\n{run.stderr}"
    results = np.fromfile(work / "octave.bin").reshape(len(names), 2 + 5 * 256)
    thresholds = np.fromfile(work / "thresholds.bin")
    return names, gts, maps, results, thresholds


def _octave(row: np.ndarray) -> dict[str, np.ndarray | float]:
    curves = row[2:].reshape(5, 256)
    return {"s_measure": row[0], "mae": row[1], "dice": curves[0], "sensitivity": curves[1],
            "specificity": curves[2], "e_gt": curves[3], "e_ge": curves[4]}


def test_octave_threshold_vector_differs_from_matlab_colon_by_a_few_ulps_in_72_entries(compared):
    *_, thresholds = compared
    assert (thresholds != THRESHOLDS).sum() == 72
    assert thresholds[0] == THRESHOLDS[0] == 1.0 and thresholds[-1] == THRESHOLDS[-1] == 0.0
    assert np.abs(thresholds - THRESHOLDS).max() < 1e-16


def test_s_measure_and_mae_agree_with_octave(compared):
    names, gts, maps, results, _ = compared
    for name, gt, pred, row in zip(names, gts, maps, results):
        ref = _octave(row)
        assert s_measure(pred, gt) == pytest.approx(ref["s_measure"], abs=1e-12), name
        assert mae(pred, gt) == pytest.approx(ref["mae"], abs=1e-12), name


def test_curves_equal_octave_given_octave_thresholds(compared):
    names, gts, maps, results, thresholds = compared
    for name, gt, pred, row in zip(names, gts, maps, results):
        ref = _octave(row)
        for op in ("gt", "ge"):
            curves = threshold_curves(pred, gt, op, thresholds=thresholds)
            for key in ("dice", "sensitivity", "specificity"):
                np.testing.assert_array_equal(curves[key], ref[key], err_msg=f"{name} {key}")
            np.testing.assert_allclose(curves["e_measure"], ref[f"e_{op}"], rtol=0, atol=1e-11, err_msg=name)


def test_curves_with_matlab_colon_differ_only_where_a_level_lies_between_the_two_thresholds(compared):
    names, gts, maps, results, thresholds = compared
    low, high = np.minimum(thresholds, THRESHOLDS), np.maximum(thresholds, THRESHOLDS)
    worst = 0.0
    for name, gt, pred, row in zip(names, gts, maps, results):
        ref = _octave(row)
        levels = np.unique(pred)
        between = np.array([((levels >= lo) & (levels <= hi)).any() and lo != hi for lo, hi in zip(low, high)])
        for op in ("gt", "ge"):
            curves = threshold_curves(pred, gt, op)
            pairs = [(k, k) for k in ("dice", "sensitivity", "specificity")] + [("e_measure", f"e_{op}")]
            for ours, theirs in pairs:
                diff = np.abs(curves[ours] - ref[theirs])
                assert np.all(diff[~between] <= 1e-11), f"{name} {ours}: differs at a shared threshold"
                gap = abs(curves[ours].mean() - ref[theirs].mean())
                assert gap <= MEAN_TOLERANCE, f"{name} {ours} ({op}): 256-threshold means differ by {gap:.2e}"
                worst = max(worst, gap)
    print(f"largest difference of a 256-threshold mean: {worst:.3e}")
