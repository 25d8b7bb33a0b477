"""Datalists and splits built from the datasets' own folder layouts, and the datalists of inference inputs.

Every function returns MONAI-style datalists: lists of ``{"image": path, "label": path}`` dicts that
``monai.data.Dataset`` and the bundles' ``LoadImaged`` take directly (:func:`ma_covid_datalist` adds ``"lung"``).
The bundles' configs call them as ``tools.data.<name>``; each lives in the module named for what it reads:

- :mod:`tools.data.infnet`: Inf-Net's COVID-19 slices (``Imgs/`` + ``GT/``).
- :mod:`tools.data.ma_covid`: Ma et al.'s COVID-19-CT-Seg volumes with infection and lung masks.
- :mod:`tools.data.paired`: flat 2D image/mask folders (CVC-ClinicDB, PH2) and ISIC 2018 Task 1.
- :mod:`tools.data.splits`: seeded train/validation splits, by item or by video clip, and k-fold cross-validation folds.
- :mod:`tools.data.inputs`: what an inference input is, and its datalist.
- :mod:`tools.data.files`: the image and volume extensions, natural order of file names.
"""

from tools.data.files import IMAGE_EXTENSIONS, VOLUME_EXTENSIONS
from tools.data.infnet import infnet_datalist
from tools.data.inputs import by_input_kind, inference_datalist, input_kind, is_dicom
from tools.data.ma_covid import MA_COVID_FOLDERS, ma_covid_datalist
from tools.data.paired import ISIC2018_FOLDERS, MASK_SUFFIXES, isic2018_datalist, paired_datalist, skin_lesion_datalist
from tools.data.splits import (
    CVC_CLINICDB_CLIPS,
    FOLD_GROUPS,
    clip_split,
    evaluation_items,
    fold_groups,
    kfold_split,
    split_datalist,
    split_fraction,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "VOLUME_EXTENSIONS",
    "infnet_datalist",
    "split_datalist",
    "split_fraction",
    "evaluation_items",
    "is_dicom",
    "input_kind",
    "inference_datalist",
    "by_input_kind",
    "MA_COVID_FOLDERS",
    "ma_covid_datalist",
    "MASK_SUFFIXES",
    "paired_datalist",
    "ISIC2018_FOLDERS",
    "isic2018_datalist",
    "skin_lesion_datalist",
    "CVC_CLINICDB_CLIPS",
    "clip_split",
    "FOLD_GROUPS",
    "fold_groups",
    "kfold_split",
]
