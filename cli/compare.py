"""``fer-compare``: a model against its twin over several seeds, with the paired difference."""

from __future__ import annotations

import dataclasses

import click

from cli.errors import user_errors
from cli.progress import ConsoleProgress
from cli.train import parse_options
from fer_models.models.registry import get_model_entry, list_models
from fer_models.training.config import BALANCES, TrainConfig
from fer_models.training.paired_comparison import compare_models
from fer_models.training.recipe import RECIPES


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--store", required=True, help="Guidance store built by fer-preprocess.")
@click.option("--model", type=click.Choice(list_models()), required=True, help="The model (a).")
@click.option("--option", "model_options", multiple=True, metavar="KEY=VALUE", help="An option of the model.")
@click.option("--twin", type=click.Choice(list_models()), help="Its twin (b), e.g. stn for guided-stn. [--model]")
@click.option(
    "--twin-option",
    "twin_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An option of the twin. [those of --option the twin has too, e.g. width]",
)
@click.option(
    "--twin-store",
    help="The twin trains on this store: another build of the same dataset (e.g. --align crop against "
    "similarity). [--store]",
)
@click.option(
    "--balance",
    type=click.Choice(BALANCES),
    help="Class balance of the loss: weights or none. [the dataset's protocol]",
)
@click.option("--twin-balance", type=click.Choice(BALANCES), help="The twin's class balance. [--balance]")
@click.option("--seeds", default="0,1,2", help="Comma-separated seeds, at least two; each trains both models.")
@click.option("--labels", help="Label set. [the store's first]")
@click.option("--epochs", type=int, help="[each model's default]")
@click.option("--batch-size", type=int, help="[each model's default]")
@click.option("--recipe", type=click.Choice(list(RECIPES)), help="[each model's default]")
@click.option("--device", default="auto")
@click.option("--threads", type=int, help="CPU threads of each run. [torch's current number]")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Comparison directory.")
@click.option("--progress/--no-progress", default=True, help="A progress bar per epoch.")
def main(
    store: str,
    model: str,
    model_options: tuple[str, ...],
    twin: str | None,
    twin_options: tuple[str, ...],
    twin_store: str | None,
    balance: str | None,
    twin_balance: str | None,
    seeds: str,
    labels: str | None,
    epochs: int | None,
    batch_size: int | None,
    recipe: str | None,
    device: str,
    threads: int | None,
    out: str,
    progress: bool,
) -> None:
    """Train MODEL and TWIN for each seed on the same data order and augmentation, score both on
    the same test samples, and write OUT/comparison.{json,md,png}: the per-seed figures, the mean
    difference (MODEL - TWIN) and its 95% paired-bootstrap interval. The twin is MODEL itself
    unless --twin names another: then --twin-option, --twin-store or --twin-balance say what
    differs. Finished runs are read back, an interrupted one resumed."""
    with user_errors():
        twin = twin or model
        if not twin_options:  # the twin shares the options it has (width=8 for pal's resnet18 twin)
            takes = get_model_entry(twin).options()
            twin_options = tuple(pair for pair in model_options if pair.split("=", 1)[0].strip() in takes)
            if twin != model and twin_options:
                click.echo(f"twin {twin} takes {', '.join(twin_options)} from --option (--twin-option overrides)")
        a = TrainConfig(
            model=model,
            options=parse_options(model, model_options),
            store=store,
            balance=balance,
            labels=labels,
            epochs=epochs,
            batch_size=batch_size,
            recipe=recipe,
            device=device,
            threads=threads,
        )
        b = dataclasses.replace(
            a,
            model=twin,
            options=parse_options(twin, twin_options),
            store=twin_store or store,
            balance=twin_balance or balance,
        )
        try:
            seed_list = [int(seed) for seed in seeds.split(",")]
        except ValueError:
            raise click.BadParameter(
                f"{seeds!r} is not a comma-separated list of integers", param_hint="--seeds"
            ) from None
        table = compare_models(a, b, seed_list, out, progress=ConsoleProgress(bars=progress, err=False))
    low, high = (100 * v for v in table["interval_95"]["accuracy"])
    click.echo(
        f"done: {table['a']['name']} - {table['b']['name']} accuracy {100 * table['mean_difference']['accuracy']:+.2f} points "
        f"(95% interval [{low:+.2f}, {high:+.2f}]) over seeds {seeds} -> {out}/comparison.md"
    )
