"""``fer-store``: look at, check, pack, compare and serve guidance stores.

STORE is a local path, file://, http(s)://, s3:// URL or a .zarr.zip file wherever a store is
only read (docs/sharing.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from cli.errors import user_errors
from cli.progress import ConsoleProgress

Command = TypeVar("Command", bound=Callable[..., object])


def sample_filters(command: Command) -> Command:
    """``--split`` and ``--status``: which samples a command shows."""
    command = click.option(
        "--status",
        "statuses",
        multiple=True,
        help="Only samples with this status (repeatable): ok, ok_prior, no_face, unreadable, failed.",
    )(command)
    return click.option("--split", help="Only samples of this split.")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Inspect, verify, pack, compare and serve FER guidance stores."""


@main.command()
@click.argument("store")
def info(store: str) -> None:
    """Dataset, counts, arrays and provenance of STORE."""
    from pipeline.tools.describe import describe_store

    with user_errors():
        click.echo(describe_store(store))


@main.command()
@click.argument("store")
@sample_filters
@click.option(
    "--several-faces",
    is_flag=True,
    help="Only ok samples whose photo showed several faces, the largest kept for lack of a dataset box.",
)
@click.option("--n", "count", type=int, default=24, show_default=True, help="Number of samples.")
@click.option(
    "--list",
    "as_list",
    is_flag=True,
    help="Print index, status, faces, score, source and message of each sample instead of drawing.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), default="contact-sheet.png", show_default=True, help="PNG to write."
)
def show(
    store: str,
    split: str | None,
    statuses: tuple[str, ...],
    several_faces: bool,
    count: int,
    as_list: bool,
    out: str,
) -> None:
    """Write a contact sheet PNG: aligned faces with landmarks, heatmap, saliency and mask (or, with
    --list, one line per sample)."""
    from pipeline.tools.contact_sheet import chosen_samples, sample_lines, write_contact_sheet

    with user_errors():
        indices = chosen_samples(store, split=split, statuses=statuses, count=count, several_faces=several_faces)
        if as_list:
            click.echo("\n".join(sample_lines(store, indices)))
            return
        shown = write_contact_sheet(store, out, indices)
    click.echo(f"wrote {out} ({shown} samples)")


@main.command()
@click.argument("store")
def ls(store: str) -> None:
    """The arrays of STORE: shapes, dtypes, chunks, shards, dimensions, bytes."""
    from pipeline.tools.describe import list_arrays

    with user_errors():
        click.echo(list_arrays(store))


@main.command()
@click.argument("store")
def verify(store: str) -> None:
    """Read every chunk of STORE and check checksums, schema, provenance hashes and completeness;
    print each fault and exit 1 if there is any."""
    from pipeline.tools.verify import verify_store

    faults = verify_store(store, progress=ConsoleProgress())
    for fault in faults:
        click.echo(f"{'INCOMPLETE' if fault.unfinished else 'FAULT'} {fault}")
    damage = [fault for fault in faults if not fault.unfinished]
    if damage:
        click.echo(f"{store}: {len(damage)} faults")
    elif faults:
        click.echo(f"{store}: no damage found, but the build did not finish")
    if faults:
        raise SystemExit(1)
    click.echo(f"{store}: intact and complete")


@main.command()
@click.argument("store", type=click.Path(file_okay=False, exists=True))
@click.argument("out", type=click.Path(dir_okay=False))
def pack(store: str, out: str) -> None:
    """Pack the finished local STORE into OUT (*.zarr.zip), one file to send or publish."""
    from pipeline.tools.pack import pack_store

    with user_errors():
        files = pack_store(store, out)
    click.echo(f"packed {files} files into {out}")


@main.command()
@click.argument("a")
@click.argument("b")
def diff(a: str, b: str) -> None:
    """Provenance, config and counts of stores A and B side by side."""
    from pipeline.tools.describe import diff_stores

    with user_errors():
        click.echo(diff_stores(a, b))


@main.command()
@click.argument("store", type=click.Path(exists=True))
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for the lab network)."
)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--log/--no-log", default=False, help="Log each request.")
def serve(store: str, host: str, port: int, log: bool) -> None:
    """Serve the local STORE (a directory or a .zarr.zip) read-only over HTTP with Range requests,
    until interrupted; / shows a page describing it."""
    from pipeline.store import open_store
    from pipeline.tools.serve import make_server

    with user_errors():
        open_store(store)
        server = make_server(store, host, port, quiet=not log)
    click.echo(f"serving {store} at http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@main.command()
@click.argument("store")
@click.option("--name", help="FiftyOne dataset name.  [default: <dataset>-<store digest>]")
@click.option("--port", type=int, default=5151, show_default=True, help="Port of the App on 127.0.0.1.")
@click.option("--no-launch", is_flag=True, help="Build the dataset (and its images) only; do not start the App.")
@click.option(
    "--limit",
    type=int,
    default=1000,
    show_default=True,
    help="At most this many samples, spread evenly over the store (images and database grow with it).",
)
@sample_filters
@click.option(
    "--predictions",
    type=click.Path(file_okay=False, exists=True),
    help="A fer-train run directory: show its test predictions and FiftyOne's evaluation of them.",
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, exists=True),
    help="Where the dataset's source images are on this machine.  [default: where the store was built from]",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    help="Folder for the images and the database.  [default: $FER_VIEWER_CACHE or ~/.cache/fer-guidance-store/viewer]",
)
def view(
    store: str,
    name: str | None,
    port: int,
    no_launch: bool,
    limit: int,
    split: str | None,
    statuses: tuple[str, ...],
    predictions: str | None,
    root: str | None,
    cache: str | None,
) -> None:
    """Browse STORE in FiftyOne: faces with landmarks, guidance maps, regions and failures, source
    images with the detected box, and a run's predictions; the App runs on 127.0.0.1 until
    interrupted. Needs the [viewer] extra (make viewer)."""
    import signal
    import sys
    from pathlib import Path

    from pipeline.tools.fiftyone_view import FACE_SLICE, build_view_dataset, launch_view, viewer_database

    # A kill (SIGTERM) ends the App and the database as Ctrl-C does, not leaving them running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with user_errors(), viewer_database(Path(cache) if cache else None):
        dataset = build_view_dataset(
            store,
            name=name,
            split=split,
            statuses=tuple(statuses),
            limit=limit,
            predictions=predictions,
            root=root,
            cache=Path(cache) if cache else None,
        )
        faces, images = dataset.select_group_slices(FACE_SLICE).count(), dataset.select_group_slices().count()
        click.echo(f"dataset {dataset.name}: {faces} samples, {images - faces} of them with their source image")
        if no_launch:
            return
        session = launch_view(dataset, port=port)
        try:
            click.echo(f"FiftyOne App at http://127.0.0.1:{port}/datasets/{dataset.name} (Ctrl-C to stop)", err=True)
            session.wait(-1)
        except KeyboardInterrupt:
            # Ctrl-C reaches the App's and the database's processes too; a second interrupt while
            # they are stopped would abort the teardown half done (exit 1, "Aborted!").
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        finally:
            session.close()
