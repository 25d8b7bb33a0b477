"""Export of a bundle's shipped network (``python -m tools export``): TorchScript, ``torch.export`` or ONNX, each
followed by a parity check against the eager network on the bundle's own sample inputs.

- ``torchscript``: MONAI's ``ckpt_export`` (``models/model.ts``; the config and metadata embedded as MONAI's export
  does). TorchScript is deprecated in torch 2.13 but is what MONAI's bundle verbs and MONAI Label load.
- ``torch_export``: ``torch.export.export`` + ``torch.export.save`` (``models/model.pt2``; load with
  ``torch.export.load(path).module()``).
- ``onnx``: torch 2.13's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, opset :data:`ONNX_OPSET`), run with
  ``onnxruntime``'s CPU provider, as a deployment would.

Dynamic sizes: the batch is always dynamic; the spatial sizes are dynamic (multiples of the network's size divisor,
from ``metadata.json``'s ``spatial_shape``, e.g. ``"16*n"``) where the exported program gives the eager network's
output at a second, different size too. Where it does not (IA-CNN's affinity attention reshapes by ``H * W``, which
``torch.export`` specialises to the example's size), the spatial size is fixed at the bundle's inference size
(``spatial_size`` / ``roi_size`` of ``inference.json``, where every input is resized or tiled to anyway), and the
report says so.

Parity (:func:`parity`): the sample inputs are the bundle's own ``sample_data`` (the ``input`` default of its
``inference.json``) through its inference preprocessing, resized with padding or cropping to the network's size
(volumes: slices along the slice inferer's axis), so real images, not noise. Reported: the largest absolute
difference of the foreground probabilities (sigmoid of the logits), the fraction of pixels whose thresholded mask
differs, and seconds per input of eager and exported (median of 3 runs, fp32, the process's CPU threads). A mask
disagreement above :data:`MAX_MASK_DISAGREEMENT` (0.1% of the pixels) is a failed export (:class:`ExportError`;
the command exits 1).
"""

from __future__ import annotations

import inspect
import json
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser, ckpt_export
from monai.transforms import ResizeWithPadOrCrop
from monai.utils import convert_to_tensor

__all__ = ["FORMATS", "ONNX_OPSET", "MAX_MASK_DISAGREEMENT", "ExportError", "export_torchscript", "export_bundle",
           "load_exported", "inference_network", "sample_inputs", "parity", "export_command"]

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "torch_export", "onnx")
SUFFIX = {"torchscript": ".ts", "torch_export": ".pt2", "onnx": ".onnx"}
ONNX_OPSET = 18
MAX_MASK_DISAGREEMENT = 0.001


class ExportError(RuntimeError):
    """An unknown format, or an exported network whose masks differ from the eager network's (names the file)."""


def _parser(bundle: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    return parser


def inference_network(bundle: str | Path) -> torch.nn.Module:
    """The ``network_def`` of ``configs/inference.json`` with ``models/model.pt`` loaded, in eval mode, fp32, CPU."""
    bundle = Path(bundle).resolve()
    net = _parser(bundle).get_parsed_content("network_def", instantiate=True)
    state = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state["model"] if isinstance(state, dict) and isinstance(state.get("model"), dict) else state)
    return net.float().eval()


def _network_size(parser: ConfigParser) -> list[int]:
    for key in ("spatial_size", "roi_size"):
        if key in parser:
            return [int(s) for s in parser.get_parsed_content(key)][:2]
    raise ExportError(f"{parser.get('bundle_root')}/configs/inference.json has neither spatial_size nor roi_size.")


def _size_divisor(bundle: Path) -> int:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    shape = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]
    return int(eval(str(shape[0]), {"n": 1, "p": 1}))  # noqa: S307 (metadata strings such as "16*n")


def sample_inputs(bundle: str | Path, n: int = 4) -> tuple[torch.Tensor, list[str]]:
    """Up to ``n`` network inputs ``(N, C, H, W)`` (float32) from the bundle's own sample data, and their sources.

    Raises:
        ExportError: if the bundle's sample input gives no image.
    """
    bundle = Path(bundle).resolve()
    parser = _parser(bundle)
    size = _network_size(parser)
    preprocessing = parser.get_parsed_content("preprocessing")
    axis = int(parser.get("inferer#spatial_dim", 2)) if parser.get("inferer#_target_") == "SliceInferer" else None
    fit = ResizeWithPadOrCrop(size)
    inputs, sources = [], []
    for item in parser.get_parsed_content("datalist"):
        x = torch.as_tensor(preprocessing(dict(item))["image"]).float().cpu()
        name = Path(str(item["image"])).name
        if x.ndim == 4:  # a volume (C, H, W, D): its middle slices along the slice inferer's axis
            axis_ = 1 + (axis if axis is not None else 2)
            depth = x.shape[axis_]
            for i in np.linspace(depth * 0.3, depth * 0.7, n).astype(int):
                inputs.append(fit(x.select(axis_, int(i))))
                sources.append(f"{name}[slice {int(i)}]")
        else:
            inputs.append(fit(x))
            sources.append(name)
        if len(inputs) >= n:
            break
    if not inputs:
        raise ExportError(f"{bundle}: its inference.json's sample input gave no image.")
    return torch.stack([convert_to_tensor(t, track_meta=False) for t in inputs[:n]]).contiguous(), sources[:n]


def export_torchscript(bundle: Path | str, filepath: Path | str | None = None) -> Path:
    """Export ``models/model.pt`` to TorchScript with MONAI's ``ckpt_export`` (default ``models/model.ts``): the
    ``network_def`` of ``configs/inference.json`` with the weights loaded, ``metadata.json`` and the config
    embedded as MONAI's export does. Returns the file's path (MONAI adds ``.ts`` to a name without a suffix)."""
    bundle = Path(bundle)
    filepath = Path(filepath) if filepath else bundle / "models" / "model.ts"
    filepath = filepath if filepath.suffix else filepath.with_name(filepath.name + ".ts")
    ckpt_export(net_id="network_def", filepath=str(filepath), ckpt_file=str(bundle / "models" / "model.pt"),
                meta_file=str(bundle / "configs" / "metadata.json"), config_file=str(bundle / "configs" / "inference.json"),
                bundle_root=str(bundle))
    return filepath


def _dynamic_shapes(net: torch.nn.Module, divisor: int | None) -> dict:
    from torch.export import Dim

    name = next(iter(inspect.signature(net.forward).parameters))
    dims = {0: Dim("batch", min=1, max=4096)}
    if divisor:
        dims.update({2: divisor * Dim("h_blocks", min=1, max=8192 // divisor),
                     3: divisor * Dim("w_blocks", min=1, max=8192 // divisor)})
    return {name: dims}


def _need_onnx() -> None:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"ONNX export needs onnx, onnxscript and onnxruntime ({e}): pip install -e \".[export]\".") from e


def _write(fmt: str, net: torch.nn.Module, example: torch.Tensor, path: Path, divisor: int | None) -> None:
    if fmt == "onnx":
        _need_onnx()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torch_export":
            program = torch.export.export(net, (example,), dynamic_shapes=_dynamic_shapes(net, divisor))
            torch.export.save(program, str(path))
        else:
            torch.onnx.export(net, (example,), str(path), dynamo=True, opset_version=ONNX_OPSET,
                              dynamic_shapes=_dynamic_shapes(net, divisor), input_names=["image"],
                              output_names=["pred"], optimize=True)


def load_exported(path: str | Path, fmt: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``(N, C, H, W) -> logits`` of the exported file: ``torch.jit.load``, ``torch.export.load`` or an
    ``onnxruntime.InferenceSession`` on the CPU provider.

    Raises:
        ExportError: for an unknown format.
    """
    if fmt == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu").eval()
        return lambda x: module(x)
    if fmt == "torch_export":
        module = torch.export.load(str(path)).module()
        return lambda x: module(x)
    if fmt == "onnx":
        _need_onnx()
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])
    raise ExportError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}.")


def _compare(eager: torch.Tensor, exported: torch.Tensor, threshold: float) -> dict:
    if tuple(eager.shape) != tuple(exported.shape):
        return {"shape_eager": list(eager.shape), "shape_exported": list(exported.shape), "mask_disagreement": 1.0,
                "max_abs_prob_diff": float("inf")}
    pe, px = torch.sigmoid(eager.float()), torch.sigmoid(exported.float())
    return {"max_abs_prob_diff": float((pe - px).abs().max()),
            "mask_disagreement": float(((pe >= threshold) != (px >= threshold)).float().mean())}


def _seconds_per_input(fn: Callable, x: torch.Tensor, repeats: int = 3) -> float:
    """Median of ``repeats`` timed calls after two untimed ones (TorchScript's profiling executor optimises the graph
    over its first calls; onnxruntime allocates its arenas on the first)."""
    with torch.no_grad():
        fn(x), fn(x)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            fn(x)
        runs.append((time.perf_counter() - start) / len(x))
    return statistics.median(runs)


def parity(bundle: str | Path, path: str | Path, fmt: str, net: torch.nn.Module | None = None,
           samples: tuple[torch.Tensor, list[str]] | None = None) -> dict:
    """Compare the exported file with the eager network on the bundle's sample inputs (module docstring);
    ``samples``: :func:`sample_inputs`' result, when the caller has it."""
    bundle = Path(bundle).resolve()
    net = net if net is not None else inference_network(bundle)
    inputs, sources = samples if samples is not None else sample_inputs(bundle)
    parser = _parser(bundle)
    threshold = float(parser.get_parsed_content("threshold")) if "threshold" in parser else 0.5
    exported = load_exported(path, fmt)
    with torch.no_grad():
        report = _compare(net(inputs), exported(inputs), threshold)
    report.update({"inputs": sources, "input_shape": list(inputs.shape), "threshold": threshold,
                   "seconds_per_input_eager": round(_seconds_per_input(net, inputs), 4),
                   "seconds_per_input_exported": round(_seconds_per_input(exported, inputs), 4),
                   "cpu_threads": torch.get_num_threads()})
    return report


def export_bundle(bundle_dir: str | Path, fmt: str = "torchscript", output: str | Path | None = None) -> dict:
    """Export the bundle's network in ``fmt`` (default file ``models/model{.ts,.pt2,.onnx}``), check parity.

    Returns:
        ``{"bundle", "format", "file", "dynamic": [...], "static_reason", "onnx_opset", **parity}``.

    Raises:
        ExportError: for an unknown format, or masks that differ from eager on more than
            :data:`MAX_MASK_DISAGREEMENT` of the pixels (the report is in the message).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}.")
    bundle = Path(bundle_dir).resolve()
    path = Path(output) if output else bundle / "models" / f"model{SUFFIX[fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    net, samples = inference_network(bundle), sample_inputs(bundle)
    inputs = samples[0]
    info: dict = {"bundle": bundle.name, "format": fmt, "file": str(path), "dynamic": ["batch", "height", "width"],
                  "static_reason": None}
    if fmt == "torchscript":
        path = export_torchscript(bundle, path)
        info["file"] = str(path)
    else:
        divisor = _size_divisor(bundle)
        example = inputs[:2] if len(inputs) >= 2 else inputs.repeat(2, 1, 1, 1)  # a batch of 1 would be specialised
        _write(fmt, net, example, path, divisor)
        probe = torch.nn.functional.pad(inputs[:3], (0, divisor, 0, 2 * divisor))  # another batch and size
        try:
            with torch.no_grad():
                check = _compare(net(probe), load_exported(path, fmt)(probe), 0.5)
            reason = None if check["mask_disagreement"] <= MAX_MASK_DISAGREEMENT else f"output differs at {list(probe.shape)}: {check}"
        except Exception as e:  # noqa: BLE001 (the exporter's own guard errors name what was specialised)
            reason = f"{type(e).__name__} at input {list(probe.shape)}: {str(e).splitlines()[0][:200]}"
        if reason:
            logger.info("%s: spatial size fixed at %s (%s)", fmt, list(inputs.shape[2:]), reason)
            _write(fmt, net, example, path, None)
            info.update({"dynamic": ["batch"], "static_reason": reason})
        if fmt == "onnx":
            info["onnx_opset"] = ONNX_OPSET
    info.update(parity(bundle, path, fmt, net, samples))
    if not info["mask_disagreement"] <= MAX_MASK_DISAGREEMENT:
        raise ExportError(f"{path}: its masks differ from the eager network's on {info['mask_disagreement']:.4%} of "
                          f"the pixels (limit {MAX_MASK_DISAGREEMENT:.1%}): {json.dumps(info)}")
    return info


# ---------------------------------------------------------------- the command line (python -m tools export)


def export_command(bundle_dir: str, filepath: str | None = None, format: str = "torchscript",  # noqa: A002
                   output: str | None = None) -> str:
    """Export the bundle's models/model.pt (TorchScript, torch.export .pt2 or ONNX), then check it against the eager
    network on the bundle's sample inputs; print the report (JSON: file, dynamic sizes, max abs difference of the
    probabilities, fraction of mask pixels that differ, seconds per input). Exits 1 when the masks differ on more than
    0.1% of the pixels.

    Args:
        bundle_dir: the bundle folder.
        filepath: the file to write (kept for scripts of earlier releases; same as --output).
        format: torchscript (default), torch_export or onnx.
        output: the file to write; default BUNDLE_DIR/models/model.ts, .pt2 or .onnx.
    """
    try:
        report = export_bundle(bundle_dir, str(format), output or filepath)
    except ExportError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(1)
    return json.dumps(report, indent=2)
