"""``python -m tools paired_difference``: the mean per-item difference of a metric between two evaluations of the same
items (two ``per_image.csv`` files), with its paired bootstrap 95% interval (:mod:`tools.metrics.bootstrap`)."""

import json
import sys


# ---------------------------------------------------------------- the command line (python -m tools paired_difference)


def paired_difference_command(per_image_a: str, per_image_b: str, metric: str = "dice", group: str = "item") -> str:
    """Mean per-image difference B - A of METRIC between two evaluations of the same images, with its paired bootstrap
    95% interval; print JSON. Exits 1 with a message when the files name different images or lack the metric.

    Args:
        per_image_a: the first run's per_image.csv (written by `evaluating`).
        per_image_b: the second run's per_image.csv, on the same images.
        metric: a column of both files, e.g. dice, iou, sensitivity.
        group: what the bootstrap resamples: "item" (each image), or "clip" (CVC-ClinicDB's video clips, whole, by
            frame number: their frames are near-copies, so resampling frames gives too narrow an interval) or
            "subject" (spine volumes), as tools.data.fold_groups names them.
    """
    import csv

    from tools.metrics.bootstrap import paired_difference as difference

    def column(path: str) -> dict[str, float]:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or metric not in rows[0]:
            print(f"ERROR: {path}: no column {metric!r}", file=sys.stderr)
            sys.exit(1)
        key = "image" if "image" in rows[0] else next(iter(rows[0]))
        return {r[key]: float(r[metric]) if r[metric] not in ("", "nan", "None") else float("nan") for r in rows}

    try:
        a, b = column(per_image_a), column(per_image_b)
        clusters = None
        if group != "item":
            from tools.data.splits import fold_groups

            names = sorted(a)
            clusters = dict(zip(names, fold_groups([{"image": n} for n in names], group)))
        result = difference(a, b, clusters=clusters)
    except ValueError as e:
        print(f"ERROR: {per_image_a}, {per_image_b}: {e}", file=sys.stderr)
        sys.exit(1)
    return json.dumps({"metric": metric, "resampled": group, **result})
