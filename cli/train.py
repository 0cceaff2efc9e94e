"""``fer-train`` and ``fer-eval``: train a registered model from a guidance store, score a checkpoint."""

from __future__ import annotations

import json

import click

from cli.errors import user_errors
from fer_models.registry import get_model_entry, list_models
from fer_models.train import TrainConfig, evaluate_checkpoint, train
from pipeline.errors import ConfigError


def parse_options(model: str, pairs: tuple[str, ...]) -> dict:
    """``("guidance=saliency", "dropout=0.3")`` -> typed keyword arguments of ``model``, each
    converted to the type of the option's default."""
    defaults = get_model_entry(model).options()
    options = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in defaults:
            known = ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "none"
            raise ConfigError(f"--option {pair!r}: model {model!r} takes KEY=VALUE with KEY among: {known}")
        default = defaults[key]
        try:
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
@click.option("--model", type=click.Choice(list_models()), default="cnn")
@click.option("--option", "model_options", multiple=True, metavar="KEY=VALUE",
              help="A model option, repeatable (e.g. guided-stn: guidance=saliency; see docs/training.md).")
@click.option("--labels", help="Label set recorded in the store (7, 8, polarity, votes, ...; see fer-store info). [the store's first]")
@click.option("--epochs", type=int, help="[the model's default]")
@click.option("--batch-size", type=int, help="[the model's default]")
@click.option("--lr", type=float, help="Adam learning rate. [the model's default]")
@click.option("--seed", type=int, default=0)
@click.option("--device", default="auto", help="auto (CUDA with mixed precision when present), cpu, cuda or cuda:N.")
@click.option("--train-split", help="Split trained on. [train, or the store's only split]")
@click.option("--eval-split", help="Split that picks the best epoch. [val if present, else test]")
@click.option("--test-split", help="Split the best epoch is scored on at the end. [test, unless it is the eval split]")
@click.option("--folds", type=int, default=0, help="Split the train split into K subject-independent folds (needs subjects, e.g. ckplus). [off]")
@click.option("--fold", type=int, default=0, help="With --folds: the fold scored; the others are trained on.")
@click.option("--balance", type=click.Choice(["weights", "none"]), default="weights", help="Class-weighted loss for imbalanced sets, or none.")
@click.option("--augment/--no-augment", default=True, help="Flip, small affine, brightness/contrast; guidance moves with the image.")
@click.option("--workers", type=int, default=0, help="Loader processes when streaming a large store (spawn).")
@click.option("--in-memory", type=click.Choice(["auto", "yes", "no"]), default="auto", help="Hold the selected samples in memory. [auto: up to 2 GiB]")
@click.option("--init", type=click.Path(dir_okay=False), help="Start from these weights (a state dict or checkpoint; tensors matched by name and shape).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in OUT from its last.pt.")
@click.option("--progress/--no-progress", default=True, help="A progress bar per epoch.")
def main(store, model, model_options, labels, epochs, batch_size, lr, seed, device, train_split, eval_split, test_split,
         folds, fold, balance, augment, workers, in_memory, init, out, resume, progress):  # fmt: skip
    """Train MODEL on the store's usable samples (status ok / ok_prior, known label) without
    recomputing any guidance. OUT gets config.json, log.jsonl, last.pt, best.pt, confusion.png and
    summary.json."""
    with user_errors():
        config = TrainConfig(
            store=store, model=model, options=parse_options(model, model_options), epochs=epochs,
            batch_size=batch_size, lr=lr, seed=seed, labels=labels, train_split=train_split, eval_split=eval_split,
            test_split=test_split, folds=folds, fold=fold, device=device, balance=balance, augment=augment,
            workers=workers, in_memory={"auto": "auto", "yes": True, "no": False}[in_memory], init=init,
        )  # fmt: skip
        summary = train(config, out, resume=resume, progress=progress, echo=click.echo)
    split = summary["report_split"]
    click.echo(f"done: best epoch {summary['best_epoch']}, {split} accuracy {summary[split + '_accuracy']:.4f}, "
               f"macro-F1 {summary[split + '_macro_f1']:.4f} -> {out}")  # fmt: skip


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="best.pt or last.pt of a run.")
@click.option("--store", required=True, help="Guidance store to score on.")
@click.option("--split", default="test")
@click.option("--device", default="auto")
@click.option("--batch-size", type=int, default=256)
@click.option("--out", type=click.Path(file_okay=False), help="Directory for metrics.json and confusion.png.")
def evaluate(checkpoint, store, split, device, batch_size, out):
    """Score a checkpoint on a split of a store, with the checkpoint's label set: accuracy,
    macro-F1, confusion matrix (JSON on stdout)."""
    with user_errors():
        result = evaluate_checkpoint(checkpoint, store, split, device=device, batch_size=batch_size, out=out)
    if not result["same_preprocessing"]:
        click.echo(f"warning: {store} was preprocessed with another configuration than the store this checkpoint "
                   "was trained on (fer-store diff shows how); the scores may not compare", err=True)  # fmt: skip
    click.echo(json.dumps(result, indent=2))
