"""``python -m tools channel_stats``: per-channel mean and std of an RGB bundle's training split, the figures its
normalisation uses (computed by :func:`tools.pipelines.rgb.bundle_channel_stats`)."""

import json


# ---------------------------------------------------------------- the command line (python -m tools channel_stats)


def channel_stats_command(bundle_dir: str, dataset_dir: str | None = None) -> str:
    """Per-channel mean and std of an RGB bundle's training split (its normalisation); print them as JSON.

    Args:
        bundle_dir: an RGB bundle's folder (one whose train.json has a split id).
        dataset_dir: the dataset folder itself (e.g. .../cvc_clinicdb); default the bundle's own dataset_dir
            (under SEG_DATA_ROOT).
    """
    from tools.pipelines.rgb import bundle_channel_stats

    return json.dumps(bundle_channel_stats(bundle_dir, dataset_dir))
