"""One shard's task: read its samples, run the per-image chain, write the shard.

:func:`process_shard` runs :func:`~pipeline.compute.image_chain.process_image` over one shard,
records a status and message for every sample (a bad sample never stops the shard), writes the
shard's region of the store itself and returns a small :class:`ShardSummary`. :func:`grow_shard`
adds guidance types to one shard of a complete store, rendering them from the stored aligned
faces and landmarks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.compute.image_chain import (
    SampleResult,
    StageTimer,
    process_image,
    reduction_allowed,
    render_guidance,
)
from pipeline.compute.model_files import LoadedModels, ModelFiles, thread_models
from pipeline.compute.sample_in_progress import DIED_ON_MESSAGE, WRITING, SampleInProgress
from pipeline.compute.stage_check import ENVIRONMENT_ERRORS, environment_fault, systematic_failure
from pipeline.config import PreprocessConfig
from pipeline.datasets import DatasetAdapter, get_dataset
from pipeline.errors import DatasetError, UnreadableImageError
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.stages.box_mapping import BoxMapping
from pipeline.stages.decode import decode_reduced
from pipeline.store import USABLE_STATUSES, Status, array_specs, open_store, read_array, status_counts
from pipeline.store.growth import write_grown_shard
from pipeline.store.schema import (
    BASE_COMPUTED_ARRAYS,
    FACE_SCORE,
    FACES_DETECTED,
    IMAGE,
    LANDMARKS,
    MESSAGE,
    STATUS,
    computed_arrays,
    guidance_specs,
)
from pipeline.store.writer import write_shard


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs for one shard; small and picklable (no models, no pixels)."""

    store_path: str
    dataset: str
    root: str | None
    start: int
    sources: tuple[str, ...]
    prior_boxes: np.ndarray | None  # (n, 4) float32 or None
    config: PreprocessConfig
    models: ModelFiles
    prior_landmarks: np.ndarray | None = None  # (n, 68, 2) float32 or None
    skip: tuple[str, ...] | None = None  # per row: why it is not processed, "" if it is
    box_mapping: BoxMapping | None = None  # the dataset boxes' mapping (detect modes auto, never)

    @property
    def stop(self) -> int:
        return self.start + len(self.sources)


@dataclass(frozen=True)
class ShardSummary:
    start: int
    stop: int
    counts: dict[str, int]
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _empty_shard_arrays(n: int, config: PreprocessConfig) -> dict[str, np.ndarray]:
    computed = computed_arrays(config)
    arrays = {
        spec.name: np.full((n, *spec.sample_shape), spec.fill_value, dtype=spec.dtype)
        for spec in array_specs(config)
        if spec.name in computed and spec.dtype is not str
    }
    arrays[MESSAGE] = np.array([""] * n, dtype=object)
    return arrays


def process_shard(task: ShardTask) -> ShardSummary:
    """Compute and write one shard. Runs on a Dask worker (or in process); never raises for a
    bad sample: unreadable inputs get status ``unreadable``, any other per-sample error ``failed``.
    """
    began = time.perf_counter()
    adapter = get_dataset(task.dataset)
    models = thread_models(task.models)
    root = Path(task.root) if task.root is not None else None
    n = len(task.sources)
    arrays = _empty_shard_arrays(n, task.config)
    status = np.zeros(n, dtype=np.uint8)
    timer = StageTimer()
    raised: list[str] = []  # the error of each sample whose chain raised
    with SampleInProgress(task.store_path, task.start) as in_progress:
        for i, source in enumerate(task.sources):
            if i in in_progress.died_on:
                status[i], arrays[MESSAGE][i] = Status.FAILED, f"{source}: {DIED_ON_MESSAGE}"
                continue
            in_progress.mark(i)
            _process_sample(task, adapter, root, models, timer, arrays, status, i, source, raised)
        processed = sum(i not in in_progress.died_on and not (task.skip and task.skip[i]) for i in range(n))
        fault = systematic_failure(raised, processed, task.start)
        if fault is not None:
            raise fault
        in_progress.mark(WRITING)
        write_shard(task.store_path, task.start, arrays, status)
    timer.lap("write")
    return ShardSummary(
        start=task.start,
        stop=task.stop,
        counts=status_counts(status),
        seconds=time.perf_counter() - began,
        stage_seconds=dict(timer.seconds),
    )


def _process_sample(
    task: ShardTask,
    adapter: DatasetAdapter,
    root: Path | None,
    models: LoadedModels,
    timer: StageTimer,
    arrays: dict[str, np.ndarray],
    status: np.ndarray,
    i: int,
    source: str,
    raised: list[str],
) -> None:
    """Read, decode and compute sample ``i`` of ``task`` into row ``i`` of ``arrays`` and ``status``;
    the error of a chain that raised is also added to ``raised``.

    Raises:
        EnvironmentFaultError: an error no image can cause (:data:`ENVIRONMENT_ERRORS`).
    """
    prior = None if task.prior_boxes is None else task.prior_boxes[i]
    prior_landmarks = None if task.prior_landmarks is None else task.prior_landmarks[i]
    if task.skip is not None and task.skip[i]:
        status[i], arrays[MESSAGE][i] = Status.FAILED, task.skip[i]
        return
    try:
        try:
            raw = adapter.read(root, source)
        except (OSError, RuntimeError, DatasetError) as error:  # RuntimeError: symlink loop
            raise UnreadableImageError(f"cannot read {source}: {error}") from None
        timer.lap("read")
        if isinstance(raw, np.ndarray):
            pixels, scale = raw, 1
        else:
            largest = reduction_allowed(prior, task.box_mapping, task.config)
            pixels, scale = decode_reduced(raw, max_pixels=task.config.decode.max_pixels, largest_factor=largest)
        timer.lap("decode")
        result = process_image(
            pixels, prior, task.config, models, timer, prior_landmarks, box_mapping=task.box_mapping, pixel_scale=scale
        )
    except UnreadableImageError as error:
        result = SampleResult(Status.UNREADABLE, str(error))
    except ENVIRONMENT_ERRORS as error:
        raise environment_fault(error, source) from error
    except Exception as error:  # noqa: BLE001 - a bad sample never stops the shard
        result = SampleResult(Status.FAILED, f"{type(error).__name__}: {error}")
        raised.append(result.message)
    status[i] = result.status
    arrays[MESSAGE][i] = result.message
    arrays[FACES_DETECTED][i] = min(result.faces_detected, 255)
    arrays[FACE_SCORE][i] = result.face_score
    if result.status in USABLE_STATUSES:
        for name in BASE_COMPUTED_ARRAYS:
            arrays[name][i] = getattr(result, name)
        for name, values in result.guidance.items():
            arrays[name][i] = values
    timer.lap("other")


@dataclass(frozen=True)
class GrowTask:
    """One shard of a complete store to add guidance ``types`` to (small and picklable)."""

    store_path: str
    start: int
    stop: int
    types: tuple[str, ...]
    config: PreprocessConfig  # the store's own configuration (sizes, sigma)
    models: ModelFiles


def grow_shard(task: GrowTask) -> ShardSummary:
    """Render ``task.types`` for one shard from its stored aligned faces and landmarks and write
    them, then the shard's growth mark. Samples that are not ok keep zeroed guidance. Where a
    type's renderer raises on a sample, or twice killed the process rendering it
    (:mod:`~pipeline.compute.sample_in_progress`), that map stays zero and the error is recorded
    for the sample and type (``growing_errors``); the sample's status and message never change,
    and the shard goes on."""
    began = time.perf_counter()
    timer = StageTimer()
    models = thread_models(task.models)
    group = open_store(task.store_path)
    status = read_array(group, STATUS, slice(task.start, task.stop))
    needs = {name for kind in task.types for name in GUIDANCE_TYPES[kind].inputs}
    n = task.stop - task.start
    # an input no type of the task needs is not read: the renderers get an empty stand-in
    images = read_array(group, IMAGE, slice(task.start, task.stop)) if IMAGE in needs else np.zeros((n, 1, 0, 0))
    landmarks = (
        read_array(group, LANDMARKS, slice(task.start, task.stop)) if LANDMARKS in needs else np.zeros((n, 0, 2))
    )
    timer.lap("read")
    specs = guidance_specs(task.types, task.config)
    arrays = {spec.name: np.zeros((n, *spec.sample_shape), dtype=spec.dtype) for spec in specs}
    errors = np.full(n, "", dtype=object)
    with SampleInProgress(task.store_path, task.start) as in_progress:
        for i in range(n):
            if status[i] not in USABLE_STATUSES:
                continue
            if i in in_progress.died_on:
                errors[i] = "\n".join(f"{name}: {DIED_ON_MESSAGE}" for name in task.types)
                continue
            in_progress.mark(i)
            aligned = images[i, 0] if images.shape[1] == 1 else images[i].transpose(1, 2, 0)
            failed = []
            for name in task.types:
                try:
                    rendered = render_guidance((name,), aligned, landmarks[i], task.config, models, timer)
                except Exception as error:  # noqa: BLE001 - a bad sample never stops the shard
                    failed.append(f"{name}: {type(error).__name__}: {' '.join(str(error).split())}")
                    continue
                arrays[name][i] = rendered[name]
            errors[i] = "\n".join(failed)
        in_progress.mark(WRITING)
        write_grown_shard(task.store_path, task.start, arrays, errors)
    timer.lap("write")
    return ShardSummary(task.start, task.stop, status_counts(status), time.perf_counter() - began, dict(timer.seconds))
