"""Ma et al.'s COVID-19-CT-Seg volume layout (CT volumes, infection masks, lung masks; Zenodo 3757476)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["MA_COVID_FOLDERS", "ma_covid_datalist"]

# Ma et al.'s COVID-19-CT-Seg release (Zenodo 3757476): CT volumes, infection masks, lung masks.
MA_COVID_FOLDERS = ("COVID-19-CT-Seg_20cases", "Infection_Mask", "Lung_Mask")
_NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def _nifti_case(path: Path) -> str | None:
    """Case name of a NIfTI file (``coronacases_001.nii.gz`` -> ``coronacases_001``), None for other files."""
    for ext in _NIFTI_EXTENSIONS:
        if path.name.lower().endswith(ext) and not path.name.startswith("."):
            return path.name[: -len(ext)]
    return None


def ma_covid_datalist(
    dataset_dir: str | Path,
    image_dir: str = MA_COVID_FOLDERS[0],
    label_dir: str = MA_COVID_FOLDERS[1],
    lung_dir: str = MA_COVID_FOLDERS[2],
) -> list[dict]:
    """Pair the CT volumes of Ma et al.'s COVID-19-CT-Seg dataset with their infection and lung masks.

    Layout (as released on Zenodo, record 3757476; Ma et al., Med. Phys. 2021)::

        dataset_dir/COVID-19-CT-Seg_20cases/<case>.nii.gz   CT volume in HU
        dataset_dir/Infection_Mask/<case>.nii.gz            infection mask (0/1)
        dataset_dir/Lung_Mask/<case>.nii.gz                 lung mask (0 = outside, 1/2 = left/right lung)

    Files pair by case name (the file name without ``.nii.gz``/``.nii``; the extensions may differ between folders).
    Masks without a CT volume are ignored. Each item is one whole volume, so a split of this datalist
    (:func:`tools.data.split_datalist`) is a split by case: slices of one case never fall in both parts.

    Args:
        dataset_dir: the folder holding the three folders.
        image_dir: name of the CT volume folder.
        label_dir: name of the infection mask folder.
        lung_dir: name of the lung mask folder.

    Returns:
        ``[{"image": str, "label": str, "lung": str}, ...]`` sorted by case name.

    Raises:
        FileNotFoundError: if one of the three folders is missing, or the volume folder holds no NIfTI file,
            naming the folder.
        ValueError: if a CT volume has no infection or no lung mask of the same case name, naming the volume and
            the folder searched.
    """
    root = Path(dataset_dir).expanduser()
    folders = {key: root / name for key, name in (("image", image_dir), ("label", label_dir), ("lung", lung_dir))}
    for folder in folders.values():
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder} is not a folder: expected Ma et al.'s COVID-19-CT-Seg layout "
                f"'{image_dir}/', '{label_dir}/', '{lung_dir}/' (NIfTI volumes with the same names) in {root}."
            )
    cases = {}
    for key, folder in folders.items():
        cases[key] = {name: p for p in folder.iterdir() if p.is_file() and (name := _nifti_case(p)) is not None}
    if not cases["image"]:
        raise FileNotFoundError(f"{folders['image']} holds no NIfTI volumes ({', '.join(_NIFTI_EXTENSIONS)}).")
    datalist = []
    for name in sorted(cases["image"]):
        item = {"image": str(cases["image"][name])}
        for key in ("label", "lung"):
            mask = cases[key].get(name)
            if mask is None:
                raise ValueError(
                    f"{cases['image'][name]} has no {'infection' if key == 'label' else 'lung'} mask "
                    f"'{name}.nii.gz' in {folders[key]}."
                )
            item[key] = str(mask)
        datalist.append(item)
    return datalist
