"""TorchScript export of a bundle's shipped weights (``python -m tools export``), through MONAI's ``ckpt_export``."""

from __future__ import annotations

from pathlib import Path

from monai.bundle import ckpt_export

__all__ = ["export_torchscript"]


def export_torchscript(bundle: Path | str, filepath: Path | str | None = None) -> Path:
    """Export ``models/model.pt`` to TorchScript with MONAI's ``ckpt_export`` (default ``models/model.ts``): the
    ``network_def`` of ``configs/inference.json`` with the weights loaded, ``metadata.json`` and the config
    embedded as MONAI's export does. Returns the file's path."""
    bundle = Path(bundle)
    filepath = Path(filepath) if filepath else bundle / "models" / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(filepath),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
    )
    return filepath


# ---------------------------------------------------------------- the command line (python -m tools export)


def export_command(bundle_dir: str, filepath: str | None = None) -> str:
    """Export the bundle's models/model.pt to TorchScript (MONAI's ckpt_export); print the file's path.

    Args:
        bundle_dir: the bundle folder.
        filepath: the TorchScript file to write; default BUNDLE_DIR/models/model.ts.
    """
    return str(export_torchscript(bundle_dir, filepath))
