"""Command line of the tools: ``python -m tools COMMAND ...`` (a ``fire`` CLI over :data:`COMMANDS`).

This module only wires the verbs: each lives in its own module of :mod:`tools.commands` (``tools/commands/<verb>.py``,
the function ``<verb>_command``), with the code it runs. ``python -m tools --help`` lists the commands, one line each;
``python -m tools COMMAND --help`` describes every argument and flag (fire reads them from the ``Args:`` section of
each function's docstring, and shows each argument's type from its annotation).

Commands:
    verify BUNDLE_DIR [--dataset_dir DIR]
                                  offline checks of a bundle (exit 1 with a message on the first failure)
    export BUNDLE_DIR [--filepath F]
                                  TorchScript export of models/model.pt through MONAI's ckpt_export
    pack BUNDLE_DIR --output_dir DIR [--overwrite false]
                                  write DIR/<bundle>/, a self-contained copy in the model zoo's layout (scripts/)
    benchmark BUNDLE_DIR INPUT [--output_json F] [--repeats N]
                                  time the bundle's inference on INPUT, write the results file
    benchmark BUNDLE_DIR --mode train [--output_json F] [--steps N] [--rounds N] [--compile]
                                  time the training step: fp32 baseline vs the default (bf16, channels-last)
    benchmark BUNDLE_DIR --mode epoch [--epochs N] [--config OVERLAY] [--overrides JSON] [--dataset_dir DIR]
                                  time real training epochs (ignite's BasicTimeProfiler): dataflow, processing,
                                  handlers, cache fill, against the training step alone
    compare BUNDLE_DIR [--variants "['a','b']"] [--max_epochs N] [--output_dir OUT] [--dataset_dir DIR]
            [--overrides JSON] [--reuse]
                                  train the bundle's network and its baselines (configs/baselines/*.json) the
                                  same way, evaluate each on the validation split, write OUT/comparison.{json,md}
    crossval BUNDLE_DIR --folds K [--max_epochs N] [--overrides JSON] [--config OVERLAY] --output_dir OUT
                                  k-fold cross-validation of the bundle's recipe: K models, pooled out-of-fold
                                  metrics with bootstrap intervals in OUT/crossval.{json,md}
    benchmark_variants BUNDLE_DIR --grid FILE [--output_dir OUT] [--max_epochs N] [--dataset_dir DIR]
            [--overrides JSON] [--reuse]
                                  train and evaluate a grid of variants (named config overlays) the same way, write
                                  OUT/benchmark.{csv,md,png} (Dice vs training time and vs parameters)
    promote RUN_DIR BUNDLE_DIR [--choice auto|single|ensemble] [--metric dice]
                                  ship a training run's (or a crossval run's) best model as the bundle's weights
    compact SRC DST [--dtype float16]
                                  ship weights compactly: the state dict alone, in half precision
    channel_stats BUNDLE_DIR [--dataset_dir DIR]
                                  per-channel mean and std of an RGB bundle's training split (its normalisation)
    paired_difference A/per_image.csv B/per_image.csv [--metric dice] [--group clip]
                                  mean per-image difference B - A with its paired bootstrap 95% interval
    hu_window IMAGE_DIR           estimate the HU window of 8-bit lung-windowed slices
    mesh MASK --output F.stl [--png F.png] [--label N]
                                  surface of a NIfTI mask as STL in world coordinates (mm)
    render_configs [--check]      write each bundle's shared configs from tools/bundle_templates/ (--check: only compare)
    serve --studies DIR [--host 127.0.0.1] [--port 8000] [--bundles a,b] [--app_dir DIR]
                                  MONAI Label's server, offline, with the bundles (needs the [monailabel] extra)
"""

from tools.commands.benchmark import benchmark_command
from tools.commands.benchmark_variants import benchmark_variants_command
from tools.commands.channel_stats import channel_stats_command
from tools.commands.compare import compare_command
from tools.commands.crossval import crossval_command
from tools.commands.export import export_command
from tools.commands.hu_window import hu_window_command
from tools.commands.mesh import mesh_command
from tools.commands.pack import pack_command
from tools.commands.paired_difference import paired_difference_command
from tools.commands.promote import compact_command, promote_command
from tools.commands.render_configs import render_configs_command
from tools.commands.serve import serve_command
from tools.commands.verify import verify_command

__all__ = ["COMMANDS"]

# in the order `python -m tools --help` lists them
COMMANDS = {
    "verify": verify_command,
    "export": export_command,
    "pack": pack_command,
    "benchmark": benchmark_command,
    "compare": compare_command,
    "crossval": crossval_command,
    "benchmark_variants": benchmark_variants_command,
    "promote": promote_command,
    "compact": compact_command,
    "channel_stats": channel_stats_command,
    "paired_difference": paired_difference_command,
    "hu_window": hu_window_command,
    "mesh": mesh_command,
    "render_configs": render_configs_command,
    "serve": serve_command,
}
