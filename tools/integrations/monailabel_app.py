"""A MONAI Label app that serves this repository's bundles (``python -m tools serve``; needs ``.[monailabel]``).

MONAI Label's stock ``monaibundle`` app (``monailabel.tasks.infer.bundle.BundleInferTask`` and
``monailabel.tasks.train.bundle.BundleTrainTask``) assumes what the model zoo's bundles do, which ours do not
(measured with monailabel 0.8.5): one input kind per bundle chosen by the config's default ``input``, a label file
in the input's format (a ``(1, H, W)`` PNG/JPEG array its writer refuses), the network's output geometry restored
by its own ``Restored`` transform, and training that writes ``models/model.pt`` from inside the run. This app keeps
MONAI Label's tasks and subclasses only those points:

* **inference** (:class:`SegBundleInferTask`): the bundle's own ``preprocessing``, ``inferer`` and ``postprocessing``
  (its mask writer filtered out, as MONAI Label does with ``SaveImaged``), with the config's ``input`` set to the
  requested image, so that a COVID-19 bundle takes a CT volume (NIfTI, NRRD, MetaImage, a DICOM series folder)
  through its volume path (lung mask, slice-wise ``SliceInferer``) and a slice through its 2D path, exactly as
  ``python -m monai.bundle run --input IMAGE`` does. The label is written as MONAI Label expects a label map:
  8-bit PNG of the input's size for 2D inputs, NIfTI (uint8) with the input's affine for volumes, value 0 for
  background and 1 for the class (the labels of ``metadata.json``'s ``channel_def``).
* **training** (:class:`SegBundleTrainTask`): MONAI Label's call of the bundle's ``run`` id with its overrides,
  writing into a fresh run folder (``<app>/runs/<bundle>/<time>``) instead of the bundle; at least one validation
  (``val_interval`` capped at ``max_epochs``); then the run's best validation model is promoted to the bundle's
  ``models/model.pt`` (:func:`tools.checkpoints.promote`, the CLI's ``promote``), which the inference task reloads
  on its next request. Labels submitted to MONAI Label are label maps (0/1); the 2D bundles train on 0/255 masks,
  so 0/1 PNG labels are copied as 0/255 into the run folder first.

* **the datastore** (:class:`AtomicLocalDatastore`): MONAI Label's local datastore writing labels whole or not at
  all and refusing a label for an image it does not have; :meth:`SegBundlesApp.infer` refuses an image id the
  datastore does not have instead of reading it as a path. How the server answers such refusals (4xx, JSON) is
  :mod:`tools.integrations.monailabel_server`'s.

Importing this module imports ``monailabel``; nothing else in ``tools`` does but ``monailabel_server``, the web app.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tools.integrations.torchvision_ops import ensure_torchvision_imports

ensure_torchvision_imports()  # before monailabel imports torchvision (a CUDA build beside the CPU torch)

from monai.data import NibabelWriter, PILWriter  # noqa: E402
from monai.transforms import LoadImaged, SaveImaged  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.datastore.local import DataModel, LocalDatastore  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore  # noqa: E402
from monailabel.interfaces.exception import ImageNotFoundException, MONAILabelError, MONAILabelException  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402
from monailabel.interfaces.tasks.strategy import Strategy  # noqa: E402
from monailabel.interfaces.tasks.train import TrainTask  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402
from monailabel.tasks.infer.bundle import BundleInferTask  # noqa: E402
from monailabel.tasks.train.bundle import BundleTrainTask  # noqa: E402
from filelock import FileLock  # noqa: E402
from PIL import Image  # noqa: E402

from tools.data.inputs import input_kind  # noqa: E402
from tools.io import atomic_path, atomic_write_text  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["AtomicLocalDatastore", "SegBundleInferTask", "SegBundleTrainTask", "SegBundlesApp", "parse_models",
           "write_label"]

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def parse_models(spec: str) -> dict[str, tuple[str, list[str], int | None]]:
    """The app's ``models`` setting -> ``{model name: (bundle folder, [inference config files], dimension)}``.

    ``spec`` is a JSON object written by ``python -m tools serve``: ``{"name": {"bundle": DIR, "configs": [...],
    "dimension": 2 or 3}}`` (configs relative to ``DIR/configs``, merged in order, default ``["inference.json"]``;
    dimension default from metadata.json's input shape, as MONAI Label's own task does).
    """
    out = {}
    for name, item in json.loads(spec).items():
        out[name] = (str(Path(item["bundle"]).resolve()), list(item.get("configs") or ["inference.json"]),
                     item.get("dimension"))
    return out


def write_label(pred: torch.Tensor, path: str) -> str:
    """Write a binary mask ``pred`` ``(1, H, W)`` or ``(1, H, W, D)`` (values 0/1, the input's geometry) as a MONAI
    Label label map: PNG (uint8 0/1) for 2D, NIfTI (uint8 0/1, ``pred``'s affine) for volumes. Returns ``path``.

    The array goes through MONAI's ``PILWriter`` / ``NibabelWriter`` as the bundles' own mask writer
    (:func:`tools.pipelines.mask_saver`) does, without its 0/255 scaling for 2D, so the pixels are those of the
    bundle's mask divided by 255.
    """
    pred = pred.detach().cpu()
    if pred.ndim == 3:
        writer = PILWriter(output_dtype=np.uint8, scale=None)
    elif pred.ndim == 4:
        writer = NibabelWriter(output_dtype=np.uint8)
    else:
        raise ValueError(f"expected a mask (1, H, W) or (1, H, W, D), got shape {tuple(pred.shape)}")
    writer.set_data_array(pred, channel_dim=0, squeeze_end_dims=True)
    meta = dict(getattr(pred, "meta", {}) or {})
    writer.set_metadata(meta, resample=False)
    writer.write(path, verbose=False)
    return path


class SegBundleInferTask(BundleInferTask):
    """MONAI Label inference of one of our bundles (module docstring).

    Args:
        path: the bundle folder.
        conf: the app's settings (MONAI Label's ``--conf``).
        configs: the inference config files under ``configs/``, merged in order (e.g. the spine bundle's
            ``["inference.json", "inference_ct.json"]`` for CT).
        dimension: 2 or 3, as MONAI Label lists the model (default: from metadata.json's input shape).
    """

    def __init__(self, path: str, conf: dict[str, str], configs: list[str] | None = None,
                 dimension: int | None = None, **kwargs: Any):
        self._configs = list(configs or ["inference.json"])
        self._lock = threading.Lock()
        super().__init__(path, conf, add_post_restore=False, extend_load_image=False, post_filter=[SaveImaged],
                         **kwargs)
        if dimension is not None:
            self.dimension = int(dimension)

    def _load_bundle_config(self, path, config):
        # MONAI Label reads configs/inference.json alone; ours may merge a second configuration over it
        return super()._load_bundle_config(path, [os.path.join(path, "configs", c) for c in self._configs])

    def __call__(self, request, callbacks=None):
        image = request.get("image")
        with self._lock:
            if isinstance(image, str) and "input" in self.bundle_config.config:
                kind = input_kind(image)  # raises naming the file if it is neither an image nor a volume
                logger.info(f"{os.path.basename(self.bundle_path)}: {image} is a {kind} input")
                self.bundle_config["input"] = image
            return super().__call__(request, callbacks)

    def pre_transforms(self, data=None):
        pre = super().pre_transforms(data)
        for t in pre:
            if isinstance(t, LoadImaged):
                # MONAI Label switches loaders to (image, meta dict) tuples for its own Restored/writer; ours read
                # MetaTensors (the geometry travels with the image) and our checked loader needs that.
                t._loader.image_only = True
        return pre

    def run_pre_transforms(self, data, transforms):
        # MONAI Label adds the image's path as "image_path"; MONAI >= 1.6's Spacingd treats every "image_*" key as
        # the image's meta dict and calls .update() on it (AttributeError on a str), so the path is set aside while
        # the bundle's preprocessing (the spine CT configuration resamples with Spacingd) runs.
        image_path = data.pop("image_path", None)
        data = super().run_pre_transforms(data, transforms)
        if image_path is not None:
            data["image_path"] = image_path
        return data

    def writer(self, data: dict[str, Any], extension=None, dtype=None):
        pred = data[self.output_label_key]
        suffix = ".nii.gz" if pred.ndim == 4 else ".png"
        fd, path = tempfile.mkstemp(suffix=suffix, prefix="label_")
        os.close(fd)
        try:
            write_label(pred, path)
        except BaseException:
            os.unlink(path)
            raise
        return path, {}


class SegBundleTrainTask(BundleTrainTask):
    """MONAI Label training of one of our bundles (module docstring).

    Args:
        path: the bundle folder.
        conf: the app's settings.
        runs_dir: where each training run gets its own folder.
    """

    def __init__(self, path: str, conf: dict[str, str], runs_dir: str, **kwargs: Any):
        self.runs_dir = Path(runs_dir)
        self._run_dir: Path | None = None
        self._max_epochs = 1
        super().__init__(path, conf, **kwargs)

    def _fetch_datalist(self, request, datastore):
        datalist = super()._fetch_datalist(request, datastore)
        return [{**d, "label": self._as_0_255(d["label"])} for d in datalist]

    def _as_0_255(self, label: str) -> str:
        """A 2D label map with values 0/1 (what MONAI Label stores) -> a 0/255 PNG copy in the run folder (the 2D
        bundles' training refuses 0/1 masks as ambiguous); anything else is returned as it is."""
        if not str(label).lower().endswith((".png", ".bmp", ".tif", ".tiff")):
            return label
        with Image.open(label) as im:
            arr = np.asarray(im)
        if arr.ndim != 2 or arr.max(initial=0) > 1:
            return label
        out = self._run_dir / "labels" / (Path(label).stem + ".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((arr > 0).astype(np.uint8) * 255).save(out)
        return str(out)

    def _partition_datalist(self, datalist, request, shuffle=False):
        train, val = super()._partition_datalist(datalist, request, shuffle=shuffle)
        if val is not None and not val:
            logger.warning("No validation records (val_split 0): validating on the training records.")
            val = list(train)
        return train, val

    def _update_overrides(self, overrides):
        overrides["output_dir"] = str(self._run_dir)
        val_interval = self.bundle_config.get("val_interval")
        if isinstance(val_interval, int):
            # at least one validation, so that the run has a best model to promote
            overrides["val_interval"] = max(1, min(val_interval, int(self._max_epochs)))
        device = overrides.get(self.const.key_device())
        if isinstance(device, str):
            overrides[self.const.key_device()] = torch.device(device)
        return overrides

    def __call__(self, request, datastore):
        from tools.checkpoints import promote

        name = Path(self.bundle_path).name
        self._run_dir = self.runs_dir / name / time.strftime("%Y%m%d-%H%M%S")
        self._run_dir.mkdir(parents=True, exist_ok=False)
        self._max_epochs = int(request.get("max_epochs", 50))
        result = super().__call__(request, datastore)
        summary = promote(self._run_dir, self.bundle_path)
        logger.info(f"{name}: promoted {summary['source']} -> {summary['destination']}")
        return {**(result or {}), "run_dir": str(self._run_dir), "promoted": str(summary["destination"])}


class AtomicLocalDatastore(LocalDatastore):
    """MONAI Label's local datastore (the studies folder), writing labels and its ``datastore_v2.json`` whole or not
    at all (:func:`tools.io.atomic_path`; MONAI Label copies straight onto the destination, so a server stopped or
    a disk filled mid-copy leaves a truncated label that training then reads), and refusing a label whose tag is not
    a plain name (it names the folder under ``labels/``)."""

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        """Save ``label_filename`` as the ``label_tag`` label of ``image_id``; returns the label id (the image id).

        Raises:
            ImageNotFoundException: if ``image_id`` is not an image of the datastore (the label is not saved).
            MONAILabelException: ``INVALID_INPUT``, if ``label_tag`` is not a plain name (letters, digits, ``_``,
                ``-``, ``.``).
        """
        if not isinstance(label_tag, str) or not _TAG.fullmatch(label_tag):
            raise MONAILabelException(MONAILabelError.INVALID_INPUT,
                                      f"tag {label_tag!r}: not a label tag (letters, digits, '_', '-', '.'; no path)")
        obj = self._datastore.objects.get(image_id)
        if not obj:
            raise ImageNotFoundException(f"image {image_id!r}: no such image in the studies folder; label not saved")
        _, label_ext = self._to_id(os.path.basename(label_filename))
        name = self._filename(image_id, label_ext)
        dest = os.path.join(self._datastore.label_path(label_tag), name)
        logger.info(f"Saving label {label_tag} of image {image_id}: {label_filename} -> {dest}")
        with FileLock(self._lock_file):
            with atomic_path(dest) as tmp:
                shutil.copyfile(label_filename, tmp)
            label_info = {**(label_info or {}), "ts": int(time.time()), "name": name}
            obj.labels[label_tag] = DataModel(info=label_info, ext=label_ext)
            self._update_datastore_file(lock=False)
        return image_id

    def _update_datastore_file(self, lock=True):
        # MONAI Label's own writes datastore_v2.json with open(..., "w"): a crash mid-write loses every record
        def write():
            self._ignore_event_config = True
            atomic_write_text(self._datastore_config_path,
                              json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str))
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()


class SegBundlesApp(MONAILabelApp):
    """The app: one inference task and one training task per served model (``conf["models"]``, see
    :func:`parse_models`); active learning strategies ``random`` and ``first``; nothing downloaded (no zoo, no SAM)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]):
        self.models = parse_models(conf.get("models", "{}"))
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="seg-bundles",
                         description="MONAI bundles of published segmentation networks (this repository)",
                         version="1")

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return AtomicLocalDatastore(self.studies, extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                                    auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                    read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def infer(self, request, datastore=None):
        """MONAI Label's inference (``request["image"]``: an image id of the datastore, or the absolute path of an
        uploaded file), refusing an image id the datastore does not have instead of reading it as a path relative
        to the server's working folder.

        Raises:
            ImageNotFoundException: for such an id.
            MONAILabelException: MONAI Label's, e.g. for a model that is not served.
        """
        image = request.get("image")
        if isinstance(image, str) and not os.path.isabs(image):
            uri = (datastore or self.datastore()).get_image_uri(image)
            if not uri or not os.path.exists(uri):
                raise ImageNotFoundException(f"image {image!r}: no such image in the studies folder")
        return super().infer(request, datastore)

    def init_infers(self) -> dict[str, InferTask]:
        infers = {}
        for name, (path, configs, dimension) in self.models.items():
            task = SegBundleInferTask(path, self.conf, configs=configs, dimension=dimension)
            if task.is_valid():
                infers[name] = task
            else:
                logger.warning(f"{name}: {path} is not a servable bundle (no configs or weights)")
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        if self.conf.get("skip_trainers", "false").lower() == "true":
            return {}
        runs = os.path.join(self.app_dir, "runs")
        trainers = {}
        for name, (path, configs, _) in self.models.items():
            if configs != ["inference.json"]:
                continue  # a second inference configuration of a bundle trained under its own name
            task = SegBundleTrainTask(path, self.conf, runs_dir=runs)
            if task.is_valid():
                trainers[name] = task
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}
