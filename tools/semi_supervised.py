"""Semi-supervised training with iterative pseudo-labels on unlabelled slices (Semi-Inf-Net's protocol, MONAI terms).

Fan et al., "Inf-Net: Automatic COVID-19 Lung Infection Segmentation from CT Images", IEEE TMI 2020, Sec. III-C
(Semi-Inf-Net): a model trained on the labelled slices labels unlabelled slices; a model trained on labelled +
pseudo-labelled slices labels them again; and so on. :class:`PseudoLabelRounds` runs that loop on a bundle's own
``SupervisedTrainer`` and ``SupervisedEvaluator`` (``configs/train_semi.json``, merged over ``train.json``):

0. **The unlabelled slices' window** (``harmonise_window``, on by default): the 1600 COVID-19-CT-Seg slices were not
   windowed like the labelled MedSeg ones (in the coronacases volumes, 70% of them, soft tissue sits at grey ~95
   instead of ~214), and a teacher that never saw such slices marks the grey body wall as lesion (34% of the pixels of
   the unlabelled slices at the first try, where the labelled slices have 14.5% lesion on average and Semi-Inf-Net's
   own pseudo-labels 3.6%; no student then beat its teacher's validation IoU in 8 of the 10 folds of the two bundles). :func:`tools.windowing.harmonise_window` maps each volume's lung and tissue peaks onto the labelled
   training slices' ones first, into ``output_dir/unlabelled_window/``.
1. **Teacher** (round 0): the bundle's supervised training (``train.json`` as it is), or a given checkpoint
   (``teacher_checkpoint``, e.g. the same fold's model of a supervised ``tools crossval`` run).
2. **Pseudo-labels** (round ``r``): the current best model predicts every unlabelled slice; the foreground
   probability is resized back to the slice's size and written as a PNG under ``output_dir/round<r>/pseudo/``:
   ``pseudo_labels="hard"`` thresholds it (``threshold``, 0.5) into a 0/255 mask, written as the labelled masks are
   and loaded by the bundle's own chain; ``"soft"`` keeps the probability (``round(255 p)``, steps of 1/255), loaded
   by ``pseudo_transform`` (``tools.pipelines.slice_loading(soft_label=True)``) as a target in [0, 1] for the
   bundle's loss (BCE and Dice take soft targets); ``"confident"`` keeps only the confident pixels (``p >= confidence``
   -> 255, ``p <= 1 - confidence`` -> 0) and marks the others :data:`UNCERTAIN` (128), which the same graded loading
   reads as 128/255 and ``tools.confident_loss.IgnoreUncertainPixels`` (``train_semi.json``'s loss wrapper) leaves
   out of the loss.
3. **Student** (round ``r``): the current best model trained further on every labelled training slice plus
   ``pseudo_per_epoch`` pseudo-labelled slices drawn afresh each epoch (:class:`LabelledPlusPseudoSampler`), for at
   most ``student_epochs`` epochs with early stopping on the validation split.
4. The model kept after each round is the best on the validation split so far (teacher included): the evaluator's
   best-metric checkpoint (``@ckpt_dir/model.pt``) is shared by all rounds, so a round that does not help leaves it.
   With ``keep_teacher`` false the teacher's score is forgotten before round 1 (round 1 still starts from the teacher
   and labels with it): the model kept is then the best *student*, which is how a cross-validation measures what the
   students are worth (with the teacher eligible, the fold's validation slices, 10 of them, pick the teacher's
   luckiest epoch against the students' more typical ones).

Where this departs from Semi-Inf-Net, and why:

- Semi-Inf-Net adds 5 randomly chosen unlabelled slices per iteration (320 iterations for 1600 slices) and
  retrains each time; here each round labels all unlabelled slices at once and the student samples from them, so
  that a round costs a bounded number of epochs (two rounds of a 5-fold cross-validation fit one working session on
  two CPU cores).
- Semi-Inf-Net's pseudo-labels are the network's maps; here they are thresholded by default (hard labels), so that
  the bundles' binary-mask checks keep guarding every target the network is trained on; ``pseudo_labels="soft"``
  keeps the maps, as Semi-Inf-Net does, and ``"confident"`` the confident pixels only, for the cross-validated
  comparison of the three that the COVID issue asks for.
- The student starts from the teacher's weights (fine-tuning) rather than from scratch, for the same budget reason.
- Step 0 is ours: Inf-Net's paper does not say that its unlabelled slices were windowed differently.

``given_pseudo_labels`` replaces step 2 with someone else's masks (``<stem>.png`` a slice; Inf-Net's own
``PseudoGT-SemiInfNet``, made by the authors' Semi-Inf-Net): for a clearly named comparison run only, never a shipped
recipe, since those masks are another model's output, not ground truth.

Interrupted runs resume per round: a round whose ``round<r>/done.json`` exists is not rerun (its model,
``round<r>/model.pt``, is loaded instead).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.handlers import CheckpointSaver
from PIL import Image
from torch.utils.data import ConcatDataset, Sampler

from tools.data.files import IMAGE_EXTENSIONS, has_ext, natural_key
from tools.io import atomic_path, atomic_write_text
from tools.run_control import ProgressLog, attach_early_stopping, event_handlers, reset_early_stopping
from tools.windowing import harmonise_window

__all__ = ["PSEUDO_LABELS", "UNCERTAIN", "unlabelled_images", "LabelledPlusPseudoSampler", "PseudoLabelRounds"]

PSEUDO_LABELS = ("hard", "soft", "confident")
UNCERTAIN = 128  # the grey value of an uncertain pixel in a confident-pixel pseudo-label (read as 128/255)

logger = logging.getLogger(__name__)


def unlabelled_images(folder: str | Path, limit: int | None = None) -> list[str]:
    """The image files of ``folder`` (:data:`tools.data.IMAGE_EXTENSIONS`) in natural name order, the first ``limit``.

    Raises:
        FileNotFoundError: if ``folder`` is not a folder or holds no image, naming it.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: the unlabelled folder does not exist (set --unlabelled_dir, or SEG_DATA_ROOT "
                                "to the folder holding covid19_ct_semiseg/Imgs).")
    images = sorted((p for p in root.iterdir() if has_ext(p, IMAGE_EXTENSIONS) and not p.name.startswith(".")),
                    key=natural_key)
    if not images:
        raise FileNotFoundError(f"{root} holds no images with extensions {IMAGE_EXTENSIONS}.")
    return [str(p) for p in images[: limit or None]]


class LabelledPlusPseudoSampler(Sampler[int]):
    """Each epoch: every labelled item (indices ``0 .. n_labelled - 1``) and ``pseudo_per_epoch`` pseudo-labelled ones
    (indices ``n_labelled ..``), drawn without replacement afresh every epoch, all in a shuffled order.

    So that the few labelled slices keep their weight however many unlabelled ones there are (40 labelled against
    1600 pseudo-labelled would otherwise be 2.4% of an epoch). The draw is seeded (``seed`` + the epoch count).
    """

    def __init__(self, n_labelled: int, n_pseudo: int, pseudo_per_epoch: int, seed: int = 0) -> None:
        if n_labelled < 1:
            raise ValueError(f"need at least one labelled item, got {n_labelled}.")
        self.n_labelled, self.n_pseudo = int(n_labelled), int(n_pseudo)
        self.per_epoch = max(0, min(int(pseudo_per_epoch), self.n_pseudo))
        self.seed, self.epoch = int(seed), 0

    def __len__(self) -> int:
        return self.n_labelled + self.per_epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        pseudo = self.n_labelled + torch.randperm(self.n_pseudo, generator=g)[: self.per_epoch]
        order = torch.cat([torch.arange(self.n_labelled), pseudo])
        return iter(order[torch.randperm(len(order), generator=g)].tolist())


def _load_weights(network: torch.nn.Module, path: str | Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state["model"] if isinstance(state, dict) and isinstance(state.get("model"), dict) else state
    getattr(network, "module", network).load_state_dict(state)


class PseudoLabelRounds:
    """Run the teacher, then ``rounds`` rounds of pseudo-labelling and student training (module docstring).

    Args:
        trainer: the bundle's ``SupervisedTrainer`` (``@train#trainer``); its data loader is replaced each round.
        evaluator: the bundle's ``SupervisedEvaluator`` on the validation split (``@validate#evaluator``), whose
            best-metric ``CheckpointSaver`` writes ``ckpt_path``.
        network: the trained network (``@network``).
        labelled: the labelled training items (``$@split[0]``).
        unlabelled_dir: folder of unlabelled slices.
        output_dir: where each round's pseudo-labels, model and ``done.json`` go (``round<r>/``).
        ckpt_path: the evaluator's best checkpoint (``@ckpt_dir + '/model.pt'``).
        transform: the training chain of a labelled item (``@train#preprocessing``), applied to hard pseudo-labelled
            items alike.
        batch_size: training batch size.
        predict_preprocessing: the chain of an unlabelled image alone (``{"image": path}`` -> ``(C, H, W)`` at the
            network's size), e.g. ``tools.pipelines.slice_inference_preprocessing``.
        inferer: the validation inferer (``@validate#inferer``), ``(B, C, H, W) -> (B, 1, H, W)`` logits.
        device: the network's device.
        rounds: pseudo-labelling rounds (at least 1; Semi-Inf-Net's protocol iterates, the issue asks for 2).
        student_epochs: the most epochs of a student round.
        pseudo_per_epoch: pseudo-labelled slices per student epoch (:class:`LabelledPlusPseudoSampler`).
        teacher_checkpoint: a trained model to start from instead of training the teacher.
        threshold: probability threshold of the pseudo-labels.
        max_unlabelled: use only the first N unlabelled slices (tests); ``None``: all.
        unlabelled_every: use every k-th unlabelled slice in name order (the slices of every volume, fewer of each:
            pseudo-labelling costs one forward pass a slice a round); 1: all.
        keep_teacher: whether the teacher may be the model kept (step 4); false: the best student is kept.
        early_stop_patience: validations without improvement before a student round (and the teacher, when trained
            here) stops; ``None``: none.
        seed: seed of the per-epoch draw.
        batch_size_predict: slices per forward pass when pseudo-labelling.
        harmonise_window: map the unlabelled slices onto the labelled slices' grey scale first (step 0); the labelled
            training items' images are the reference.
        pseudo_labels: ``"hard"`` (0/255 masks at ``threshold``), ``"soft"`` (8-bit probability maps) or
            ``"confident"`` (0/255 where the teacher is confident, :data:`UNCERTAIN` elsewhere), step 2.
        confidence: the probability a pixel needs (``p >= c`` or ``p <= 1 - c``) to be kept by ``"confident"``,
            in (0.5, 1].
        pseudo_transform: the training chain of a pseudo-labelled item; required for ``"soft"`` and ``"confident"``
            (its label loading
            must not binarise), ``None``: ``transform``.
        given_pseudo_labels: a folder of another model's pseudo-labels, ``<stem>.png`` for each unlabelled slice,
            used in every round instead of this model's (comparison runs; module docstring); ``None``: this model's.

    Raises:
        ValueError: at construction, for ``rounds`` or ``unlabelled_every`` below 1, an unknown ``pseudo_labels``,
            ``"soft"`` or ``"confident"`` without ``pseudo_transform``, or ``confidence`` outside (0.5, 1].

    Raises (at :meth:`run`):
        FileNotFoundError: if the unlabelled folder is missing or empty, a slice has no mask in
            ``given_pseudo_labels``, or no best checkpoint was saved.
    """

    def __init__(self, trainer: Any, evaluator: Any, network: torch.nn.Module, labelled: Sequence[dict],
                 unlabelled_dir: str | Path, output_dir: str | Path, ckpt_path: str | Path, transform: Any,
                 batch_size: int, predict_preprocessing: Any, inferer: Any, device: torch.device | str = "cpu",
                 rounds: int = 2, student_epochs: int = 10, pseudo_per_epoch: int = 80,
                 teacher_checkpoint: str | Path | None = None, threshold: float = 0.5,
                 max_unlabelled: int | None = None, early_stop_patience: int | None = None, seed: int = 0,
                 batch_size_predict: int = 16, harmonise_window: bool = True, unlabelled_every: int = 1,
                 keep_teacher: bool = True, pseudo_labels: str = "hard", pseudo_transform: Any = None,
                 given_pseudo_labels: str | Path | None = None, confidence: float = 0.9) -> None:
        if pseudo_labels not in PSEUDO_LABELS:
            raise ValueError(f"pseudo_labels must be one of {PSEUDO_LABELS}, got {pseudo_labels!r}.")
        if pseudo_labels != "hard" and pseudo_transform is None:
            raise ValueError(f"{pseudo_labels} pseudo-labels need a pseudo_transform that loads graded masks "
                             "(tools.pipelines.slice_loading(soft_label=True)); the labelled chain would binarise them.")
        if not 0.5 < float(confidence) <= 1.0:
            raise ValueError(f"confidence must be in (0.5, 1], got {confidence}.")
        self.confidence = float(confidence)
        self.pseudo_labels, self.given_pseudo_labels = pseudo_labels, given_pseudo_labels
        self.pseudo_transform = transform if pseudo_transform is None else pseudo_transform
        if int(rounds) < 1:
            raise ValueError(f"rounds must be at least 1, got {rounds}.")
        if int(unlabelled_every) < 1:
            raise ValueError(f"unlabelled_every must be at least 1, got {unlabelled_every}.")
        self.unlabelled_every, self.keep_teacher = int(unlabelled_every), bool(keep_teacher)
        self.trainer, self.evaluator, self.network = trainer, evaluator, network
        self.labelled = list(labelled)
        self.unlabelled_dir, self.output_dir, self.ckpt_path = unlabelled_dir, Path(output_dir), Path(ckpt_path)
        self.transform, self.batch_size = transform, int(batch_size)
        self.predict_preprocessing, self.inferer, self.device = predict_preprocessing, inferer, torch.device(device)
        self.rounds, self.student_epochs, self.pseudo_per_epoch = int(rounds), int(student_epochs), int(pseudo_per_epoch)
        self.teacher_checkpoint, self.threshold = teacher_checkpoint, float(threshold)
        self.max_unlabelled, self.seed, self.batch_size_predict = max_unlabelled, int(seed), int(batch_size_predict)
        self.harmonise_window = bool(harmonise_window)
        self.window_report: dict | None = None
        self.early_stop = attach_early_stopping(trainer, evaluator, early_stop_patience)
        self.progress = ProgressLog().attach(trainer)
        self.history: list[dict] = []

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Teacher, then every round; returns :attr:`history` (one record a stage: round, best validation metric,
        best epoch of that stage, epochs, seconds, pseudo-labelled slices and how many of them are empty)."""
        images = unlabelled_images(self.unlabelled_dir, self.max_unlabelled)[:: self.unlabelled_every]
        if self.harmonise_window:
            images, self.window_report = harmonise_window(images, [d["image"] for d in self.labelled],
                                                          self.output_dir / "unlabelled_window")
            left_out = [v for v, r in self.window_report["volumes"].items() if not r["used"]]
            logger.info("semi-supervised: %d unlabelled slices mapped onto the labelled slices' window %s%s",
                        len(images), self.window_report["reference"],
                        f"; volumes left out (no clear lung/tissue peaks): {', '.join(left_out)}" if left_out else "")
            if not images:
                raise FileNotFoundError(f"{self.unlabelled_dir}: no unlabelled volume has clear lung and tissue "
                                        "histogram peaks (see unlabelled_window/window.json).")
        base = self.progress.prefix
        start = time.perf_counter()
        self.progress.prefix = f"{base + ', ' if base else ''}teacher"
        if self.teacher_checkpoint:
            logger.info("semi-supervised: teacher from %s", self.teacher_checkpoint)
            _load_weights(self.network, self.teacher_checkpoint)
            self.evaluator.run()  # registers the teacher's validation score as the best so far, and saves it
            epochs = 0
        else:
            self.trainer.run()
            epochs = int(self.trainer.state.epoch)
        self._require_best()
        self.history.append(self._record(0, epochs, time.perf_counter() - start, None, None))
        for r in range(1, self.rounds + 1):
            rdir = self.output_dir / f"round{r}"
            done = rdir / "done.json"
            if r == 1 and not self.keep_teacher:
                self._load_and_forget_best()
            if done.is_file():
                logger.info("semi-supervised: round %d already done (%s), loading its model", r, done)
                _load_weights(self.network, rdir / "model.pt")
                self.evaluator.run()
                self.history.append(json.loads(done.read_text()))
                continue
            start = time.perf_counter()
            _load_weights(self.network, self.ckpt_path if self.ckpt_path.is_file() else self._teacher_copy)
            if self.given_pseudo_labels:
                pseudo, n_empty = self.given_labels(images), None
            else:
                pseudo, n_empty = self.pseudo_label(images, rdir / "pseudo")
            self.progress.prefix = f"{base + ', ' if base else ''}round {r}/{self.rounds}"
            self._train_student(pseudo)
            self._require_best()
            _load_weights(self.network, self.ckpt_path)
            with atomic_path(rdir / "model.pt") as tmp:
                shutil.copyfile(self.ckpt_path, tmp)
            record = self._record(r, int(self.trainer.state.epoch), time.perf_counter() - start, len(pseudo), n_empty)
            atomic_write_text(done, json.dumps(record, indent=2) + "\n")
            self.history.append(record)
        self.progress.prefix = base
        return self.history

    @property
    def _teacher_copy(self) -> Path:
        return self.output_dir / "round0" / "model.pt"

    def _load_and_forget_best(self) -> None:
        """``keep_teacher`` false: keep the teacher's weights aside (``round0/model.pt``, what round 1 starts from and
        labels with), then forget its validation score, so that the first student validation becomes the best."""
        if not self._teacher_copy.is_file():
            with atomic_path(self._teacher_copy) as tmp:
                shutil.copyfile(self.ckpt_path, tmp)
        self.ckpt_path.unlink(missing_ok=True)
        self.evaluator.state.best_metric, self.evaluator.state.best_metric_epoch = -1.0, -1
        for handler in event_handlers(self.evaluator):
            if isinstance(handler, CheckpointSaver) and handler._key_metric_checkpoint is not None:
                handler._key_metric_checkpoint.reset()  # its ignite Checkpoint: forget the saved best score

    def _require_best(self) -> None:
        if not self.ckpt_path.is_file():
            raise FileNotFoundError(f"{self.ckpt_path}: no best validation checkpoint was saved (did validation run?).")

    def _record(self, r: int, epochs: int, seconds: float, n_pseudo: int | None, n_empty: int | None) -> dict:
        state = self.evaluator.state
        return {"round": r, "best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch),
                "epochs": epochs, "seconds": round(seconds, 1), "pseudo_labelled": n_pseudo, "pseudo_empty": n_empty}

    def _train_student(self, pseudo: list[dict]) -> None:
        # the sampler's indices: the labelled items first, then the pseudo-labelled ones (each with its own chain)
        data = ConcatDataset([Dataset(self.labelled, transform=self.transform),
                              Dataset(pseudo, transform=self.pseudo_transform)])
        sampler = LabelledPlusPseudoSampler(len(self.labelled), len(pseudo), self.pseudo_per_epoch, self.seed)
        loader = DataLoader(data, batch_size=self.batch_size, sampler=sampler, num_workers=0)
        trainer = self.trainer
        trainer.data_loader = loader
        # a fresh run of the same engine: ignite resumes from state.epoch, so restart the counters by hand
        trainer.state.epoch, trainer.state.iteration = 0, 0
        trainer.state.max_epochs, trainer.state.epoch_length = self.student_epochs, len(loader)
        reset_early_stopping(self.early_stop)
        logger.info("semi-supervised: student on %d labelled + %d of %d pseudo-labelled slices an epoch, at most %d "
                    "epochs", len(self.labelled), sampler.per_epoch, len(pseudo), self.student_epochs)
        trainer.run()

    # -- pseudo-labels ---------------------------------------------------------------------------------------
    def given_labels(self, images: Sequence[str]) -> list[dict]:
        """The items ``{"image", "label"}`` pairing each slice with ``given_pseudo_labels/<stem>.png``."""
        folder = Path(self.given_pseudo_labels)
        items = [{"image": p, "label": str(folder / (Path(p).name.split(".")[0] + ".png"))} for p in images]
        missing = [d["label"] for d in items if not Path(d["label"]).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: no pseudo-label for {len(missing)} of {len(items)} unlabelled slices, "
                                    f"e.g. {missing[0]}.")
        logger.info("semi-supervised: %d given pseudo-labels from %s (another model's: a comparison run)",
                    len(items), folder)
        return items

    @torch.no_grad()
    def pseudo_label(self, images: Sequence[str], folder: Path) -> tuple[list[dict], int]:
        """Predict every image, write its pseudo-label as ``folder/<stem>.png`` (the image's size): the mask
        thresholded at ``threshold`` (0/255), soft, the probability as ``round(255 p)``, or confident, 0/255 where
        the teacher is confident and :data:`UNCERTAIN` elsewhere.

        Returns:
            the items ``{"image", "label"}`` and how many masks are empty.
        """
        folder.mkdir(parents=True, exist_ok=True)
        network = self.network
        was_training = network.training
        network.eval()
        loader = DataLoader(Dataset([{"image": p} for p in images], transform=self.predict_preprocessing),
                            batch_size=self.batch_size_predict, num_workers=0, shuffle=False)
        items, n_empty, k = [], 0, 0
        t0 = time.perf_counter()
        for batch in loader:
            x = batch["image"].to(self.device)
            prob = torch.sigmoid(self.inferer(x, network).float()).cpu()
            for i in range(prob.shape[0]):
                path = images[k]
                k += 1
                with Image.open(path) as im:
                    w, h = im.size
                # MONAI's PILReader indexes (W, H) (reverse_indexing): resize to it, then transpose for PIL
                p = torch.nn.functional.interpolate(prob[i: i + 1, :1], size=(w, h), mode="bilinear",
                                                    align_corners=False)[0, 0]
                foreground = p >= self.threshold
                n_empty += int(not bool(foreground.any()))  # soft maps too: empty at the threshold
                if self.pseudo_labels == "soft":
                    mask = torch.round(p.clamp(0, 1) * 255)
                elif self.pseudo_labels == "confident":
                    mask = torch.full_like(p, float(UNCERTAIN))
                    mask[p >= self.confidence], mask[p <= 1 - self.confidence] = 255.0, 0.0
                else:
                    mask = foreground * 255
                mask = mask.numpy().T.astype(np.uint8)
                out = folder / (Path(path).name.split(".")[0] + ".png")
                with atomic_path(out) as tmp:
                    Image.fromarray(mask).save(tmp, format="PNG")
                items.append({"image": path, "label": str(out)})
        network.train(was_training)
        logger.info("semi-supervised: %d pseudo-labels in %s (%d empty), %.1f s", len(items), folder, n_empty,
                    time.perf_counter() - t0)
        return items, n_empty
