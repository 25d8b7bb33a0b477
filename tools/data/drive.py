"""DRIVE (retinal vessels, Staal et al., IEEE TMI 23(4), 2004, doi:10.1109/TMI.2004.825627): datalists read from the
release's own folder layout, and the datalist of an inference input with its field-of-view (FOV) masks.

The release has a ``training/`` and a ``test/`` folder, each::

    images/21_training.tif      1st_manual/21_manual1.gif     mask/21_training_mask.gif     (training/, 21-40)
    images/01_test.tif          1st_manual/01_manual1.gif     mask/01_test_mask.gif         (test/, 01-20)

(``test/`` also has ``2nd_manual/``, a second observer, which is not read). The three files of a case share the
leading number of their names, which is what pairs them here, so both namings (and renamed copies that keep the
number, e.g. ``21.tif``) are read. Images are 565x584 8-bit RGB TIFFs; manual vessel masks and FOV masks are 0/255
GIFs. The configs import this module (``$import tools.data.drive``) and call ``tools.data.drive.<function>``.
"""

from __future__ import annotations

import re
from pathlib import Path

from tools.data.files import IMAGE_EXTENSIONS, natural_key
from tools.data.inputs import inference_datalist
from tools.errors import InputError

__all__ = ["DRIVE_FOLDERS", "DRIVE_MASK_EXTENSIONS", "case_number", "drive_datalist", "drive_inference_datalist",
           "has_drive_layout"]

# (key in a datalist item, folder of the release)
DRIVE_FOLDERS = (("image", "images"), ("label", "1st_manual"), ("fov", "mask"))
# the release's masks are GIFs; PNG/TIF copies are read too
DRIVE_MASK_EXTENSIONS = (".gif", ".png", ".tif", ".tiff", ".bmp")
_NUMBER = re.compile(r"^(\d+)(?:_|\.|$)")


def case_number(path: str | Path) -> int | None:
    """The leading number of a DRIVE file name (``21_training.tif``, ``01_manual1.gif``, ``01_test_mask.gif`` ->
    21, 1, 1), or ``None`` when the name does not start with a number followed by ``_`` or ``.``."""
    match = _NUMBER.match(Path(path).name)
    return int(match.group(1)) if match else None


def _files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    return sorted((f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                   and f.suffix.lower() in extensions), key=natural_key)


def _by_number(folder: Path, extensions: tuple[str, ...]) -> dict[int, Path]:
    """``{case number: file}`` of a folder; a file without a leading number, or two files with one number, is refused."""
    out: dict[int, Path] = {}
    for f in _files(folder, extensions):
        number = case_number(f)
        if number is None:
            raise InputError(f"{f}: not a DRIVE file name; the files of a case start with its number "
                             f"(e.g. 21_training.tif, 21_manual1.gif, 21_training_mask.gif).")
        if number in out:
            raise InputError(f"{f} and {out[number]} have the same case number {number}; keep one of them.")
        out[number] = f
    return out


def has_drive_layout(folder: str | Path) -> bool:
    """Whether ``folder`` holds an ``images/`` folder (a split folder of the DRIVE release: training/ or test/)."""
    return (Path(folder) / "images").is_dir()


def drive_datalist(dataset_dir: str | Path, require_fov: bool = True) -> list[dict]:
    """``[{"image", "label", "fov"}, ...]`` of a DRIVE split folder (``training/`` or ``test/``), by case number.

    Args:
        dataset_dir: the split folder holding ``images/``, ``1st_manual/`` and ``mask/`` (e.g.
            ``$SEG_DATA_ROOT/drive/training``).
        require_fov: refuse a case without a FOV mask (default). With ``False`` such a case has no ``"fov"`` key
            and the bundles derive its FOV from the image (:class:`tools.pipelines.fundus.DeriveFOVd`).

    Returns:
        one item per image of ``images/``, in the order of the case numbers.

    Raises:
        InputError: naming the folder or file: ``dataset_dir`` or one of its sub-folders is missing (when the
            folder holds ``training/`` or ``test/`` instead, the message says to pass that one), a file name does not
            start with a case number, two files share a number, an image has no manual mask (or FOV mask), or a
            manual or FOV mask has no image.
    """
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise InputError(f"DRIVE folder {root} does not exist.")
    if not has_drive_layout(root):
        splits = [s for s in ("training", "test") if has_drive_layout(root / s)]
        hint = (f"; it holds {' and '.join(s + '/' for s in splits)}: pass {root / splits[0]}" if splits else
                "; expected a DRIVE split folder with images/, 1st_manual/ and mask/")
        raise InputError(f"{root} has no images/ folder{hint}.")
    found = {}
    for key, folder in DRIVE_FOLDERS:
        path = root / folder
        if not path.is_dir():
            if key == "fov" and not require_fov:
                found[key] = {}
                continue
            raise InputError(f"{root}: missing the {folder}/ folder of the DRIVE layout (images/, 1st_manual/, mask/).")
        found[key] = _by_number(path, IMAGE_EXTENSIONS if key == "image" else DRIVE_MASK_EXTENSIONS)
    images = found["image"]
    if not images:
        raise InputError(f"{root / 'images'} holds no image ({', '.join(IMAGE_EXTENSIONS)}).")
    for key, folder in DRIVE_FOLDERS[1:]:
        orphans = sorted(set(found[key]) - set(images))
        if orphans:
            raise InputError(f"{found[key][orphans[0]]}: no image with case number {orphans[0]} in {root / 'images'}.")
    out = []
    for number, image in sorted(images.items()):
        item = {"image": str(image)}
        for key, folder in DRIVE_FOLDERS[1:]:
            partner = found[key].get(number)
            if partner is None:
                if key == "fov" and not require_fov:
                    continue
                example = f"{number:02d}_manual1.gif" if key == "label" else f"{image.stem}_mask.gif"
                raise InputError(f"{image}: no {'manual vessel mask' if key == 'label' else 'FOV mask'} with case "
                                 f"number {number} in {root / folder} (expected e.g. {example}).")
            item[key] = str(partner)
        out.append(item)
    return out


def _fov_partner(image: Path, fovs: dict[int, Path], stems: dict[str, Path], fov_dir: Path) -> Path:
    number = case_number(image)
    for key in (f"{image.stem}_mask", image.stem):
        if key in stems:
            return stems[key]
    if number is not None and number in fovs:
        return fovs[number]
    raise InputError(f"{image}: no FOV mask in {fov_dir} (looked for {image.stem}_mask.*, {image.stem}.* and a file "
                     "with the same leading case number).")


def drive_inference_datalist(input: str | Path, fov_dir: str | Path | None = None) -> list[dict]:  # noqa: A002
    """The inputs of inference with their FOV masks: ``[{"image": path[, "fov": path]}, ...]``.

    - ``input`` a DRIVE split folder (it holds ``images/``): its images, each with the ``mask/`` file of the same
      case number when ``mask/`` exists (then every image must have one);
    - otherwise an image or a folder of images (:func:`tools.data.inference_datalist`), each paired with a file of
      ``fov_dir`` when given: ``<stem>_mask.*``, ``<stem>.*`` or, failing those, one with the same leading number.

    Items without ``"fov"`` get a FOV derived from the image by the bundle (:class:`tools.pipelines.fundus.DeriveFOVd`).

    Raises:
        InputError: naming the image whose FOV mask is missing, or the folder that does not exist.
        ValueError: from :func:`tools.data.inference_datalist` for an input that is not an image or a folder of them.
    """
    path = Path(input).expanduser()
    if path.is_dir() and has_drive_layout(path):
        items = [{"image": str(f)} for f in _by_number(path / "images", IMAGE_EXTENSIONS).values()]
        if fov_dir is None and (path / "mask").is_dir():
            fov_dir = path / "mask"
    else:
        items = inference_datalist(path)
    if fov_dir is None:
        return items
    fov_path = Path(fov_dir).expanduser()
    if not fov_path.is_dir():
        raise InputError(f"FOV mask folder {fov_path} does not exist.")
    files = _files(fov_path, DRIVE_MASK_EXTENSIONS)
    stems = {f.stem: f for f in files}
    fovs = {case_number(f): f for f in files if case_number(f) is not None}
    return [{**item, "fov": str(_fov_partner(Path(item["image"]), fovs, stems, fov_path))} for item in items]
