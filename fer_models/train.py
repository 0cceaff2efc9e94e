"""Training and evaluation from a store: run directories, checkpoints, resume, metrics.

Which samples train, which choose the epoch and which are reported is the run's protocol
(:mod:`fer_models.protocol`): the test samples are read once, after the last epoch.

A run directory holds ``config.json`` (the resolved configuration), ``log.jsonl`` (one line per
epoch: train loss, validation loss, accuracy, macro-F1, seconds), ``last.pt`` and ``best.pt``
(the last and the selected epoch's checkpoints, carrying the configuration, the class names and
the store's provenance hashes; they load with ``torch.load(..., weights_only=True)``), and, when
the run has test samples, ``confusion.png``, ``test_predictions.csv`` (store index, target and
predicted class of each test sample at the selected epoch) and ``summary.json`` (what selected the
epoch; test figures at the selected and at the last epoch).

Every random draw of an epoch (shuffle order, augmentation, dropout) is seeded from
``(seed, epoch)``, and the run sets its number of CPU threads (``threads``, recorded) and torch's
deterministic algorithms, so on the CPU a run is bit-identical to another with the same
configuration on the same torch build, and a run resumed from ``last.pt`` ends exactly where an
uninterrupted one ends. CUDA kernels are not all deterministic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from torch.nn import functional as F

from fer_models.augment import AugmentConfig, augment_batch
from fer_models.confusion_png import write_confusion_png
from fer_models.data import Selection, StoreBatches, SubjectFolds, make_loader, select_samples
from fer_models.metrics import accuracy, confusion_matrix, macro_f1
from fer_models.protocol import resolve_protocol, train_split_name
from fer_models.registry import create_model, get_model_entry
from pipeline.config import differing_keys
from pipeline.errors import ConfigError
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.store import ATTRS_KEY, open_store, stored_guidance

# 2: the protocol of fer_models.protocol (format-1 fold runs chose their epoch on the test fold).
CHECKPOINT_FORMAT = 2


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``None`` means "the model's default" (epochs, batch_size, lr) or "from
    the store" (labels: its first label set; splits: see :mod:`fer_models.protocol`)."""

    store: str
    model: str = "cnn"
    options: dict[str, Any] = field(default_factory=dict)  # the model's own options
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    labels: str | None = None
    train_split: str | None = None
    eval_split: str | None = None  # the validation split (see fer_models.protocol)
    test_split: str | None = None
    folds: int = 0  # > 0: subject-independent folds of the train split, fold `fold` tested
    fold: int = 0
    val_fraction: float = 0.0  # > 0: validate on this share of the training subjects (or samples)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    balance: str = "weights"  # weights: class-weighted loss; none
    augment: bool = True
    workers: int = 0  # DataLoader worker processes (spawn) when streaming from the store
    in_memory: bool | str = "auto"
    init: str | None = None  # a state dict (or a checkpoint of ours) to start from, loaded non-strictly
    threads: int | None = None  # CPU threads (torch intra-op); None: torch's current number, recorded

    def __post_init__(self) -> None:
        if self.folds and not 0 <= self.fold < self.folds:
            raise ConfigError(f"--fold must be between 0 and {self.folds - 1} with --folds {self.folds}")
        if self.folds and (self.eval_split or self.test_split):
            raise ConfigError("--folds tests fold --fold and validates on the next fold (or --val-fraction); "
                              "leave out --eval-split and --test-split")  # fmt: skip
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be at least 0 and below 1, got {self.val_fraction}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be 1 or more, got {self.threads}")
        if self.balance not in ("weights", "none"):
            raise ConfigError(f"balance must be weights or none, got {self.balance!r}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")

    def resolved(self) -> TrainConfig:
        """This config with the model's defaults filled in."""
        defaults = get_model_entry(self.model).defaults
        config = dataclasses.replace(
            self, **{key: defaults[key] for key in ("epochs", "batch_size", "lr") if getattr(self, key) is None}
        )
        if config.threads is None:
            config = dataclasses.replace(config, threads=torch.get_num_threads())
        if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
            raise ConfigError("epochs and batch size must be at least 1 and the learning rate positive")
        return config


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU.

    Raises:
        ConfigError: CUDA asked for but not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this torch build sees no CUDA GPU; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown --device {device!r}; use auto, cpu, cuda or cuda:N") from None


@contextlib.contextmanager
def reproducible_torch(threads: int):
    """Run with ``threads`` intra-op CPU threads and torch's deterministic algorithms (warning
    where an op has none), restoring the previous settings afterwards."""
    previous = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


@dataclass
class StoreView:
    """What training needs to know about a store: its group, provenance and flip permutations."""

    path: str
    provenance: dict
    image_shape: tuple[int, int, int]  # (C, S, S)
    guidance_size: int
    permutations: dict[str, torch.Tensor | None]

    @classmethod
    def open(cls, path: str) -> StoreView:
        group = open_store(path)
        provenance = dict(group.attrs[ATTRS_KEY])
        permutations: dict[str, torch.Tensor | None] = {
            "landmarks": torch.tensor(provenance["landmark_flip_permutation"])
        }
        for name in stored_guidance(group):
            permutation = group[name].attrs.get("flip_permutation")
            permutations[name] = None if permutation is None else torch.tensor(permutation)
        return cls(path, provenance, tuple(group["image"].shape[1:]), provenance["config"]["guidance"]["size"],
                   permutations)  # fmt: skip

    def check_inputs(self, model_name: str, inputs: tuple[str, ...]) -> None:
        """Raises ConfigError naming each array the model reads that the store lacks, and the
        preprocessing option that produces it."""
        held = {"image", "landmarks", *self.permutations}
        missing = [name for name in inputs if name not in held]
        if missing:
            guidance = [name for name in missing if name in GUIDANCE_TYPES]
            hint = (
                f"; add it with `fer-preprocess {self.path} --guidance {','.join(guidance)}` "
                f"(or build with --guidance ...,{','.join(guidance)})" if guidance else ""
            )
            raise ConfigError(f"model {model_name!r} reads {', '.join(missing)}, which the store {self.path} lacks{hint}")


def build_model(config: TrainConfig, view: StoreView, num_classes: int) -> torch.nn.Module:
    """The configured model, sized for the store's images (and guidance maps)."""
    channels, size, _ = view.image_shape
    kwargs = dict(config.options)
    if "guidance_size" in get_model_entry(config.model).options():
        kwargs.setdefault("guidance_size", view.guidance_size)
    model = create_model(config.model, in_channels=channels, num_classes=num_classes, image_size=size, **kwargs)
    view.check_inputs(config.model, tuple(model.inputs))
    return model


def model_fields(model: torch.nn.Module) -> tuple[str, ...]:
    """The store arrays a model's batches carry: the image (augmentation moves everything with
    it), then what the model reads."""
    return tuple(dict.fromkeys(("image", *model.inputs)))


def load_initial_weights(model: torch.nn.Module, path: str) -> str:
    """Load a user's weights (a state dict, or a fer-train checkpoint) into the tensors of
    ``model`` with the same names and shapes; returns a one-line report.

    Raises:
        ConfigError: unreadable, or no tensor matches.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"--init {path}: cannot read it as weights ({error})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    if not matching:
        raise ConfigError(f"--init {path}: none of its {len(state)} tensors matches a parameter of this model by name and shape")
    model.load_state_dict(matching, strict=False)
    return f"--init {path}: loaded {len(matching)} of the model's {len(own)} tensors ({len(state) - len(matching)} in the file unused)"


def prepare_batch(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a loader batch to ``device``; uint8 maps and images become float32 in [0, 1]."""
    out = {}
    for name, values in batch.items():
        values = values.to(device, non_blocking=True)
        out[name] = values.float().div_(255.0) if values.dtype == torch.uint8 else values
    return out


def classification_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy against class indices ``(B,)`` (class-weighted) or distributions ``(B, K)``."""
    if target.dim() == 2:
        return -(target * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
    return F.cross_entropy(logits.float(), target, weight=weight)


class Trainer:
    """Everything of one run that lives across epochs."""

    def __init__(self, config: TrainConfig, out_dir: Path, progress: bool, echo):
        self.config = config.resolved()
        self.out = Path(out_dir)
        self.progress = progress
        self.echo = echo
        self.device = resolve_device(self.config.device)
        self.view = StoreView.open(self.config.store)
        self.protocol = resolve_protocol(self.config, self.config.store, list(self.view.provenance["splits"]))
        self.train_selection = self.protocol.train
        self.class_names = self.train_selection.class_names
        torch.manual_seed(self.config.seed)
        self.model = build_model(self.config, self.view, len(self.class_names))
        if self.config.init:
            echo(load_initial_weights(self.model, self.config.init))
        self.model = self.model.to(self.device)
        self.fields = model_fields(self.model)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if self.cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.lr)
        self.class_weight = None
        if self.config.balance == "weights" and self.train_selection.target.ndim == 1:
            counts = np.bincount(self.train_selection.hard_target, minlength=len(self.class_names))
            weight = counts.sum() / np.maximum(counts, 1) / len(self.class_names)
            self.class_weight = torch.tensor(weight, dtype=torch.float32, device=self.device)
        self.train_batches = self.batches(self.train_selection, shuffle=True)
        validation = self.protocol.validation
        # read once, scored every epoch
        self.validation_batches = None if validation is None else self.batches(validation, shuffle=False)
        self.epoch, self.history, self.best = 0, [], {"epoch": 0, "accuracy": -1.0}

    def batches(self, selection: Selection, shuffle: bool) -> StoreBatches:
        return StoreBatches(
            self.config.store, selection, self.fields, self.config.batch_size, shuffle=shuffle, seed=self.config.seed,
            drop_last=shuffle and len(selection) > self.config.batch_size, in_memory=self.config.in_memory,
        )  # fmt: skip

    def _loader(self, batches: StoreBatches):
        workers = 0 if batches.in_memory else self.config.workers
        return make_loader(batches, num_workers=workers, pin_memory=self.cuda)

    def _autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.cuda else contextlib.nullcontext()

    def _input(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.cuda:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        return batch

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the train split; returns the mean loss (``loss``) and, for a model with
        terms of its own, each term's mean beside the classification loss."""
        torch.manual_seed(self.config.seed * 1_000_003 + epoch)  # dropout and friends
        augment_generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        augment = AugmentConfig() if self.config.augment else None
        self.train_batches.set_epoch(epoch)
        self.model.train()
        sums: Counter[str] = Counter()
        seen = 0
        bar = click.progressbar(length=len(self.train_batches), label=f"epoch {epoch}/{self.config.epochs}",
                                file=sys.stderr) if self.progress else contextlib.nullcontext()  # fmt: skip
        with bar:
            for batch in self._loader(self.train_batches):
                batch = prepare_batch(batch, self.device)
                if augment is not None:
                    batch = augment_batch(batch, augment, self.view.permutations, augment_generator)
                with self._autocast():
                    output = self.model(self._input(batch))
                    terms = {"classification": classification_loss(output["logits"], batch["target"], self.class_weight),
                             **output.get("losses", {})}  # a model's own terms  # fmt: skip
                    loss = sum(terms.values())
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                n = len(batch["target"])
                sums["loss"] += loss.item() * n
                if len(terms) > 1:
                    for name, term in terms.items():
                        sums[name] += term.item() * n
                seen += n
                if self.progress:
                    bar.update(1)
        return {name: value / max(seen, 1) for name, value in sums.items()}

    def evaluate(self, batches: StoreBatches) -> dict[str, Any]:
        """Loss, accuracy, macro-F1, confusion matrix and predictions on ``batches`` (hard labels:
        the most voted class of a soft target); see :func:`evaluate_model`."""
        return evaluate_model(self.model, self._loader(batches), self.device, len(self.class_names), self._autocast,
                              self._input)  # fmt: skip

    def checkpoint(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "best": self.best,
            "config": dataclasses.asdict(self.config),
            "class_names": list(self.class_names),
            "label_set": self.train_selection.label_set,
            "store": {"location": self.config.store,
                      **{key: self.view.provenance[key] for key in ("dataset", "config_sha256", "manifest_sha256")}},
        }

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.epoch, self.history, self.best = checkpoint["epoch"], checkpoint["history"], checkpoint["best"]


def _save(checkpoint: dict[str, Any], path: Path) -> None:
    """Write atomically: a run killed while saving keeps the previous file."""
    partial = path.with_suffix(".partial")
    torch.save(checkpoint, partial)
    os.replace(partial, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train`, loaded with ``weights_only=True``.

    Raises:
        ConfigError: not a checkpoint of this project.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"no checkpoint at {path}") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ConfigError(f"{path} is not a readable checkpoint: {error}") from None
    if isinstance(checkpoint, dict) and checkpoint.get("format") == 1:
        raise ConfigError(f"{path} was written by an earlier fer-train (checkpoint format 1), whose fold runs chose "
                          "their epoch on the test fold; train it again with this version")  # fmt: skip
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a checkpoint written by fer-train (format {CHECKPOINT_FORMAT})")
    return checkpoint


def options_differing(checkpoint: dict[str, Any], config: TrainConfig) -> list[str]:
    """``["lr: 0.003 != 0.01", ...]``: where ``config`` differs from the checkpoint's run, apart
    from ``epochs`` (which a resumed run may raise)."""
    stored = {k: v for k, v in checkpoint["config"].items() if k != "epochs"}
    current = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(config))).items() if k != "epochs"}
    return differing_keys(stored, current)


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = False,
          echo=print) -> dict[str, Any]:  # fmt: skip
    """Train ``config.model`` on the protocol's training samples, select an epoch on its
    validation samples (the last epoch when it has none), then score the test samples once, at the
    selected and at the last epoch, and write the run directory (see the module docstring).

    Args:
        resume: continue the run in ``out_dir`` from its ``last.pt`` (same configuration; only
            ``epochs`` may grow; ``threads`` left unset takes the run's own).

    Returns:
        The summary (also written to ``summary.json``).

    Raises:
        ConfigError: a bad option, a store lacking what the model reads, ``out_dir`` holding
            another run (without ``resume``), or a resume with another configuration.
    """
    out = Path(out_dir)
    last = out / "last.pt"
    if last.exists() and not resume:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    checkpoint = load_checkpoint(last) if resume and last.exists() else None
    if checkpoint is not None and config.threads is None:
        config = dataclasses.replace(config, threads=checkpoint["config"].get("threads"))
    with reproducible_torch(config.resolved().threads):
        return _train(config, out, checkpoint, progress, echo)


def _train(config: TrainConfig, out: Path, checkpoint: dict | None, progress: bool, echo) -> dict[str, Any]:
    trainer = Trainer(config, out, progress, echo)
    last, best = out / "last.pt", out / "best.pt"
    if checkpoint is not None:
        differ = options_differing(checkpoint, trainer.config)
        if differ:
            raise ConfigError(f"--resume needs the run's own options; these differ from {last}: {'; '.join(differ)}")
        trainer.restore(checkpoint)
        echo(f"resuming {out} after epoch {trainer.epoch}")
    protocol = trainer.protocol
    if trainer.epoch == 0:
        echo(f"train {protocol.train_name} ({len(protocol.train)} samples); epoch chosen by {protocol.selected_by}; "
             + (f"reported on {protocol.test_name} ({len(protocol.test)} samples) after the last epoch"
                if protocol.test is not None else "no test samples: nothing is reported"))  # fmt: skip
        if protocol.validation is None:
            echo("no validation data: the last epoch is reported (--val-fraction F holds out part of the "
                 "training samples to choose the epoch on)")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(trainer.config), indent=2))
    began = time.perf_counter() - (trainer.history[-1]["seconds"] if trainer.history else 0.0)
    for epoch in range(trainer.epoch + 1, trainer.config.epochs + 1):
        train_losses = trainer.train_epoch(epoch)
        trainer.epoch = epoch
        record = {"epoch": epoch, "train_loss": round(train_losses["loss"], 6),
                  **{f"train_{name}": round(value, 6) for name, value in train_losses.items() if name != "loss"}}  # fmt: skip
        if trainer.validation_batches is None:
            improved = True  # the last epoch is the selected one
        else:
            scores = trainer.evaluate(trainer.validation_batches)
            record.update(validation_loss=round(scores["loss"], 6), validation_accuracy=scores["accuracy"],
                          validation_macro_f1=scores["macro_f1"])  # fmt: skip
            improved = scores["accuracy"] > trainer.best["accuracy"]
        record["seconds"] = round(time.perf_counter() - began, 2)
        trainer.history.append(record)
        if improved:
            trainer.best = {"epoch": epoch, "accuracy": record.get("validation_accuracy")}
        checkpoint = trainer.checkpoint()
        if improved:
            _save(checkpoint, best)
        _save(checkpoint, last)
        (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trainer.history))
        echo(json.dumps(record))
    return _report(trainer, out)


def _report(trainer: Trainer, out: Path) -> dict[str, Any]:
    """Score the test samples at the last epoch (the model as trained) and at the selected one
    (``best.pt``), write ``summary.json``, ``confusion.png`` and ``test_predictions.csv``."""
    protocol = trainer.protocol
    selected_epoch = trainer.best["epoch"]
    summary = {
        "model": trainer.config.model, "options": trainer.config.options, "labels": list(trainer.class_names),
        "label_set": trainer.train_selection.label_set, "device": str(trainer.device), "threads": trainer.config.threads,
        "epochs": trainer.config.epochs, "train_split": protocol.train_name, "train_samples": len(protocol.train),
        "validation_split": protocol.validation_name,
        "validation_samples": 0 if protocol.validation is None else len(protocol.validation),
        "selected_by": protocol.selected_by, "selected_epoch": selected_epoch,
        "selected_validation_accuracy": trainer.best["accuracy"],
        "test_split": protocol.test_name, "test_samples": 0 if protocol.test is None else len(protocol.test),
    }  # fmt: skip
    if protocol.test is not None:
        test_batches = trainer.batches(protocol.test, shuffle=False)
        last_scores = trainer.evaluate(test_batches)  # the model is at the last epoch
        if selected_epoch != trainer.epoch:
            trainer.restore(load_checkpoint(out / "best.pt"))
            scores = trainer.evaluate(test_batches)
        else:
            scores = last_scores
        summary.update({
            "test_accuracy": scores["accuracy"], "test_macro_f1": scores["macro_f1"], "confusion": scores["confusion"],
            "last_epoch_test_accuracy": last_scores["accuracy"], "last_epoch_test_macro_f1": last_scores["macro_f1"],
        })  # fmt: skip
        write_confusion_png(np.array(scores["confusion"]), trainer.class_names, out / "confusion.png",
                            title=f"{trainer.config.model}, epoch {selected_epoch}, {protocol.test_name}")  # fmt: skip
        write_predictions(out / "test_predictions.csv", scores)
    summary["seconds"] = trainer.history[-1]["seconds"] if trainer.history else 0.0
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def write_predictions(path: Path, scores: dict[str, Any]) -> None:
    """``index,target,predicted`` per scored sample (store index, class indices), one CSV row each."""
    rows = zip(scores["index"].tolist(), scores["target"].tolist(), scores["predicted"].tolist())
    path.write_text("index,target,predicted\n" + "".join(f"{i},{t},{p}\n" for i, t, p in rows))


def read_predictions(path: Path) -> dict[str, np.ndarray]:
    """The ``index``, ``target`` and ``predicted`` columns of :func:`write_predictions`, ``(N,) int64``."""
    values = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    return {"index": values[:, 0], "target": values[:, 1], "predicted": values[:, 2]}


def evaluate_model(model, loader, device, num_classes: int, autocast=contextlib.nullcontext, to_input=lambda b: b) -> dict[str, Any]:
    """Score ``model`` over ``loader``.

    Returns:
        ``loss`` (mean cross-entropy), ``accuracy``, ``macro_f1``, ``confusion`` (``(K, K)`` nested
        lists, rows true classes), and per sample in loader order ``index`` (store indices),
        ``target`` and ``predicted`` (class indices), each ``(N,) int64`` numpy arrays.
    """
    model.eval()
    predicted, truth, index, loss_sum = [], [], [], 0.0
    with torch.no_grad():
        for batch in loader:
            batch = prepare_batch(batch, device)
            with autocast():
                logits = model(to_input(batch))["logits"]
            loss_sum += classification_loss(logits, batch["target"], None).item() * len(batch["target"])
            target = batch["target"] if batch["target"].dim() == 1 else batch["target"].argmax(1)
            predicted.append(logits.argmax(1).cpu())
            truth.append(target.cpu())
            index.append(batch["index"].cpu())
    truth_all, predicted_all = torch.cat(truth).numpy(), torch.cat(predicted).numpy()
    confusion = confusion_matrix(truth_all, predicted_all, num_classes)
    return {"loss": loss_sum / max(len(truth_all), 1), "accuracy": accuracy(confusion), "macro_f1": macro_f1(confusion),
            "confusion": confusion.tolist(), "index": torch.cat(index).numpy(), "target": truth_all,
            "predicted": predicted_all}  # fmt: skip


def evaluate_checkpoint(checkpoint_path: str | Path, store: str, split: str | None = None, *, fold: int | None = None,
                        device: str = "auto", batch_size: int = 256, allow_seen: bool = False,
                        out: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Score a checkpoint with its own label set on the samples its run reported (the default), on
    ``split`` of ``store``, or on subject fold ``fold`` of its fold run; write ``confusion.png``
    and ``metrics.json`` to ``out`` when given.

    Where ``store`` holds the rows the checkpoint was trained from (the same manifest), the samples
    asked for are checked against the run's protocol: samples it trained on are refused unless
    ``allow_seen``, and samples that chose its epoch are counted in ``validation_samples_scored``.

    Returns:
        The metrics (``accuracy``, ``macro_f1``, ``confusion``, ...), ``scored`` (what was scored),
        ``trained_samples_scored`` and ``validation_samples_scored`` (None where unknown).

    Raises:
        ConfigError: not a checkpoint, no such split or fold, trained-on samples without
            ``allow_seen``, or the store lacks what the model reads or the checkpoint's label set.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    config = TrainConfig(**{**checkpoint["config"], "store": store, "device": device})
    view = StoreView.open(store)
    splits = list(view.provenance["splits"])
    same_rows = view.provenance["manifest_sha256"] == checkpoint["store"]["manifest_sha256"]
    protocol = resolve_protocol(config, store, splits) if same_rows else None
    if fold is not None:
        if not config.folds:
            raise ConfigError(f"--fold: {checkpoint_path} is not from a fold run (fer-train --folds K); use --split")
        if not 0 <= fold < config.folds:
            raise ConfigError(f"--fold must be between 0 and {config.folds - 1} for this {config.folds}-fold checkpoint")
        folds = SubjectFolds.only(config.folds, fold)
        selection = select_samples(store, train_split_name(config, splits), checkpoint["label_set"], folds)
        scored = f"fold{fold}"
    elif split is None:
        if protocol is None:
            raise ConfigError(f"{store} holds other rows than the store {checkpoint_path} was trained from; name a --split")
        if protocol.test is None:
            raise ConfigError(f"the run of {checkpoint_path} had no test samples; name a --split")
        selection, scored = protocol.test, protocol.test_name
    else:
        selection, scored = select_samples(store, split, checkpoint["label_set"]), split
    if list(selection.class_names) != checkpoint["class_names"]:
        raise ConfigError(f"label set {checkpoint['label_set']!r} of {store} has classes {list(selection.class_names)}; "
                          f"the checkpoint was trained on {checkpoint['class_names']}")  # fmt: skip
    seen = validated = None
    if protocol is not None:
        seen = int(np.isin(selection.index, protocol.train.index).sum())
        validated = 0 if protocol.validation is None else int(np.isin(selection.index, protocol.validation.index).sum())
        if seen and not allow_seen:
            raise ConfigError(
                f"{seen} of the {len(selection)} samples of {scored} were trained on by {checkpoint_path} "
                f"(its run trained on {protocol.train_name}); its figure would say nothing about unseen faces. "
                f"Score what the run held out: leave out --split/--fold ({protocol.test_name or 'no test samples'}), "
                "or pass --allow-seen to score them anyway"
            )  # fmt: skip
    torch_device = resolve_device(device)
    model = build_model(config, view, len(selection.class_names))
    model.load_state_dict(checkpoint["model"])
    model.to(torch_device)
    batches = StoreBatches(store, selection, model_fields(model), batch_size)
    scores = evaluate_model(model, make_loader(batches, pin_memory=torch_device.type == "cuda"), torch_device,
                            len(selection.class_names))  # fmt: skip
    result = {"checkpoint": str(checkpoint_path), "store": store, "scored": scored, "samples": len(selection),
              "model": config.model, "label_set": checkpoint["label_set"], "epoch": checkpoint["epoch"],
              "same_preprocessing": view.provenance["config_sha256"] == checkpoint["store"]["config_sha256"],
              "same_rows": same_rows, "trained_samples_scored": seen, "validation_samples_scored": validated,
              **{key: scores[key] for key in ("loss", "accuracy", "macro_f1", "confusion")}}  # fmt: skip
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_confusion_png(np.array(scores["confusion"]), selection.class_names, out / "confusion.png",
                            title=f"{config.model} epoch {checkpoint['epoch']}, {scored}")  # fmt: skip
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result
