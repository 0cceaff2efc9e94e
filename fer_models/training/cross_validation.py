"""Every fold of a subject-independent k-fold protocol, and the table of their test figures.

``OUT/fold<I>/`` is fold I's run directory, exactly what ``fer-train --folds K --fold I --out
OUT/fold<I>`` writes; a fold already finished is read back, an interrupted one resumed, so the
whole command can be run again after a kill. The table (``folds.md`` and ``folds.json``) gives per
fold and pooled over all test predictions the accuracy and macro-F1 at the selected epoch (and the
last epoch's accuracy beside it), the mean and standard deviation over folds, and the commands;
``confusion.png`` is the confusion matrix of the pooled predictions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np

from fer_models.training.checkpoint import load_checkpoint, options_differing
from fer_models.training.config import TrainConfig
from fer_models.training.confusion_png import write_confusion_png
from fer_models.training.distributed import Ranks
from fer_models.training.metrics import accuracy, confusion_matrix, macro_f1
from fer_models.training.run_directory import strict_json, train
from fer_models.training.run_summary import RunSummary
from pipeline.errors import ConfigError
from pipeline.progress import QUIET, Progress
from pipeline.run_predictions import Predictions


class FoldRow(TypedDict):
    """One fold's run in :class:`FoldTable`: its sample counts, selected epoch and test figures
    (fractions)."""

    fold: int
    train_samples: int
    validation_split: str | None  # None: no validation data, the last epoch reported
    validation_samples: int
    test_samples: int
    selected_epoch: int
    accuracy: float
    macro_f1: float
    last_epoch_accuracy: float


class FoldFigures(TypedDict):
    """The mean (or the standard deviation) over folds of each figure, fractions."""

    accuracy: float
    macro_f1: float
    last_epoch_accuracy: float


class PooledFigures(TypedDict):
    """Every fold's test predictions scored as one set."""

    samples: int
    accuracy: float
    macro_f1: float
    confusion: list[list[int]]  # (K, K), rows true classes


class FoldTable(TypedDict):
    """Every fold of a subject-independent split (``folds.json``; ``folds.md`` shows it)."""

    model: str
    options: dict[str, Any]
    labels: list[str]
    epochs: int
    selected_by: list[str]  # per fold: what chose its epoch
    folds: list[FoldRow]
    mean: FoldFigures
    std: FoldFigures  # sample standard deviation over folds (ddof 1); 0 for one fold
    pooled: PooledFigures
    commands: NotRequired[list[str]]  # the whole run's command line, then each fold's alone


def train_all_folds(
    config: TrainConfig, out_dir: str | Path, *, commands: list[str] | None = None, progress: Progress = QUIET
) -> FoldTable:
    """Train fold 0 to K-1 of ``config.folds`` into ``out_dir/fold<I>`` and write the table.

    Args:
        config: a fold configuration (``folds`` >= 3, or >= 2 with ``val_fraction``); its ``fold``
            is ignored.
        commands: the command lines to record in the table (the whole run first, then one per
            fold), or None.

    Returns:
        The table (also written to ``folds.json``).

    Raises:
        ConfigError: no folds asked for, a fold directory holding a run with other options, or
            several processes (torchrun): each fold is then its own ``fer-train --fold I`` run.
    """
    if not config.folds:
        raise ConfigError("--all-folds needs --folds K")
    if Ranks.from_environment().distributed:
        raise ConfigError("--all-folds runs in one process; under torchrun, train each fold with --fold I")
    out = Path(out_dir)
    config = config.resolved()
    summaries: list[RunSummary] = []
    for fold in range(config.folds):
        fold_config = dataclasses.replace(config, fold=fold)
        fold_dir = out / f"fold{fold}"
        summary = finished_run(fold_dir, fold_config)
        if summary is None:
            progress.line(f"fold {fold} of {config.folds} -> {fold_dir}")
            summary = train(fold_config, fold_dir, resume=(fold_dir / "last.pt").exists(), progress=progress)
        else:
            progress.line(f"fold {fold} of {config.folds}: finished earlier in {fold_dir}")
        summaries.append(summary)
    table = fold_table(
        summaries, [Predictions.read_csv(out / f"fold{i}" / "test_predictions.csv") for i in range(config.folds)]
    )
    table["commands"] = commands or []
    (out / "folds.json").write_text(strict_json(table, indent=2))
    (out / "folds.md").write_text(fold_table_markdown(table))
    write_confusion_png(
        np.array(table["pooled"]["confusion"]),
        table["labels"],
        out / "confusion.png",
        title=f"{config.model}, {config.folds} folds pooled",
    )
    return table


def finished_run(run_dir: Path, config: TrainConfig) -> RunSummary | None:
    """The summary of a run in ``run_dir`` that trained ``config`` to its last epoch and reported,
    else None (not started, interrupted, or another ``epochs``).

    Raises:
        ConfigError: ``run_dir`` holds a run with other options.
    """
    last, summary = run_dir / "last.pt", run_dir / "summary.json"
    if not last.exists():
        return None
    checkpoint = load_checkpoint(last)
    config = config.continuing(checkpoint.config).resolved()  # settings left None are the run's
    differ = options_differing(checkpoint, config)
    if differ:
        raise ConfigError(f"{run_dir} holds a run with other options ({'; '.join(differ)}); choose another --out")
    if checkpoint.epoch != config.schedule().epochs or not summary.exists():
        return None
    return RunSummary.from_dict(json.loads(summary.read_text()), str(summary))


def fold_table(summaries: list[RunSummary], predictions: list[Predictions]) -> FoldTable:
    """Per-fold and pooled test figures of fold runs.

    Args:
        summaries: each fold's ``summary.json``, in fold order.
        predictions: each fold's test predictions (``test_predictions.csv``).

    Returns:
        The table, without ``commands``.
    """
    labels = summaries[0].labels
    rows: list[FoldRow] = []
    for i, s in enumerate(summaries):
        if s.test is None:
            raise ConfigError(f"fold {i}'s run has no test samples; its run directory is not a fold run's")
        rows.append(
            {
                "fold": i,
                "train_samples": s.train_samples,
                "validation_split": s.validation_split,
                "validation_samples": s.validation_samples,
                "test_samples": s.test_samples,
                "selected_epoch": s.selected_epoch,
                "accuracy": s.test.accuracy,
                "macro_f1": s.test.macro_f1,
                "last_epoch_accuracy": s.test.last_epoch_accuracy,
            }
        )
    target = np.concatenate([p.target for p in predictions])
    predicted = np.concatenate([p.predicted for p in predictions])
    confusion = confusion_matrix(target, predicted, len(labels))
    return {
        "model": summaries[0].model,
        "options": summaries[0].options,
        "labels": labels,
        "epochs": summaries[0].epochs,
        "selected_by": [s.selected_by for s in summaries],
        "folds": rows,
        "mean": _over_folds(rows, np.mean),
        "std": _over_folds(rows, lambda values: np.std(values, ddof=1) if len(values) > 1 else 0.0),
        "pooled": {
            "samples": int(len(target)),
            "accuracy": accuracy(confusion),
            "macro_f1": macro_f1(confusion),
            "confusion": confusion.tolist(),
        },
    }


def _over_folds(rows: list[FoldRow], statistic: Callable[[list[float]], Any]) -> FoldFigures:
    """``statistic`` of each figure over the folds' rows."""
    return {
        "accuracy": float(statistic([row["accuracy"] for row in rows])),
        "macro_f1": float(statistic([row["macro_f1"] for row in rows])),
        "last_epoch_accuracy": float(statistic([row["last_epoch_accuracy"] for row in rows])),
    }


def fold_table_markdown(table: FoldTable) -> str:
    """The table of :func:`fold_table` as Markdown (percentages, two decimals)."""

    def pct(value: float) -> str:
        return f"{100 * value:.2f}"

    lines = [
        f"# {table['model']}{' ' + json.dumps(table['options']) if table['options'] else ''}, {len(table['folds'])} "
        f"subject folds, {table['epochs']} epochs",
        "",
        "Each fold's epoch is chosen on its validation samples, never on its test fold; the test fold "
        "is scored once, at the end. Accuracy and macro-F1 in %.",
        "",
        "| fold | train | validation | test | selected epoch | accuracy | macro-F1 | last-epoch accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table["folds"]:
        validation = f"{row['validation_split']} ({row['validation_samples']})" if row["validation_split"] else "none"
        lines.append(
            f"| {row['fold']} | {row['train_samples']} | {validation} | {row['test_samples']} | "
            f"{row['selected_epoch']} | {pct(row['accuracy'])} | {pct(row['macro_f1'])} | "
            f"{pct(row['last_epoch_accuracy'])} |"
        )
    mean, std, pooled = table["mean"], table["std"], table["pooled"]
    lines += [
        f"| mean ± std | | | | | {pct(mean['accuracy'])} ± {pct(std['accuracy'])} | "
        f"{pct(mean['macro_f1'])} ± {pct(std['macro_f1'])} | {pct(mean['last_epoch_accuracy'])} ± "
        f"{pct(std['last_epoch_accuracy'])} |",
        f"| pooled ({pooled['samples']} test predictions) | | | | | {pct(pooled['accuracy'])} | "
        f"{pct(pooled['macro_f1'])} | |",
        "",
        "Epoch selection: "
        + (
            "the best validation accuracy on the validation column's samples"
            if table["folds"][0]["validation_split"]
            else "the last epoch (no validation data)"
        )
        + ".",
        "Pooled confusion matrix: confusion.png.",
    ]
    if table.get("commands"):
        lines += ["", "Commands:", "", "```sh", *table.get("commands", []), "```"]
    return "\n".join(lines) + "\n"
