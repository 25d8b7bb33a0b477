"""``python -m tools hu_window IMAGE_DIR``: estimate the HU window that 8-bit, already-windowed CT slices were made
with (:func:`tools.windowing.estimate_hu_window`)."""

import json

from tools.windowing import estimate_hu_window


# ---------------------------------------------------------------- the command line (python -m tools hu_window)


def hu_window_command(image_dir: str, lung_hu: float = -850.0, tissue_hu: float = 40.0) -> str:
    """Estimate the HU window that made a folder of 8-bit lung-windowed CT slices; print it as JSON.

    The window is solved from the median grey levels of the slices' two histogram peaks (aerated lung and soft
    tissue), taken to be lung_hu and tissue_hu.

    Args:
        image_dir: a folder of .jpg/.png slices.
        lung_hu: the HU value of aerated lung (the darker peak).
        tissue_hu: the HU value of soft tissue (the brighter peak).
    """
    return json.dumps(estimate_hu_window(image_dir, lung_hu, tissue_hu))
