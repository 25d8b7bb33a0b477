"""Transform chains the bundles build by ``_target_`` (``tools.pipelines.<name>`` in their configs), so that reading,
checking, normalisation, lung masking and mask writing live once. Every chain is made of MONAI transforms; each lives
in the module named for what it handles:

- :mod:`tools.pipelines.slices`: grey 2D slices (8-bit CT slices, 16-bit mapped or refused) and their masks.
- :mod:`tools.pipelines.ct`: CT volumes, and the COVID-19 CT bundles' lesion post-processing.
- :mod:`tools.pipelines.rgb`: RGB photographs (colonoscopy, dermoscopy), their normalisation and its statistics.
- :mod:`tools.masks`: writing the masks (every bundle's inference); :mod:`tools.dicom_seg`: their DICOM SEG.
"""

from tools.pipelines.ct import LUNG_REGION_KEY, ct_volume_preprocessing, lesion_postprocessing
from tools.masks import MASK_POSTFIX, mask_path, mask_saver
from tools.pipelines.rgb import (
    bundle_channel_stats,
    channel_stats,
    normalization,
    rgb_inference_preprocessing,
    rgb_loading,
    rgb_reader,
)
from tools.pipelines.slices import grey_reader, slice_inference_preprocessing, slice_loading

__all__ = [
    "grey_reader",
    "slice_loading",
    "slice_inference_preprocessing",
    "ct_volume_preprocessing",
    "LUNG_REGION_KEY",
    "lesion_postprocessing",
    "MASK_POSTFIX",
    "mask_path",
    "mask_saver",
    "rgb_reader",
    "rgb_loading",
    "normalization",
    "rgb_inference_preprocessing",
    "channel_stats",
    "bundle_channel_stats",
]
