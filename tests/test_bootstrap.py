"""Bootstrap intervals of a mean over cases (tools.metrics.bootstrap): conventions and hand-derivable cases."""

import json
import math

import numpy as np
import pytest

from tools.metrics.bootstrap import bootstrap_ci, ci_key, ci_method, summarise_with_ci


def _strict_loads(text: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_two_values_give_the_interval_between_them():
    # Resampled means of {a, b}: a (p 1/4), (a+b)/2 (p 1/2), b (p 1/4); the 2.5% and 97.5% quantiles are a and b.
    assert bootstrap_ci([0.2, 0.6]) == (0.2, 0.6)


def test_interval_lies_within_the_data_and_around_the_mean():
    values = np.random.default_rng(1).beta(3, 1.5, 32)
    low, high = bootstrap_ci(values)
    assert values.min() <= low < values.mean() < high <= values.max()


def test_same_seed_same_interval_other_seed_other_interval():
    values = np.random.default_rng(2).random(20)  # with 5 values the quantiles fall on the same resample means
    assert bootstrap_ci(values, seed=0) == bootstrap_ci(values, seed=0)
    assert bootstrap_ci(values, seed=0) != bootstrap_ci(values, seed=1)


def test_higher_confidence_gives_a_wider_interval():
    values = np.random.default_rng(3).random(20)
    low95, high95 = bootstrap_ci(values, 0.95)
    low80, high80 = bootstrap_ci(values, 0.80)
    assert low95 < low80 and high80 < high95


def test_nan_values_are_left_out():
    values = [0.1, 0.5, 0.9, 0.4]
    assert bootstrap_ci([math.nan, *values, math.nan]) == bootstrap_ci(values)


@pytest.mark.parametrize("values", [[], [0.7], [math.nan, 0.7], [math.nan, math.nan]])
def test_fewer_than_two_defined_values_give_no_interval(values):
    assert bootstrap_ci(values) is None


def test_constant_values_give_a_zero_width_interval():
    assert bootstrap_ci([0.25] * 5) == (0.25, 0.25)


def test_infinite_value_or_bad_settings_raise_value_error():
    with pytest.raises(ValueError, match="infinite"):
        bootstrap_ci([0.1, math.inf])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([0.1, 0.2], confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([0.1, 0.2], n_resamples=0)


def test_ci_key_and_method_name_the_settings():
    assert ci_key("dice") == "dice_ci95" and ci_key("dice", 0.999) == "dice_ci99.9"
    method = ci_method(0.95, 10000, 0, "volumes")
    assert "percentile bootstrap" in method and "over volumes" in method and "10000 resamples, seed 0" in method


def test_summary_puts_each_interval_after_its_mean_and_writes_null_for_undefined():
    summary = summarise_with_ci({"dice": [0.2, 0.6], "sensitivity": [math.nan, math.nan], "iou": [0.5, math.nan]})
    assert list(summary) == ["dice", "dice_ci95", "sensitivity", "sensitivity_ci95", "iou", "iou_ci95", "ci_method"]
    assert summary["dice"] == pytest.approx(0.4) and summary["dice_ci95"] == [0.2, 0.6]
    assert summary["sensitivity"] is None and summary["sensitivity_ci95"] is None
    assert summary["iou"] == 0.5 and summary["iou_ci95"] is None
    assert _strict_loads(json.dumps(summary, allow_nan=False)) == summary


def test_summary_of_117_cases_gives_each_of_12_metrics_an_interval_around_its_mean():
    # (its speed is a benchmark's business, not a test's: no wall-clock assertion)
    columns = {f"m{i}": np.random.default_rng(i).random(117) for i in range(12)}
    summary = summarise_with_ci(columns)
    for name in columns:
        low, high = summary[ci_key(name)]
        assert low < summary[name] < high


def test_paired_difference_keeps_the_pairing_and_is_narrower_than_separate_intervals():
    from tools.metrics.bootstrap import bootstrap_ci, paired_difference

    rng = np.random.default_rng(0)
    difficulty = rng.uniform(0.3, 0.9, 40)  # shared by both runs
    a = {f"img{i}": float(v) for i, v in enumerate(difficulty)}
    b = {k: v + 0.02 for k, v in a.items()}  # run B is better by exactly 0.02 on every image
    out = paired_difference(a, b)
    assert out["cases"] == 40
    assert out["mean_difference"] == pytest.approx(0.02)
    assert out["difference_ci95"] == pytest.approx([0.02, 0.02])  # every resample of constant differences
    low, high = bootstrap_ci(list(a.values()))
    assert high - low > 0.1  # the separate interval of A alone is wide


def test_paired_difference_refuses_different_cases_and_leaves_out_nans():
    from tools.metrics.bootstrap import paired_difference

    with pytest.raises(ValueError, match="different cases"):
        paired_difference({"x": 1.0}, {"y": 1.0})
    out = paired_difference({"x": 0.5, "y": float("nan"), "z": 0.7}, {"x": 0.6, "y": 0.9, "z": 0.6})
    assert out["cases"] == 2 and out["mean_difference"] == pytest.approx(0.0)


def test_paired_difference_command_reads_two_per_image_files(tmp_path):
    import json
    import subprocess
    import sys

    for name, values in (("a.csv", (0.5, 0.6)), ("b.csv", (0.7, 0.7))):
        (tmp_path / name).write_text("image,dice\n1.png,%s\n2.png,%s\n" % values)
    done = subprocess.run([sys.executable, "-m", "tools", "paired_difference", str(tmp_path / "a.csv"),
                           str(tmp_path / "b.csv")], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert out["metric"] == "dice" and out["mean_difference"] == pytest.approx(0.15)
    bad = subprocess.run([sys.executable, "-m", "tools", "paired_difference", str(tmp_path / "a.csv"),
                          str(tmp_path / "b.csv"), "--metric", "hd95"], capture_output=True, text=True)
    assert bad.returncode == 1 and "no column 'hd95'" in bad.stderr


def test_cluster_bootstrap_is_wider_than_the_case_bootstrap_when_cases_are_copies():
    from tools.metrics.bootstrap import cluster_bootstrap_ci

    rng = np.random.default_rng(0)
    clip_means = rng.uniform(0.2, 0.9, size=6)
    values = np.repeat(clip_means, 20) + rng.normal(0, 0.01, size=120)  # 6 clips of 20 near-identical frames
    clusters = [f"clip{i}" for i in range(6) for _ in range(20)]
    lo_c, hi_c = cluster_bootstrap_ci(values, clusters)
    lo_i, hi_i = bootstrap_ci(values)
    assert lo_c <= values.mean() <= hi_c and (hi_c - lo_c) > 3 * (hi_i - lo_i)
    lo_m, hi_m = bootstrap_ci(clip_means)  # equal clusters: about the interval of the clips' means
    assert abs((hi_c - lo_c) - (hi_m - lo_m)) < 0.05
    singles = cluster_bootstrap_ci(values, [str(i) for i in range(120)])  # one case a cluster: the case bootstrap
    assert singles == pytest.approx((lo_i, hi_i), abs=0.01)


def test_cluster_bootstrap_edge_cases():
    from tools.metrics.bootstrap import cluster_bootstrap_ci

    assert cluster_bootstrap_ci([0.5, 0.6, float("nan")], ["a", "a", "b"]) is None  # one cluster with a value
    assert cluster_bootstrap_ci([0.5, 0.5, 0.5], ["a", "b", "b"]) == (0.5, 0.5)
    with pytest.raises(ValueError, match="cluster names"):
        cluster_bootstrap_ci([0.5, 0.6], ["a"])


def test_paired_difference_command_resamples_whole_clips(tmp_path):
    import subprocess
    import sys

    rng = np.random.default_rng(1)
    frames = list(range(1, 104))  # CVC-ClinicDB frames 1-103: clips 1-5
    a = rng.uniform(0.3, 0.8, size=len(frames))
    shift = {c: d for c, d in zip(range(5), (0.2, -0.1, 0.15, -0.05, 0.1))}
    from tools.data.splits import clip_of

    b = [x + shift[int(clip_of({"image": f"{f}.png"})[4:]) - 1] for f, x in zip(frames, a)]
    for name, values in (("a.csv", a), ("b.csv", b)):
        (tmp_path / name).write_text("image,dice\n" + "".join(f"{f}.png,{v}\n" for f, v in zip(frames, values)))
    outs = {}
    for group in ("item", "clip"):
        done = subprocess.run([sys.executable, "-m", "tools", "paired_difference", str(tmp_path / "a.csv"),
                               str(tmp_path / "b.csv"), "--group", group], capture_output=True, text=True, check=True)
        outs[group] = json.loads(done.stdout)
    assert outs["clip"]["resampled"] == "clip" and outs["clip"]["clusters"] == 5 and "clusters" not in outs["item"]
    assert outs["clip"]["mean_difference"] == pytest.approx(outs["item"]["mean_difference"])
    width = {g: o["difference_ci95"][1] - o["difference_ci95"][0] for g, o in outs.items()}
    assert width["clip"] > 3 * width["item"]
