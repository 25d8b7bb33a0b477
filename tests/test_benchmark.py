"""``python -m tools benchmark`` writes a results file (timings are recorded, never asserted)."""

import json
import shutil

from tools.commands.benchmark import benchmark_inference

from conftest import BUNDLES

BUNDLE = BUNDLES / "covid19_lesion_ct_rcbunetpp_segmentation"


def test_benchmark_writes_results_file(tmp_path):
    slices = tmp_path / "slices"
    slices.mkdir()
    shutil.copy(BUNDLE / "sample_data" / "dataset" / "Imgs" / "1.jpg", slices)
    out = tmp_path / "bench.json"
    result = benchmark_inference(BUNDLE, slices, out, repeats=1)
    assert json.loads(out.read_text()) == result
    assert result["n_items"] == 1 and len(result["seconds_runs"]) == 1
    assert result["seconds_median"] > 0 and result["peak_memory_mib"] > 0
