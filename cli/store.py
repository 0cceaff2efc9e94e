"""``fer-store``: look at a guidance store."""

from __future__ import annotations

import click

from cli.errors import user_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Inspect FER guidance stores."""


@main.command()
@click.argument("store")
def info(store):
    """Dataset, counts, arrays and provenance of STORE."""
    from pipeline.inspect import describe_store

    with user_errors():
        click.echo(describe_store(store))


@main.command()
@click.argument("store")
@click.option("--split", help="Only samples of this split.")
@click.option("--status", "statuses", multiple=True, help="Only samples with this status (repeatable): ok, ok_prior, no_face, unreadable, failed.")
@click.option("--n", "count", type=int, default=24, show_default=True, help="Number of samples.")
@click.option("--out", type=click.Path(dir_okay=False), default="contact-sheet.png", show_default=True, help="PNG to write.")
def show(store, split, statuses, count, out):
    """Write a contact sheet PNG: aligned faces with landmarks, heatmap, saliency and mask."""
    from pipeline.contact_sheet import write_contact_sheet

    with user_errors():
        shown = write_contact_sheet(store, out, split=split, statuses=statuses, count=count)
    click.echo(f"wrote {out} ({shown} samples)")
