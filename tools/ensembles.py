"""Ensembles of trained segmentation networks, with MONAI's ensemble tools: ``EnsembleEvaluator``, ``MeanEnsembled``,
``VoteEnsembled``.

An ensemble combines *trained* networks (several U-Net variants, or one variant trained on several folds): it is a
way of evaluating and inferring, not a network, so it lives here, on the tools side, and the networks stay unaware of
it. The cascade, which is trained as one network, is network code (``custom_networks.nets.CascadeUNet``).

Config pattern (an ``evaluate_ensemble.json`` merged on top of a bundle's ``train.json``; each network is any
``_target_`` with its checkpoint)::

    "ensemble_networks": "$tools.ensembles.load_networks(@ensemble_defs, @ensemble_checkpoints, @device)",
    "ensemble_defs": [
        {"_target_": "custom_networks.nets.VariantUNet", "in_channels": 3, "out_channels": 1, "unit": "residual"},
        {"_target_": "custom_networks.nets.VariantUNet", "in_channels": 3, "out_channels": 1, "unit": "dense",
         "skip_attention": "attention_gate"}
    ],
    "ensemble_checkpoints": ["$@bundle_root + '/models/residual.pt'", "$@bundle_root + '/models/dense.pt'"],
    "validate#evaluator": {
        "_target_": "tools.ensembles.ensemble_evaluator", "device": "@device",
        "val_data_loader": "@validate#dataloader", "networks": "@ensemble_networks", "mode": "mean",
        "inferer": "@validate#inferer", "val_handlers": "@ensemble_handlers"
    }

where ``ensemble_handlers`` are the bundle's ``validate#handlers`` less their ``CheckpointLoader`` (the networks are
loaded by ``load_networks``).

The evaluator leaves the combined probability (``mode="mean"``, ``threshold=None``) or mask under ``"pred"``, where a
single network's evaluator leaves it, so the bundle's metric handlers are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from monai.engines import EnsembleEvaluator
from monai.transforms import Activationsd, AsDiscreted, Compose, MeanEnsembled, VoteEnsembled

__all__ = [
    "ENSEMBLE_MODES",
    "load_networks",
    "ensemble_postprocessing",
    "ensemble_evaluator",
    "fold_checkpoints",
    "MeanProbabilityEnsemble",
    "fold_ensemble",
    "replicate",
    "ensemble_state_dict",
]

ENSEMBLE_MODES = ("mean", "vote")


def _read_state(path: str | Path, key: str = "model") -> dict:
    """The state dict in ``path`` (a state dict, or a training checkpoint holding one under ``key``).

    Raises:
        ValueError: if the file holds neither, naming it.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get(key), dict):
        state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict (nor a checkpoint with one under '{key}').")
    return state


def load_networks(
    networks: Sequence[nn.Module], checkpoints: Sequence[str | Path], device: str | torch.device = "cpu",
    key: str = "model",
) -> list[nn.Module]:
    """Load ``checkpoints[i]`` into ``networks[i]``; returns the networks on ``device``, in eval mode.

    A checkpoint is a state dict (a bundle's ``models/model.pt``, float16 or float32) or a training checkpoint holding
    one under ``key``.

    Raises:
        ValueError: if the two sequences differ in length or a file holds no state dict.
    """
    if len(networks) != len(checkpoints):
        raise ValueError(
            f"need one checkpoint per network, got {len(networks)} networks and {len(checkpoints)} checkpoints."
        )
    for network, path in zip(networks, checkpoints):
        network.load_state_dict(_read_state(path, key))
        network.to(device).eval()
    return list(networks)


def ensemble_postprocessing(
    pred_keys: Sequence[str], mode: str = "mean", weights: Sequence[float] | None = None, output_key: str = "pred",
    threshold: float | None = 0.5,
) -> Compose:
    """Sigmoid each network's logits, then combine them into ``output_key``.

    - ``"mean"``: ``MeanEnsembled``, the (``weights``-weighted) mean of the probabilities, then a threshold unless
      ``threshold`` is ``None`` (probabilities kept, e.g. for metrics that threshold themselves);
    - ``"vote"``: each probability thresholded, then ``VoteEnsembled``, the per-pixel majority; a tie (an even number
      of networks split in half) goes to background (MONAI rounds the mean vote, 0.5 to 0).

    Args:
        pred_keys: keys of the networks' logits, ``(C, H, W[, D])`` each (decollated) or batched.
        mode: ``"mean"`` or ``"vote"``.
        weights: one weight per network (``"mean"`` only); default equal.
        output_key: key of the combined map.
        threshold: probability threshold; required for ``"vote"``.

    Raises:
        ValueError: if ``mode`` is unknown, ``weights`` is given for ``"vote"`` or has the wrong length, or
            ``"vote"`` has no threshold.
    """
    keys = list(pred_keys)
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"mode must be one of {ENSEMBLE_MODES}, got {mode!r}.")
    if weights is not None and (mode == "vote" or len(weights) != len(keys)):
        raise ValueError(f"weights need mode 'mean' and one value per network ({len(keys)}), got {list(weights)}.")
    if mode == "vote" and threshold is None:
        raise ValueError("mode 'vote' needs a threshold (each network's mask votes).")
    steps: list = [Activationsd(keys=keys, sigmoid=True)]
    if mode == "mean":
        steps.append(MeanEnsembled(keys=keys, output_key=output_key, weights=weights))
        if threshold is not None:
            steps.append(AsDiscreted(keys=output_key, threshold=threshold))
    else:
        steps += [AsDiscreted(keys=keys, threshold=threshold), VoteEnsembled(keys=keys, output_key=output_key)]
    return Compose(steps)


def ensemble_evaluator(
    device: str | torch.device,
    val_data_loader: Iterable,
    networks: Sequence[nn.Module],
    mode: str = "mean",
    weights: Sequence[float] | None = None,
    threshold: float | None = None,
    inferer=None,
    key_val_metric: dict | None = None,
    additional_metrics: dict | None = None,
    val_handlers: Sequence | None = None,
    output_key: str = "pred",
    postprocessing: Sequence | None = None,
) -> EnsembleEvaluator:
    """MONAI ``EnsembleEvaluator`` of ``networks`` whose postprocessing is :func:`ensemble_postprocessing`.

    Each network's logits go to ``"pred_0"``, ``"pred_1"``, ... (MONAI's keys), the combination to ``output_key``.
    ``threshold`` defaults to ``None`` here (mean probabilities kept: the bundles' metric savers threshold
    themselves); ``mode="vote"`` needs one. ``postprocessing``: further transforms applied to the combined map
    (e.g. the DRIVE bundle's field-of-view masking), in order, after the combination.
    """
    pred_keys = [f"pred_{i}" for i in range(len(networks))]
    combine = ensemble_postprocessing(pred_keys, mode, weights, output_key, threshold)
    if postprocessing:
        combine = Compose([*combine.transforms, *postprocessing])
    return EnsembleEvaluator(
        device=torch.device(device),
        val_data_loader=val_data_loader,
        networks=networks,
        pred_keys=pred_keys,
        inferer=inferer,
        postprocessing=combine,
        key_val_metric=key_val_metric,
        additional_metrics=additional_metrics,
        val_handlers=val_handlers,
    )


def fold_checkpoints(models_dir: str | Path) -> list[str]:
    """The fold models of a cross-validation ensemble: ``models_dir/fold<k>/model.pt``, in fold order.

    Raises:
        FileNotFoundError: if there is none, naming the folder (``tools promote`` writes them from a crossval run).
    """
    root = Path(models_dir)
    found = sorted(root.glob("fold*/model.pt"), key=lambda p: int(p.parent.name[4:]) if p.parent.name[4:].isdigit() else -1)
    if not found:
        raise FileNotFoundError(f"{root}: no fold models (fold<k>/model.pt); ship them with `python -m tools promote "
                                "CROSSVAL_DIR BUNDLE --choice ensemble`.")
    return [str(p) for p in found]


class MeanProbabilityEnsemble(nn.Module):
    """The mean of several binary networks' foreground probabilities, returned as a logit.

    ``forward(x)``: ``(B, C, H, W[, D])`` -> ``logit(mean_i sigmoid(net_i(x)))`` of shape ``(B, 1, H, W[, D])``, so that
    a bundle's inference chain, which applies the sigmoid itself, reads the ensemble as one network (through
    ``SimpleInferer``, ``SliceInferer`` or ``SlidingWindowInferer`` alike). MONAI's ``EnsembleEvaluator`` +
    ``MeanEnsembled`` compute the same mean, but they change the evaluator and the keys of its output, which the
    bundles' slice/volume post-processing (lung mask, inversion, mask writing) is built on; wrapping the networks
    keeps ``inference.json`` as it is. Probabilities are clamped to ``[1e-6, 1 - 1e-6]`` before the logit.
    """

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        super().__init__()
        if not networks:
            raise ValueError("an ensemble needs at least one network.")
        self.networks = nn.ModuleList(networks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prob = torch.stack([torch.sigmoid(net(x).float()) for net in self.networks]).mean(dim=0)
        return torch.logit(prob.clamp(1e-6, 1.0 - 1e-6))


def fold_ensemble(network_def: nn.Module, checkpoints: Sequence[str | Path], device: str | torch.device = "cpu"
                  ) -> MeanProbabilityEnsemble:
    """:class:`MeanProbabilityEnsemble` of one copy of ``network_def`` per checkpoint (:func:`load_networks`), on
    ``device``, in eval mode."""
    import copy

    nets = load_networks([copy.deepcopy(network_def) for _ in checkpoints], checkpoints, device)
    return MeanProbabilityEnsemble(nets).to(device).eval()


def replicate(network_def: nn.Module, n: int) -> MeanProbabilityEnsemble:
    """:class:`MeanProbabilityEnsemble` of ``n`` untrained copies of ``network_def``, for a config whose checkpoint
    loader then loads one :func:`ensemble_state_dict` into it (``python -m tools crossval --from_run A,B``).

    Raises:
        ValueError: if ``n`` < 1.
    """
    import copy

    if int(n) < 1:
        raise ValueError(f"an ensemble needs at least one network, got n={n}.")
    return MeanProbabilityEnsemble([copy.deepcopy(network_def) for _ in range(int(n))])


def ensemble_state_dict(checkpoints: Sequence[str | Path], key: str = "model") -> dict[str, torch.Tensor]:
    """One state dict of :class:`MeanProbabilityEnsemble` (``networks.<i>.<name>``) from its members' checkpoints
    (state dicts, or training checkpoints holding one under ``key``), in order.

    Raises:
        ValueError: if ``checkpoints`` is empty or a file holds no state dict, naming the file.
    """
    if not checkpoints:
        raise ValueError("an ensemble needs at least one checkpoint.")
    merged: dict[str, torch.Tensor] = {}
    for i, path in enumerate(checkpoints):
        state = _read_state(path, key)
        merged.update({f"networks.{i}.{name}": value for name, value in state.items()})
    return merged
