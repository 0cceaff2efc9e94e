"""``fer-train`` and ``fer-eval``: train a registered model from a guidance store, score a checkpoint."""

from __future__ import annotations

import dataclasses
import inspect
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from cli.errors import user_errors
from cli.progress import ConsoleProgress
from fer_models.models.registry import get_model_entry, list_models
from fer_models.training.config import BALANCES, TrainConfig
from fer_models.training.cross_validation import train_all_folds
from fer_models.training.distributed import Ranks
from fer_models.training.evaluation import evaluate_checkpoint
from fer_models.training.recipe import OPTIMIZERS, RECIPES, SCHEDULES
from fer_models.training.run_directory import train
from pipeline.errors import ConfigError

# The options' defaults are the library's: TrainConfig's fields and evaluate_checkpoint's keywords.
DEFAULT = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
EVAL_DEFAULT = {name: p.default for name, p in inspect.signature(evaluate_checkpoint).parameters.items()}


Command = TypeVar("Command", bound=Callable[..., object])
# --in-memory's words as TrainConfig.in_memory takes them.
IN_MEMORY: dict[str, bool | str] = {"auto": "auto", "yes": True, "no": False}


def recipe_options(command: Command) -> Command:
    """The recipe preset and the options overriding single settings of it (None: the recipe's)."""
    presets = "; ".join(
        f"{name}: {recipe.optimizer} lr {recipe.lr:g}, {recipe.lr_schedule}"
        + (f", weight decay {recipe.weight_decay:g}" if recipe.weight_decay else "")
        + (f", label smoothing {recipe.label_smoothing:g}" if recipe.label_smoothing else "")
        for name, recipe in RECIPES.items()
    )
    options = [
        click.option("--recipe", type=click.Choice(list(RECIPES)), help=f"Training recipe: {presets}. [the model's]"),
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), help="[the recipe's]"),
        click.option("--momentum", type=float, help="SGD's Nesterov momentum. [the recipe's]"),
        click.option("--weight-decay", type=float, help="On weights only, not biases or norms. [the recipe's]"),
        click.option("--lr-schedule", type=click.Choice(SCHEDULES), help="[the recipe's]"),
        click.option(
            "--warmup-epochs", type=float, help="Linear warmup before a constant or cosine schedule. [the recipe's]"
        ),
        click.option("--label-smoothing", type=float, help="[the recipe's]"),
        click.option("--clip-grad-norm", type=float, help="Largest gradient norm; 0: none. [the recipe's]"),
        click.option(
            "--ema-decay",
            type=float,
            help="Validate, select and test an average of the weights; 0: none. [the recipe's]",
        ),
        click.option(
            "--backbone-lr-scale",
            type=float,
            help="The pretrained backbone's learning rate as a share of the head's. [the recipe's]",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def parse_options(model: str, pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("guidance=saliency", "dropout=0.3")`` -> typed keyword arguments of ``model``, each
    converted to the type of the option's default."""
    defaults = get_model_entry(model).options()
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in defaults:
            known = ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "none"
            raise ConfigError(f"--option {pair!r}: model {model!r} takes KEY=VALUE with KEY among: {known}")
        default = defaults[key]
        try:
            value: object
            if isinstance(default, bool):
                value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}[text.lower()]
            else:
                value = type(default)(text) if default is not None else text
        except (ValueError, KeyError):
            raise ConfigError(f"--option {pair!r}: {key} takes a {type(default).__name__}") from None
        options[key] = value
    return options


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--store", required=True, help="Guidance store built by fer-preprocess.")
@click.option("--model", type=click.Choice(list_models()), default=DEFAULT["model"])
@click.option(
    "--option",
    "model_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A model option, repeatable (e.g. guided-stn: guidance=saliency; resnet18, pal, keypoint, feratt: "
    "backbone=convnext_nano, any timm model, and backbone_weights=FILE; see docs/training.md).",
)
@click.option(
    "--labels",
    help="Label set recorded in the store (7, 8, polarity, votes, ...; see fer-store info). [the store's first]",
)
@click.option("--epochs", type=int, help="[the model's default]")
@click.option("--batch-size", type=int, help="[the model's default]")
@click.option("--lr", type=float, help="Peak learning rate. [the recipe's]")
@recipe_options
@click.option("--seed", type=int, default=DEFAULT["seed"])
@click.option(
    "--device", default=DEFAULT["device"], help="auto (CUDA with mixed precision when present), cpu, cuda or cuda:N."
)
@click.option("--train-split", help="Split trained on. [train, or the store's only split]")
@click.option("--eval-split", help="Validation split: its accuracy picks the epoch. [val, unless it is the test split]")
@click.option("--test-split", help="Split scored once, after the last epoch. [test, else val]")
@click.option(
    "--val-fraction",
    type=float,
    default=DEFAULT["val_fraction"],
    help="Validate on this share of the training subjects (or samples, where the store has no subjects) instead. [off; with --folds: the next fold validates]",
)
@click.option(
    "--folds",
    type=int,
    default=DEFAULT["folds"],
    help="Split the train split into K subject-independent folds (needs subjects, e.g. ckplus). [off]",
)
@click.option(
    "--fold",
    type=int,
    default=DEFAULT["fold"],
    help="With --folds: the fold tested; the next one validates, the others train.",
)
@click.option(
    "--all-folds",
    is_flag=True,
    help="With --folds: run every fold into OUT/fold<I> and write OUT/folds.md, folds.json and the pooled confusion.png (run again to resume).",
)
@click.option(
    "--balance",
    type=click.Choice(BALANCES),
    default=DEFAULT["balance"],
    help="Class-weighted loss, or none. [the dataset's protocol: weights for AffectNet, none for the others]",
)
@click.option(
    "--augment/--no-augment",
    default=DEFAULT["augment"],
    help="Flip, small affine, brightness/contrast; guidance moves with the image.",
)
@click.option(
    "--resized-crop",
    type=float,
    default=DEFAULT["resized_crop"],
    help="With --augment: a random resized crop keeping this share of the area or more (0.5 to 1 for faces). [1: none]",
)
@click.option(
    "--random-erasing",
    type=float,
    default=DEFAULT["random_erasing"],
    help="With --augment: the probability of erasing a rectangle of the image and its guidance maps. [0: none]",
)
@click.option(
    "--workers", type=int, default=DEFAULT["workers"], help="Loader processes when streaming a large store (spawn)."
)
@click.option(
    "--in-memory",
    type=click.Choice(["auto", "yes", "no"]),
    default=DEFAULT["in_memory"],
    help="Hold the selected samples in memory. [auto: up to 2 GiB]",
)
@click.option(
    "--device-data",
    type=click.Choice(["auto", "off"]),
    default=DEFAULT["device_data"],
    help="auto: samples held in memory that fit on the training device are kept there and batched there "
    "(on CUDA, up to half its free memory); off: batches made on the host and copied. [auto]",
)
@click.option(
    "--init",
    type=click.Path(dir_okay=False),
    help="Start from these weights (a state dict or checkpoint; tensors matched by name and shape).",
)
@click.option(
    "--threads",
    type=int,
    help="CPU threads; recorded, since the same seed gives other weights at another thread count. [torch's default]",
)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in OUT from its last.pt, as it was configured (a larger --epochs trains it on).",
)
@click.option("--progress/--no-progress", default=True, help="A progress bar per epoch.")
def main(
    store: str,
    model: str,
    model_options: tuple[str, ...],
    labels: str | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    seed: int,
    device: str,
    train_split: str | None,
    eval_split: str | None,
    test_split: str | None,
    val_fraction: float,
    folds: int,
    fold: int,
    all_folds: bool,
    balance: str | None,
    augment: bool,
    resized_crop: float,
    random_erasing: float,
    workers: int,
    in_memory: str,
    device_data: str,
    init: str | None,
    threads: int | None,
    out: str,
    resume: bool,
    progress: bool,
    **recipe_settings: Any,
) -> None:
    """Train MODEL on the store's usable samples (status ok / ok_prior, known label) without
    recomputing any guidance. The epoch is chosen on validation samples and the test samples are
    scored once, at the end (docs/training.md). OUT gets config.json, log.jsonl, last.pt, best.pt,
    confusion.png, test_predictions.csv and summary.json."""
    with user_errors():
        config = TrainConfig(
            store=store,
            model=model,
            options=parse_options(model, model_options),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            labels=labels,
            train_split=train_split,
            eval_split=eval_split,
            test_split=test_split,
            folds=folds,
            fold=fold,
            val_fraction=val_fraction,
            device=device,
            balance=balance,
            augment=augment,
            resized_crop=resized_crop,
            random_erasing=random_erasing,
            workers=workers,
            in_memory=IN_MEMORY[in_memory],
            device_data=device_data,
            init=init,
            threads=threads,
            **recipe_settings,
        )
        if all_folds:
            table = train_all_folds(
                config,
                out,
                commands=fold_commands(sys.argv, out, folds),
                progress=ConsoleProgress(bars=progress, err=False),
            )
            mean, std, pooled = table["mean"], table["std"], table["pooled"]
            click.echo(
                f"done: {folds} folds, accuracy {mean['accuracy']:.4f} ± {std['accuracy']:.4f} "
                f"(pooled {pooled['accuracy']:.4f}), macro-F1 {mean['macro_f1']:.4f} ± {std['macro_f1']:.4f} "
                f"-> {Path(out) / 'folds.md'}"
            )
            return
        summary = train(config, out, resume=resume, progress=ConsoleProgress(bars=progress, err=False))
    if not Ranks.from_environment().main:
        return  # under torchrun, rank 0 reports
    if summary.test is None:
        click.echo(f"done: epoch {summary.selected_epoch} selected ({summary.selected_by}); no test samples -> {out}")
        return
    click.echo(
        f"done: epoch {summary.selected_epoch} selected ({summary.selected_by}); {summary.test_split} "
        f"accuracy {summary.test.accuracy:.4f}, macro-F1 {summary.test.macro_f1:.4f} "
        f"(last epoch {summary.test.last_epoch_accuracy:.4f}) -> {out}"
    )
    predicted = [name for name, column in zip(summary.labels, zip(*summary.test.confusion)) if sum(column) > 0]
    if len(predicted) == 1:
        click.echo(
            f"note: every test sample was predicted {predicted[0]!r}: after {summary.epochs} epoch(s) the model "
            "has not learnt to tell the classes apart yet (its accuracy is that class's share); train longer"
        )


def fold_commands(argv: list[str], out: str, folds: int) -> list[str]:
    """The command line of an ``--all-folds`` run, then the ``fer-train`` line that runs each fold
    alone into ``OUT/fold<I>`` (the same run directory)."""
    name = Path(argv[0]).name
    args, skip_value = [], False
    for arg in argv[1:]:
        if skip_value or arg in ("--all-folds", "--resume") or arg.startswith(("--out=", "--fold=")):
            skip_value = False
        elif arg in ("--out", "--fold"):
            skip_value = True
        else:
            args.append(arg)
    per_fold = (shlex.join([name, *args, "--fold", str(i), "--out", str(Path(out) / f"fold{i}")]) for i in range(folds))
    return [shlex.join([name, *argv[1:]]), *per_fold]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="best.pt or last.pt of a run.")
@click.option("--store", required=True, help="Guidance store to score on.")
@click.option("--split", help="Split to score. [the samples the run reported: its test split or test fold]")
@click.option("--fold", type=int, help="For a checkpoint of a fold run: score subject fold I of its K folds.")
@click.option("--allow-seen", is_flag=True, help="Score samples the checkpoint was trained on (refused otherwise).")
@click.option("--device", default=DEFAULT["device"])
@click.option("--batch-size", type=int, default=EVAL_DEFAULT["batch_size"])
@click.option("--out", type=click.Path(file_okay=False), help="Directory for metrics.json and confusion.png.")
def evaluate(
    checkpoint: str,
    store: str,
    split: str | None,
    fold: int | None,
    allow_seen: bool,
    device: str,
    batch_size: int,
    out: str | None,
) -> None:
    """Score a checkpoint with its own label set on the samples its run held out for the test (or
    on --split / --fold): accuracy, macro-F1, confusion matrix (JSON on stdout). Samples the
    checkpoint trained on are refused unless --allow-seen."""
    with user_errors():
        if split is not None and fold is not None:
            raise ConfigError("give --split or --fold, not both")
        result = evaluate_checkpoint(
            checkpoint, store, split, fold=fold, device=device, batch_size=batch_size, allow_seen=allow_seen, out=out
        )
    if result["trained_samples_scored"]:
        click.echo(
            f"WARNING: {result['trained_samples_scored']} of the {result['samples']} samples scored were "
            "trained on by this checkpoint (--allow-seen); the figures overstate it on unseen faces",
            err=True,
        )
    if result["validation_samples_scored"]:
        click.echo(
            f"warning: {result['validation_samples_scored']} of the samples scored chose this checkpoint's "
            "epoch (its validation samples); the figures are optimistic",
            err=True,
        )
    if result["trained_samples_scored"] is None:
        click.echo(
            f"warning: {store} holds other rows than the checkpoint's training store, so which of its samples "
            "the checkpoint saw cannot be checked",
            err=True,
        )
    if not result["same_preprocessing"]:
        click.echo(
            f"warning: {store} was preprocessed with another configuration than the store this checkpoint "
            "was trained on (fer-store diff shows how); the scores may not compare",
            err=True,
        )
    click.echo(json.dumps(result, indent=2))
