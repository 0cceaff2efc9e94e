"""``fer-train``: train a registered model from a guidance store."""

from __future__ import annotations

import click

from cli.errors import user_errors
from fer_models.registry import list_models
from fer_models.train import TrainConfig, train


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--store", required=True, help="Guidance store built by fer-preprocess.")
@click.option("--model", type=click.Choice(list_models()), default="cnn")
@click.option("--epochs", type=int, default=10)
@click.option("--batch-size", type=int, default=64)
@click.option("--lr", type=float, default=1e-3)
@click.option("--seed", type=int, default=0)
@click.option("--labels", help="Label set recorded in the store (7, 8, polarity, votes, ...; see fer-store info). [the store's first]")
@click.option("--train-split", help="Split trained on. [train, or the store's only split]")
@click.option("--eval-split", help="Split scored after each epoch. [val if present, else test]")
@click.option("--folds", type=int, default=0, help="Split the train split into K subject-independent folds (needs subjects, e.g. ckplus). [off]")
@click.option("--fold", type=int, default=0, help="With --folds: the fold scored; the others are trained on.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Run directory.")
def main(store, model, epochs, batch_size, lr, seed, labels, train_split, eval_split, folds, fold, out):
    """Train MODEL on the store's usable samples (status ok / ok_prior, known label), without
    recomputing any guidance; writes config.json, log.jsonl, last.pt and summary.json to OUT."""
    with user_errors():
        config = TrainConfig(store=store, model=model, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                             labels=labels, train_split=train_split, eval_split=eval_split, folds=folds, fold=fold)  # fmt: skip
        summary = train(config, out, echo=click.echo)
    click.echo(f"done: {summary['eval_split']} accuracy {summary[summary['eval_split'] + '_accuracy']:.4f} -> {out}")
