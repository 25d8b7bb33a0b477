"""How a bundle run treats bad input and its outputs (``tools.runner``, wired by every bundle's configs): a folder run
processes every readable input, skips and names each bad one and fails at the end; output names never collide and
an existing mask is not replaced without ``--overwrite true``; the output folder is checked before the model runs;
and on the command line the last lines printed name the file and the problem."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import run
from PIL import Image, ImageFilter

from tools.errors import InputError, InputsFailed, OutputError
from tools.runner import as_flag, check_mask_outputs, check_output_dir, clear_message

from conftest import BUNDLES, REPO

RCB = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation"
POLYP = BUNDLES / "polyp_endoscopy_iacnn_segmentation"
SLICES = RCB / "sample_data" / "dataset"
PHOTOS = POLYP / "sample_data" / "dataset"


def _infer(bundle: Path, input_path: Path, out: Path, **override) -> None:
    run(config_file=str(bundle / "configs" / "inference.json"), logging_file=str(bundle / "configs" / "logging.conf"),
        bundle_root=str(bundle), input=str(input_path), output_dir=str(out), **override)


def _evaluate(bundle: Path, dataset_dir: Path, out: Path) -> None:
    run("evaluating", config_file=[str(bundle / "configs" / n) for n in ("train.json", "evaluate.json")],
        logging_file=str(bundle / "configs" / "logging.conf"), bundle_root=str(bundle), dataset_dir=str(dataset_dir),
        output_dir=str(out))


def _failure(call, *args, **kwargs) -> tuple[BaseException, str]:
    with pytest.raises(Exception) as e:
        call(*args, **kwargs)
    message, expected = clear_message(e.value)
    assert expected, message
    return e.value, message


def _slices(folder: Path, names=("0", "1")) -> Path:
    folder.mkdir(parents=True)
    for n in names:
        shutil.copy(SLICES / "Imgs" / f"{n}.jpg", folder / f"{n}.jpg")
    return folder


# --- the checks, on their own ----------------------------------------------------------------------------------------


def test_an_output_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(OutputError, match="output folder .*out is a file"):
        check_output_dir(tmp_path / "out")
    with pytest.raises(OutputError, match="out/masks: .*out is a file"):
        check_output_dir(tmp_path / "out" / "masks")
    assert check_output_dir(tmp_path / "new" / "masks").is_dir()


def test_inputs_that_would_write_the_same_mask_are_refused_and_existing_masks_kept(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputError, match=r"/a/7.jpg and /b/7.png -> .*out/7_mask.png"):
        check_mask_outputs(["/a/7.jpg", "/b/7.png"], out, volume=False)
    with pytest.raises(OutputError, match="7.JPG and .*7.png -> "):  # same name on case-insensitive file systems
        check_mask_outputs(["/a/7.JPG", "/a/7.png"], out, volume=False)
    out.mkdir()
    (out / "7_mask.png").write_bytes(b"an earlier result")
    with pytest.raises(OutputError, match="1 of 2 mask file.*7_mask.png. Pass --overwrite true"):
        check_mask_outputs(["/a/7.jpg", "/a/8.jpg"], out, volume=False)
    assert [p.name for p in check_mask_outputs(["/a/7.jpg", "/a/8.jpg"], out, False, overwrite=True)] == [
        "7_mask.png", "8_mask.png"]
    assert check_mask_outputs(["/ct/scan.nii.gz"], out, volume=True)[0].name == "scan_mask.nii.gz"


@pytest.mark.parametrize("value, expected", [(True, True), ("true", True), ("True", True), ("1", True), (False, False),
                                             ("false", False), (None, False), (0, False)])
def test_yes_no_options_read_the_words_the_command_line_gives(value, expected):
    assert as_flag(value, "overwrite") is expected


def test_a_yes_no_option_refuses_other_words():
    with pytest.raises(ValueError, match="--overwrite must be true or false, got 'maybe'"):
        as_flag("maybe", "overwrite")


def test_the_clear_message_is_the_projects_error_inside_monais_wrappers():
    try:
        try:
            raise InputError("/data/x.png: a graded mask")
        except InputError as e:
            raise RuntimeError('Failed to evaluate ConfigExpression: "$__local_refs[\'evaluator\'].run()"') from e
    except RuntimeError as wrapped:
        assert clear_message(wrapped) == ("/data/x.png: a graded mask", True)
    try:
        open("/nonexistent/file.png")
    except OSError as e:
        assert clear_message(e) == ("[Errno 2] No such file or directory: '/nonexistent/file.png'", True)
    assert clear_message(KeyError("x")) == ("KeyError: 'x'", False)  # not ours: the traceback is printed as well


# --- the bundles, in-process -----------------------------------------------------------------------------------------


def test_a_folder_with_an_unreadable_slice_gets_every_other_mask_and_a_summary(tmp_path):
    src = _slices(tmp_path / "in", names=("0", "1", "24"))
    (src / "9.jpg").write_bytes((SLICES / "Imgs" / "39.jpg").read_bytes()[:3000])  # truncated, between the others
    _, message = _failure(_infer, RCB, src, tmp_path / "out")
    assert message.startswith("1 of 4 input(s) could not be used and were skipped; the other 3 were processed")
    assert message.splitlines()[-1].strip().startswith(f"{src / '9.jpg'}: cannot be read")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0_mask.png", "1_mask.png", "24_mask.png"]


def test_masks_never_collide_nor_replace_an_earlier_run_without_overwrite(tmp_path):
    src = _slices(tmp_path / "in")
    Image.open(src / "1.jpg").save(src / "0.png")  # 0.jpg and 0.png: both would be 0_mask.png
    _, message = _failure(_infer, RCB, src, tmp_path / "out")
    assert "0.jpg and " in message and "0.png -> " in message and "nothing was written" in message
    assert not list((tmp_path / "out").iterdir())

    (src / "0.png").unlink()
    _infer(RCB, src, tmp_path / "out")
    first = (tmp_path / "out" / "0_mask.png").read_bytes()
    other = _slices(tmp_path / "other", names=("0",))
    shutil.copy(SLICES / "Imgs" / "46.jpg", other / "0.jpg")  # another image with the same name, same output folder
    _, message = _failure(_infer, RCB, other, tmp_path / "out")
    assert "1 of 1 mask file(s) exist already" in message and "--overwrite true" in message
    assert (tmp_path / "out" / "0_mask.png").read_bytes() == first
    _infer(RCB, other, tmp_path / "out", overwrite="true")
    assert (tmp_path / "out" / "0_mask.png").read_bytes() != first


def test_an_output_path_that_is_a_file_is_refused_before_the_model_runs(tmp_path, caplog):
    (tmp_path / "out").write_text("a file")
    _, message = _failure(_infer, RCB, _slices(tmp_path / "in"), tmp_path / "out")
    assert "output folder" in message and "is a file" in message
    assert "Restored all variables" not in caplog.text  # the weights were never loaded


def test_the_rgb_bundle_skips_a_greyscale_photograph_and_segments_the_colour_ones(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    photos = sorted((PHOTOS / "images").iterdir())[:2]
    for p in photos:
        shutil.copy(p, src / p.name)
    Image.open(photos[0]).convert("L").save(src / "grey.png")
    _, message = _failure(_infer, POLYP, src, tmp_path / "out")
    assert f"{src / 'grey.png'}: a greyscale image (PIL mode L)" in message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{p.stem}_mask.png" for p in photos)


def test_evaluating_skips_a_truncated_slice_and_a_graded_mask_and_names_them_in_metrics_json(tmp_path):
    data = tmp_path / "data"
    for sub in ("Imgs", "GT"):
        shutil.copytree(SLICES / sub, data / sub)
    (data / "Imgs" / "24.jpg").write_bytes((SLICES / "Imgs" / "24.jpg").read_bytes()[:3000])
    Image.open(SLICES / "GT" / "1.png").convert("L").filter(ImageFilter.GaussianBlur(6)).save(data / "GT" / "1.png")
    error, message = _failure(_evaluate, RCB, data, tmp_path / "eval")
    assert any(isinstance(e, InputsFailed) for e in (error, error.__cause__))
    assert message.startswith("2 of 6 input(s) could not be used")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n_images"] == 4
    skipped = metrics["skipped_images"]
    assert skipped[0].startswith(f"{data / 'GT' / '1.png'}: a graded mask")
    assert skipped[1].startswith(f"{data / 'Imgs' / '24.jpg'}: cannot be read")


# --- the command line: exit status and the last lines printed -----------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_evaluating_a_folder_with_a_truncated_slice_exits_1_naming_it_last(tmp_path):
    data = tmp_path / "data"
    for sub in ("Imgs", "GT"):
        (data / sub).mkdir(parents=True)
        for n in ("0", "1"):
            shutil.copy(SLICES / sub / f"{n}{'.jpg' if sub == 'Imgs' else '.png'}", data / sub)
    (data / "Imgs" / "1.jpg").write_bytes((SLICES / "Imgs" / "1.jpg").read_bytes()[:3000])
    configs = RCB / "configs"
    done = _cli("evaluating", "--config_file", f"['{configs / 'train.json'}','{configs / 'evaluate.json'}']",
                "--logging_file", str(configs / "logging.conf"), "--bundle_root", str(RCB),
                "--dataset_dir", str(data), "--output_dir", str(tmp_path / "eval"))
    assert done.returncode == 1, done.stderr[-3000:]  # not 134 (SIGABRT)
    last = done.stderr.strip().splitlines()[-2:]
    assert last[0].startswith("ERROR: 1 of 2 input(s) could not be used"), done.stderr[-3000:]
    assert last[1].strip().startswith(f"{data / 'Imgs' / '1.jpg'}: cannot be read")
    assert "Traceback" not in done.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_images"] == 1


@pytest.mark.slow
def test_inference_on_a_missing_input_exits_1_with_one_line_naming_it(tmp_path):
    configs = RCB / "configs"
    done = _cli("--config_file", str(configs / "inference.json"), "--bundle_root", str(RCB),
                "--input", str(tmp_path / "nope.nii.gz"), "--output_dir", str(tmp_path / "out"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"ERROR: inference input {tmp_path / 'nope.nii.gz'} does not exist."
    assert "Traceback" not in done.stderr
