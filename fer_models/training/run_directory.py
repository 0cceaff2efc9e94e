"""Training runs: a run directory from a configuration, resumable, with what selected each figure.

Which samples train, which choose the epoch and which are reported is the run's protocol
(:mod:`fer_models.training.protocol`): the test samples are read once, after the last epoch.

A run directory holds ``config.json`` (the resolved configuration), ``log.jsonl`` (one line per
epoch: train loss, validation loss, accuracy, macro-F1, the training pass's steps, seconds and
wait for the loader, seconds since the run began), ``last.pt`` and ``best.pt``
(the last and the selected epoch's checkpoints, carrying the configuration, the class names and
the store's provenance hashes; they load with ``torch.load(..., weights_only=True)``), and, when
the run has test samples, ``confusion.png``, ``test_predictions.csv`` (store index, target,
predicted class and its softmax probability of each test sample at the selected epoch) and ``summary.json`` (what selected the
epoch; test figures at the selected and at the last epoch).

Every random draw of an epoch (shuffle order, augmentation, dropout) is seeded from
``(seed, epoch)``, and the run sets its number of CPU threads (``threads``, recorded) and torch's
deterministic algorithms, so on the CPU a run is bit-identical to another with the same
configuration on the same torch build, and a run resumed from ``last.pt`` ends exactly where an
uninterrupted one ends. CUDA kernels are not all deterministic.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from fer_models.training.checkpoint import (
    RESUME_MAY_CHANGE,
    Checkpoint,
    load_checkpoint,
    options_differing,
    save_checkpoint,
)
from fer_models.training.config import TrainConfig, recorded_config
from fer_models.training.confusion_png import write_confusion_png
from fer_models.training.distributed import Ranks, barrier, finish
from fer_models.training.distributed import backend as process_backend
from fer_models.training.engine import Trainer, reproducible_torch
from fer_models.training.run_summary import RunSummary, TestFigures
from pipeline.errors import ConfigError, TrainingDivergedError
from pipeline.progress import QUIET, Progress


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False, progress: Progress = QUIET) -> RunSummary:
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
        TrainingDivergedError: the loss or the weights stopped being finite (the last good
            epoch's checkpoints are kept).
        CheckpointSaveError: a checkpoint could not be written (the previous one is kept).
    """
    out = Path(out_dir)
    last = out / "last.pt"
    if last.exists() and not resume:
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    checkpoint = load_checkpoint(last) if resume and last.exists() else None
    if resume and checkpoint is None and out.exists():
        progress.line(f"{out} holds no complete checkpoint (last.pt) yet: starting at epoch 1")
    if checkpoint is not None:
        config = config.continuing(checkpoint.config)
    if not Ranks.from_environment().main:
        progress = QUIET  # one process (rank 0) reports and writes
    try:
        with reproducible_torch(config.schedule().threads):
            return _train(config, out, checkpoint, progress)
    finally:
        finish()


def _train(config: TrainConfig, out: Path, checkpoint: Checkpoint | None, progress: Progress) -> RunSummary:
    trainer = Trainer(config, progress, resuming=checkpoint is not None)
    last, best = out / "last.pt", out / "best.pt"
    if checkpoint is not None:
        differ = options_differing(checkpoint, trainer.config)
        if differ:
            may_change = " and ".join(f"--{name.replace('_', '-')}" for name in RESUME_MAY_CHANGE)
            raise ConfigError(
                f"--resume needs the run's own options; these differ from {last}: {'; '.join(differ)} "
                f"(a resume may change only {may_change}; leave the others out to keep the run's)"
            )
        trainer.restore(checkpoint, last)
        if trainer.epoch >= trainer.schedule.epochs and (out / "summary.json").exists():
            progress.line(
                f"{out} finished its {trainer.epoch} epochs; nothing to do (--resume --epochs N, N > {trainer.epoch}, "
                "trains it on)"
            )
            return RunSummary.from_dict(json.loads((out / "summary.json").read_text()), str(out / "summary.json"))
        progress.line(f"resuming {out} after epoch {trainer.epoch}")
    protocol = trainer.protocol
    if trainer.epoch == 0:
        progress.line(
            f"train {protocol.train_name} ({len(protocol.train)} samples); epoch chosen by {protocol.selected_by}; "
            + (
                f"reported on {protocol.test_name} ({len(protocol.test)} samples) after the last epoch"
                if protocol.test is not None
                else "no test samples: nothing is reported"
            )
        )
        if protocol.validation is None:
            progress.line(
                "no validation data: the last epoch is reported (--val-fraction F holds out part of the "
                "training samples to choose the epoch on)"
            )
        elif len(protocol.validation) < FEW_VALIDATION_SAMPLES:
            progress.line(
                f"warning: {len(protocol.validation)} validation samples choose the epoch; one sample moves their "
                f"accuracy by {100 / len(protocol.validation):.0f} points, so the choice is mostly chance "
                "(a larger validation split, or --val-fraction, chooses better)"
            )
    writes = trainer.ranks.main
    # config.json is the run's configuration: written when it starts, and again only when a resume
    # extends it (--epochs, the one setting a resume may change beside the device).
    extended = checkpoint is not None and trainer.schedule.epochs != recorded_config(checkpoint.config)["epochs"]
    if writes and (checkpoint is None or extended):
        out.mkdir(parents=True, exist_ok=True)
        processes = {"world_size": trainer.ranks.size, "backend": process_backend()}  # where it trains, beside what
        (out / "config.json").write_text(
            json.dumps({**dataclasses.asdict(trainer.config), "processes": processes}, indent=2)
        )
        if extended:
            progress.line(f"{out}: extended to {trainer.schedule.epochs} epochs (config.json says so)")
    began = time.perf_counter() - (trainer.history[-1]["seconds"] if trainer.history else 0.0)
    for epoch in range(trainer.epoch + 1, trainer.schedule.epochs + 1):
        train_losses = trainer.train_epoch(epoch)
        _stop_if_diverged(trainer, epoch, train_losses, out)
        trainer.epoch = epoch
        record = {
            "epoch": epoch,
            "train_loss": round(train_losses["loss"], 6),
            **{f"train_{name}": round(value, 6) for name, value in train_losses.items() if name != "loss"},
            **trainer.epoch_timing,
        }
        if trainer.validation_batches is None:
            improved = True  # the last epoch is the selected one
        else:
            scores = trainer.evaluate(trainer.validation_batches)
            record.update(
                validation_loss=round(scores.loss, 6),
                validation_accuracy=scores.accuracy,
                validation_macro_f1=scores.macro_f1,
            )
            improved = scores.accuracy > trainer.best["accuracy"]
        record["seconds"] = round(time.perf_counter() - began, 2)
        trainer.history.append(record)
        if improved:
            trainer.best = {"epoch": epoch, "accuracy": record.get("validation_accuracy")}
        if writes:
            epoch_checkpoint = trainer.checkpoint()
            if improved:
                save_checkpoint(epoch_checkpoint, best)
            save_checkpoint(epoch_checkpoint, last)
            (out / "log.jsonl").write_text("".join(strict_json(r) + "\n" for r in trainer.history))
        progress.line(epoch_line(record, trainer.schedule.epochs))
    return _report(trainer, out)


FEW_VALIDATION_SAMPLES = 100  # fewer choose an epoch mostly by chance: one sample is a point or more


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One readable line of an epoch's ``log.jsonl`` record (which keeps every figure)."""
    terms = [
        f"{name.removeprefix('train_')} {value:.4f}"
        for name, value in record.items()
        if name.startswith("train_") and name != "train_loss"
    ]
    line = f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f}"
    line += f" ({', '.join(terms)})" if terms else ""
    if "validation_accuracy" in record:
        line += f"; validation accuracy {100 * record['validation_accuracy']:.2f}%, macro-F1 {100 * record['validation_macro_f1']:.2f}%"
    return line + f"; {record['seconds']:.0f} s"


def _stop_if_diverged(trainer: Trainer, epoch: int, train_losses: dict[str, float], out: Path) -> None:
    """Raise before epoch ``epoch`` is recorded or saved if its loss or the weights are not finite.

    Raises:
        TrainingDivergedError: saying what was kept and what to change.
    """
    loss = train_losses["loss"]
    weights_finite = all(bool(torch.isfinite(values).all()) for values in trainer.model.state_dict().values())
    if math.isfinite(loss) and weights_finite:
        return
    what = f"the training loss is {loss}" if not math.isfinite(loss) else "the weights are no longer finite"
    kept = (
        f"{out / 'last.pt'} holds epoch {trainer.epoch}, the last good one (best.pt: epoch {trainer.best['epoch']})"
        if trainer.epoch
        else "no epoch finished, so no checkpoint was written"
    )
    raise TrainingDivergedError(
        f"epoch {epoch}: {what}: the run diverged and stopped; {kept}. Lower --lr (it is {trainer.schedule.lr:g}) "
        "and train again into a new --out (or start from the kept weights with --init last.pt)"
    )


def strict_json(value: Any, indent: int | None = None) -> str:
    """JSON that strict parsers accept: NaN and infinities become null."""

    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(entry) for key, entry in item.items()}
        if isinstance(item, list | tuple):
            return [finite(entry) for entry in item]
        return item

    return json.dumps(finite(value), indent=indent, allow_nan=False)


def _report(trainer: Trainer, out: Path) -> RunSummary:
    """Score the test samples at the last epoch (the model as trained) and at the selected one
    (``best.pt``), write ``summary.json``, ``confusion.png`` and ``test_predictions.csv``."""
    protocol = trainer.protocol
    selected_epoch = trainer.best["epoch"]
    seconds = trainer.history[-1]["seconds"] if trainer.history else 0.0  # restoring best.pt rewinds the history
    test = None
    if protocol.test is not None:
        test_batches = trainer.batches(protocol.test, shuffle=False)
        last_scores = trainer.evaluate(test_batches)  # the model is at the last epoch
        if selected_epoch != trainer.epoch:
            barrier()  # rank 0 wrote best.pt
            trainer.restore(load_checkpoint(out / "best.pt"), out / "best.pt")
            scores = trainer.evaluate(test_batches)
        else:
            scores = last_scores
        test = TestFigures(
            scores.accuracy, scores.macro_f1, scores.confusion.tolist(), last_scores.accuracy, last_scores.macro_f1
        )
        if trainer.ranks.main:
            write_confusion_png(
                scores.confusion,
                trainer.class_names,
                out / "confusion.png",
                title=f"{trainer.config.model}, epoch {selected_epoch}, {protocol.test_name}",
            )
            scores.predictions.write_csv(out / "test_predictions.csv")
    summary = RunSummary(
        model=trainer.config.model,
        options=trainer.config.options,
        labels=list(trainer.class_names),
        label_set=trainer.train_selection.label_set,
        device=str(trainer.device),
        threads=trainer.schedule.threads,
        epochs=trainer.schedule.epochs,
        train_split=protocol.train_name,
        train_samples=len(protocol.train),
        validation_split=protocol.validation_name,
        validation_samples=0 if protocol.validation is None else len(protocol.validation),
        selected_by=protocol.selected_by,
        selected_epoch=selected_epoch,
        selected_validation_accuracy=trainer.best["accuracy"],
        test_split=protocol.test_name,
        test_samples=0 if protocol.test is None else len(protocol.test),
        test=test,
        seconds=seconds,
        initial_weights=trainer.initial_weights,
        balance=str(trainer.config.balance),
        world_size=trainer.ranks.size,
        backend=process_backend(),
    )
    if trainer.ranks.main:
        (out / "summary.json").write_text(strict_json(summary.to_dict(), indent=2))
    return summary
