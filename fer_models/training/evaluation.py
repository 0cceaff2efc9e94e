"""Scoring a checkpoint on a store, refusing samples its run trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_models.data.selection import Selection, SubjectFolds, select_samples
from fer_models.data.stream import StoreBatches, make_loader
from fer_models.training.checkpoint import Checkpoint, finite_checkpoint, load_weights
from fer_models.training.config import TrainConfig
from fer_models.training.confusion_png import write_confusion_png
from fer_models.training.engine import evaluate_model, resolve_device
from fer_models.training.metrics import ScoreFigures
from fer_models.training.protocol import Protocol, resolve_protocol, train_split_name
from fer_models.training.run_directory import strict_json
from fer_models.training.store_view import StoreView, build_model, model_fields
from pipeline.errors import ConfigError


class Evaluation(ScoreFigures):
    """What :func:`evaluate_checkpoint` scored and found (``metrics.json``; fer-eval prints it)."""

    checkpoint: str  # the checkpoint's path as given
    store: str
    scored: str  # the split or fold scored
    samples: int
    model: str
    label_set: str
    epoch: int  # the checkpoint's epoch
    same_preprocessing: bool  # the store's config hash is the checkpoint's store's
    same_rows: bool  # the store's manifest is the checkpoint's store's
    trained_samples_scored: int | None  # None: another store's rows, so unknown
    validation_samples_scored: int | None


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    store: str,
    split: str | None = None,
    *,
    fold: int | None = None,
    device: str = "auto",
    batch_size: int = 256,
    allow_seen: bool = False,
    out: str | Path | None = None,
) -> Evaluation:
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
        ConfigError: not a checkpoint, weights that are not finite, no such split or fold, trained-on samples without
            ``allow_seen``, or the store lacks what the model reads or the checkpoint's label set.
    """
    checkpoint = finite_checkpoint(checkpoint_path)
    config = TrainConfig(**{**checkpoint.config, "store": store, "device": device})
    view = StoreView.open(store)
    same_rows = view.provenance.manifest_sha256 == checkpoint.store["manifest_sha256"]
    protocol = resolve_protocol(config, store, list(view.provenance.splits)) if same_rows else None
    where = str(checkpoint_path)
    if fold is not None:
        selection, scored = _fold(checkpoint, config, view, fold, where)
    elif split is None:
        if protocol is None:
            raise ConfigError(f"{store} holds other rows than the store {where} was trained from; name a --split")
        if protocol.test is None:
            raise ConfigError(f"the run of {where} had no test samples; name a --split")
        selection, scored = protocol.test, protocol.test_name or "test"
    else:
        selection, scored = select_samples(store, split, checkpoint.label_set, scored=True), split
    if list(selection.class_names) != checkpoint.class_names:
        raise ConfigError(
            f"label set {checkpoint.label_set!r} of {store} has classes {list(selection.class_names)}; "
            f"the checkpoint was trained on {checkpoint.class_names}"
        )
    seen, validated = (None, None) if protocol is None else _held_out(selection, scored, protocol, where, allow_seen)
    torch_device = resolve_device(device)
    model = build_model(config, view, len(selection.class_names), initial_weights=False)
    load_weights(model, checkpoint.average or checkpoint.model, checkpoint_path)  # what the run validated
    model.to(torch_device)
    batches = StoreBatches(store, selection, model_fields(model), batch_size)
    scores = evaluate_model(
        model, make_loader(batches, pin_memory=torch_device.type == "cuda"), torch_device, len(selection.class_names)
    )
    result: Evaluation = {
        "checkpoint": where,
        "store": store,
        "scored": scored,
        "samples": len(selection),
        "model": config.model,
        "label_set": checkpoint.label_set,
        "epoch": checkpoint.epoch,
        "same_preprocessing": view.provenance.config_sha256 == checkpoint.store["config_sha256"],
        "same_rows": same_rows,
        "trained_samples_scored": seen,
        "validation_samples_scored": validated,
        **scores.to_dict(),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        title = f"{config.model} epoch {checkpoint.epoch}, {scored}"
        write_confusion_png(scores.confusion, selection.class_names, out / "confusion.png", title=title)
        (out / "metrics.json").write_text(strict_json(result, indent=2))
    return result


def _fold(checkpoint: Checkpoint, config: TrainConfig, view: StoreView, fold: int, where: str) -> tuple[Selection, str]:
    """Subject fold ``fold`` of the fold run that wrote ``checkpoint`` (read from ``where``)."""
    if not config.folds:
        raise ConfigError(f"--fold: {where} is not from a fold run (fer-train --folds K); use --split")
    if not 0 <= fold < config.folds:
        raise ConfigError(f"--fold must be between 0 and {config.folds - 1} for this {config.folds}-fold checkpoint")
    train_split = train_split_name(config, list(view.provenance.splits))
    folds = SubjectFolds.only(config.folds, fold)
    return select_samples(view.path, train_split, checkpoint.label_set, folds, scored=True), f"fold{fold}"


def _held_out(selection: Selection, scored: str, protocol: Protocol, where: str, allow_seen: bool) -> tuple[int, int]:
    """How many of ``selection``'s samples the run trained on and chose its epoch on; refuses the
    first without ``allow_seen``."""
    seen = int(np.isin(selection.index, protocol.train.index).sum())
    validated = 0 if protocol.validation is None else int(np.isin(selection.index, protocol.validation.index).sum())
    if seen and not allow_seen:
        raise ConfigError(
            f"{seen} of the {len(selection)} samples of {scored} were trained on by {where} "
            f"(its run trained on {protocol.train_name}); its figure would say nothing about unseen faces. "
            f"Score what the run held out: leave out --split/--fold ({protocol.test_name or 'no test samples'}), "
            "or pass --allow-seen to score them anyway"
        )
    return seen, validated
