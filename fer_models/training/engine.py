"""The training engine: one epoch, one evaluation, on the CPU or CUDA.

:class:`Trainer` holds what lives across epochs (model, optimizer, loaders, history); each epoch's
random draws are seeded from ``(seed, epoch)``. On CUDA it trains with autocast (bf16 where the
GPU has it), channels-last images and pinned, non-blocking copies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from fer_models.data.augment import AugmentConfig, augment_batch
from fer_models.data.device_batches import DeviceBatches, fits_on, selection_bytes
from fer_models.data.selection import Selection
from fer_models.data.stream import StoreBatches, make_loader
from fer_models.models.backbone import backbone_parameters
from fer_models.training.checkpoint import Checkpoint, initial_weight_digests, load_initial_weights, load_weights
from fer_models.training.config import TrainConfig
from fer_models.training.distributed import Ranks, gathered, start, sum_across
from fer_models.training.metrics import Scores, confusion_matrix
from fer_models.training.protocol import class_balance, resolve_protocol
from fer_models.training.store_view import StoreView, build_model, model_fields
from fer_models.training.weight_average import WeightAverage
from pipeline.errors import ConfigError
from pipeline.progress import QUIET, Progress
from pipeline.run_predictions import Predictions
from pipeline.store import open_store
from pipeline.store.recorded_checksums import unvouched_note


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
def reproducible_torch(threads: int) -> Iterator[None]:
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


def prepare_batch(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a loader batch to ``device``; uint8 maps and images become float32 in [0, 1]."""
    out = {}
    for name, values in batch.items():
        values = values.to(device, non_blocking=True)
        out[name] = values.float().div_(255.0) if values.dtype == torch.uint8 else values
    return out


def classification_loss(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy of ``logits`` ``(B, K)`` against class indices ``(B,)`` (class-weighted) or
    distributions ``(B, K)``, each target first mixed with the uniform distribution by
    ``label_smoothing``."""
    if target.dim() == 2:
        smoothed = target * (1 - label_smoothing) + label_smoothing / target.shape[1]
        return -(smoothed * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
    return F.cross_entropy(logits.float(), target, weight=weight, label_smoothing=label_smoothing)


class Trainer:
    """Everything of one run that lives across epochs.

    resuming: :meth:`restore` will replace the weights, so ``--init`` and the model's weight-file
    options are not read.
    """

    def __init__(self, config: TrainConfig, progress: Progress = QUIET, *, resuming: bool = False):
        self.config = config.resolved()
        self.schedule = self.config.schedule()
        self.progress = progress
        self.ranks = Ranks.from_environment()
        self.device = start(self.ranks, resolve_device(self.config.device), self.schedule.batch_size)
        self.view = StoreView.open(self.config.store)
        balance, chosen_by = class_balance(self.config, self.view.provenance.dataset)
        self.config = dataclasses.replace(self.config, balance=balance)  # config.json records it
        progress.line(f"class balance: {balance} ({chosen_by})")
        self.protocol = resolve_protocol(self.config, self.config.store, list(self.view.provenance.splits))
        self.train_selection = self.protocol.train
        self.class_names = self.train_selection.class_names
        label_set = self.train_selection.label_set
        chosen = "--labels" if self.config.labels else "the store's first label set; --labels chooses another"
        progress.line(f"labels: {label_set} ({chosen}): {len(self.class_names)} classes, {', '.join(self.class_names)}")
        torch.manual_seed(self.config.seed)
        self.model = build_model(self.config, self.view, len(self.class_names), initial_weights=not resuming)
        if self.config.init and not resuming:
            progress.line(load_initial_weights(self.model, self.config.init))
        # {path: sha256} of the files the weights started from; a resumed run takes its checkpoint's
        self.initial_weights: dict[str, str] = {} if resuming else initial_weight_digests(self.config)
        for path, digest in self.initial_weights.items():
            progress.line(f"initial weights {path}: sha256 {digest}")
        self.model = self.model.to(self.device)
        self.fields = model_fields(self.model)
        options = ", ".join(f"{k}={v}" for k, v in self.config.options.items()) or "its defaults"
        progress.line(f"model {self.config.model} ({options}) reads {', '.join(self.fields)}")
        note = unvouched_note(self.config.store, open_store(self.config.store), self.fields)
        if note:
            progress.line(note)
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if self.cuda else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.recipe = self.schedule.recipe
        # What trains: the model, wrapped where several processes share the work (their gradients averaged).
        self.trained_model: torch.nn.Module = self.model
        if self.ranks.distributed:
            self.trained_model = DistributedDataParallel(self.model, device_ids=[self.device] if self.cuda else None)
        self.optimizer = self.recipe.optimizer_for(self.model, backbone_parameters(self.model))
        self.average = WeightAverage(self.model, self.recipe.ema_decay) if self.recipe.ema_decay else None
        self.epoch_timing: dict[str, float] = {}  # of the last train_epoch
        self.class_weight = None
        if self.config.balance == "weights" and self.train_selection.target.ndim == 1:
            counts = np.bincount(self.train_selection.hard_target, minlength=len(self.class_names))
            weight = counts.sum() / np.maximum(counts, 1) / len(self.class_names)
            self.class_weight = torch.tensor(weight, dtype=torch.float32, device=self.device)
        # FERPlus's probability scheme: a one-hot label drawn from each soft target as it is trained on
        self.draw_labels = self.view.provenance.label_set(self.train_selection.label_set).draw
        self.train_batches = self.batches(self.train_selection, shuffle=True)
        validation = self.protocol.validation
        # read once, scored every epoch
        self.validation_batches = None if validation is None else self.batches(validation, shuffle=False)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []  # log.jsonl's records
        self.best: dict[str, Any] = {"epoch": 0, "accuracy": -1.0}  # the selected epoch
        self._loaders: dict[int, Iterable[Batch]] = {}

    def batches(self, selection: Selection, shuffle: bool) -> StoreBatches:
        return StoreBatches(
            self.config.store,
            selection,
            self.fields,
            self.schedule.batch_size,
            shuffle=shuffle,
            seed=self.config.seed,
            drop_last=shuffle and (len(selection) > self.schedule.batch_size or self.ranks.distributed),
            in_memory=self.config.in_memory,
            rank=self.ranks.rank,
            ranks=self.ranks.size,
        )

    def _loader(self, batches: StoreBatches) -> Iterable[Batch]:
        """The loader of ``batches``. The train and validation batches, read every epoch, keep
        one loader whose worker processes (``--workers``) serve every epoch; held in memory, they
        are held on the device where they fit (``device_data``), batched there."""
        if batches.in_memory and self.config.device_data == "auto":
            if id(batches) in self._loaders:
                return self._loaders[id(batches)]
            if fits_on(self.device, selection_bytes(batches)):
                device_batches = DeviceBatches(batches, self.device)
                if batches is self.train_batches or batches is self.validation_batches:
                    self._loaders[id(batches)] = device_batches
                return device_batches
        workers = 0 if batches.in_memory else self.config.workers
        if batches is not self.train_batches and batches is not self.validation_batches:
            return make_loader(batches, num_workers=workers, pin_memory=self.cuda)
        if id(batches) not in self._loaders:
            self._loaders[id(batches)] = make_loader(batches, workers, pin_memory=self.cuda, persistent=True)
        return self._loaders[id(batches)]

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.cuda else contextlib.nullcontext()

    def _input(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.cuda:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
        return batch

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the train split; returns the mean loss (``loss``) and, for a model with
        terms of its own, each term's mean beside the classification loss.

        The sums stay on the device until the epoch ends: no step waits for the GPU to finish, so
        the loader reads the next batch while the GPU computes. :attr:`epoch_timing` then holds
        the epoch's ``steps``, ``training_seconds`` (the pass, until the GPU finished) and
        ``data_wait_seconds`` (of those, the time the loop waited for the loader's next batch)."""
        torch.manual_seed(self.config.seed * 1_000_003 + epoch)  # dropout and friends
        augment_generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        draw_generator = torch.Generator(self.device).manual_seed(self.config.seed * 1_000_003 + epoch)
        augment = (
            AugmentConfig(crop_area=self.config.resized_crop, erase=self.config.random_erasing)
            if self.config.augment
            else None
        )
        self.train_batches.set_epoch(epoch)
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        seen = waited = 0.0
        steps = len(self.train_batches)
        began = time.perf_counter()
        with self.progress.bar(f"epoch {epoch}/{self.schedule.epochs}", steps) as advance:
            batches = iter(self._loader(self.train_batches))
            for i in itertools.count():
                asked = time.perf_counter()
                batch = next(batches, None)
                waited += time.perf_counter() - asked
                if batch is None:
                    break
                self._set_lr((epoch - 1) * steps + i, steps)
                batch = prepare_batch(batch, self.device)
                if augment is not None:
                    batch = augment_batch(batch, augment, self.view.permutations, augment_generator)
                if self.draw_labels:
                    batch["target"] = torch.multinomial(batch["target"], 1, generator=draw_generator)[:, 0]
                terms = self.train_step(batch)
                n = len(batch["target"])
                for name, term in terms.items():
                    sums[name] = sums.get(name, 0) + term.double() * n
                seen += n
                advance(1)
        for value in sums.values():
            sum_across(value)
        seen = float(sum_across(torch.tensor(seen, dtype=torch.float64, device=self.device)))
        means = {name: value.item() / max(seen, 1) for name, value in sums.items()}  # waits for the GPU
        self.epoch_timing = {
            "steps": i,
            "training_seconds": round(time.perf_counter() - began, 3),
            "data_wait_seconds": round(waited, 3),
        }
        return means

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One optimizer step on a batch already on the device (:func:`prepare_batch`, augmented).

        Returns:
            ``loss`` (the total) and, for a model with terms of its own, each term beside
            ``classification``: detached 0-d tensors on the device (reading them waits for the GPU).
        """
        with self._autocast():
            output = self.trained_model(self._input(batch))
            classification = classification_loss(
                output["logits"], batch["target"], self.class_weight, self.recipe.label_smoothing
            )
            terms = {"classification": classification, **output.get("losses", {})}  # a model's own terms
            loss = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.recipe.clip_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.average is not None:
            self.average.update()
        detached = {"loss": loss.detach()}
        if len(terms) > 1:
            detached.update((name, term.detach()) for name, term in terms.items())
        return detached

    def _set_lr(self, step: int, steps_per_epoch: int) -> None:
        """The recipe's learning rate at optimiser step ``step`` of the run (0-based)."""
        lr = self.recipe.lr * self.recipe.lr_factor(step, steps_per_epoch, self.schedule.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    @property
    def evaluated_model(self) -> torch.nn.Module:
        """What is validated, selected and tested: the weight average where the recipe keeps one."""
        return self.model if self.average is None else self.average.model

    def evaluate(self, batches: StoreBatches) -> Scores:
        """Loss, accuracy, macro-F1, confusion matrix and predictions of :attr:`evaluated_model` on
        ``batches`` (hard labels: the most voted class of a soft target); see :func:`evaluate_model`."""
        scores = evaluate_model(
            self.evaluated_model, self._loader(batches), self.device, len(self.class_names), self._autocast, self._input
        )
        return scores if not self.ranks.distributed else Scores.combined(gathered(scores))

    def checkpoint(self) -> Checkpoint:
        """The run as it stands after :attr:`epoch`."""
        return Checkpoint(
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            average=None if self.average is None else self.average.model.state_dict(),
            epoch=self.epoch,
            history=self.history,
            best=self.best,
            config=dataclasses.asdict(self.config),
            class_names=list(self.class_names),
            label_set=self.train_selection.label_set,
            store={
                "location": self.config.store,
                **{key: getattr(self.view.provenance, key) for key in ("dataset", "config_sha256", "manifest_sha256")},
                # What prediction rebuilds the store's chain from (fer-predict), without the store.
                "preprocessing": self.view.provenance.config,
                "models": self.view.provenance.models,
                "versions": self.view.provenance.versions,
                "image_shape": list(self.view.image_shape),
                "guidance_size": self.view.guidance_size,
                "crop_framing": None if self.view.crop_framing is None else self.view.crop_framing.to_dict(),
            },
            initial_weights=self.initial_weights,
        )

    def restore(self, checkpoint: Checkpoint, path: str | Path = "the checkpoint") -> None:
        """Continue from ``checkpoint`` (read from ``path``, named in errors).

        Raises:
            ConfigError: its weights or optimizer state do not fit this run's model.
        """
        load_weights(self.model, checkpoint.model, path)
        if self.average is not None:
            if checkpoint.average is None:
                raise ConfigError(f"{path} holds no weight average, which this run's recipe (ema_decay) keeps")
            load_weights(self.average.model, checkpoint.average, path)
        try:
            self.optimizer.load_state_dict(checkpoint.optimizer)
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"the optimizer state in {path} does not fit this run's model ({error})") from None
        self.epoch, self.history, self.best = checkpoint.epoch, checkpoint.history, checkpoint.best
        self.initial_weights = checkpoint.initial_weights or {}


Batch = dict[str, torch.Tensor]


def evaluate_model(
    model: torch.nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    num_classes: int,
    autocast: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
    to_input: Callable[[Batch], Batch] = lambda batch: batch,
) -> Scores:
    """Score ``model`` over ``loader`` (batches of ``image``, the fields the model names,
    ``target``: ``(B,)`` class indices or ``(B, K)`` distributions, ``index``: ``(B,)`` store
    indices); the predictions are in loader order."""
    model.eval()
    predicted, confidence, truth, index, loss_sum = [], [], [], [], 0.0
    with torch.no_grad():
        for batch in loader:
            if len(batch["target"]) == 0:
                continue  # a process's empty share of a last batch smaller than the processes
            batch = prepare_batch(batch, device)
            with autocast():
                logits = model(to_input(batch))["logits"]
            loss_sum += classification_loss(logits, batch["target"], None).item() * len(batch["target"])
            target = batch["target"] if batch["target"].dim() == 1 else batch["target"].argmax(1)
            probability, predicted_class = logits.float().softmax(1).max(1)
            predicted.append(predicted_class.cpu())
            confidence.append(probability.cpu())
            truth.append(target.cpu())
            index.append(batch["index"].cpu())
    truth_all, predicted_all = torch.cat(truth).numpy(), torch.cat(predicted).numpy()
    confusion = confusion_matrix(truth_all, predicted_all, num_classes)
    return Scores(
        loss=loss_sum / max(len(truth_all), 1),
        confusion=confusion,
        predictions=Predictions(torch.cat(index).numpy(), truth_all, predicted_all, torch.cat(confidence).numpy()),
    )
