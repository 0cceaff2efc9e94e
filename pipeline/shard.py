"""One shard's work: read -> decode -> detect -> landmarks -> align -> guidance -> write.

:func:`process_image` is the per-image chain of stages (no I/O); :func:`process_shard` runs it over
one shard, records a status and message for every sample (a bad sample never stops the shard),
writes the shard's region of the store itself and returns a small :class:`ShardSummary`.
:func:`grow_shard` adds guidance types to one shard of a complete store, rendering them from the
stored aligned faces and landmarks.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import store
from pipeline.config import PreprocessConfig
from pipeline.datasets import get_dataset
from pipeline.errors import DatasetError, UnreadableImageError
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.models import LoadedModels, ModelFiles, thread_models
from pipeline.stages.align import aligned_from_src_matrix, apply_affine, warp_to_aligned
from pipeline.stages.decode import decode_image, to_gray, to_rgb
from pipeline.stages.detect import clip_box, detect_face, full_frame_box
from pipeline.stages.landmarks import predict_landmarks
from pipeline.store import Status


@dataclass
class SampleResult:
    """Everything computed for one sample; array fields are None unless status is usable."""

    status: Status
    message: str = ""
    image: np.ndarray | None = None  # (C, S, S) uint8
    landmarks: np.ndarray | None = None  # (68, 2) float32 aligned pixels
    landmarks_src: np.ndarray | None = None  # (68, 2) float32 source pixels
    box_src: np.ndarray | None = None  # (4,) float32 source pixels
    aligned_from_src: np.ndarray | None = None  # (2, 3) float32
    guidance: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (C, H, H) or (R, 4)
    faces_detected: int = 0  # faces the detector found (0 where it did not run)
    face_score: float = float("nan")  # the detector's score of the face kept; NaN: not a detection


class StageTimer:
    """Accumulates wall time per stage name (seconds)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now


def process_image(
    pixels: np.ndarray,
    prior_box: np.ndarray | None,
    config: PreprocessConfig,
    models: LoadedModels,
    timer: StageTimer | None = None,
    prior_landmarks: np.ndarray | None = None,
) -> SampleResult:
    """Run detection, landmarks, alignment and guidance on one decoded image.

    Args:
        pixels: ``(H, W) uint8`` or ``(H, W, 3) uint8 RGB`` source image.
        prior_box: ``(4,) float32`` dataset box in source pixels (NaN or None when absent).
        config: the run's configuration.
        models: this thread's dlib models.
        timer: optional per-stage timer.
        prior_landmarks: ``(68, 2) float32`` dataset landmarks in source pixels (corner frame;
            NaN or None when absent); used instead of dlib when ``config.landmarks.source`` is
            ``dataset``.

    Returns:
        A :class:`SampleResult`; status ``ok``, ``ok_prior`` or ``no_face``.
    """
    timer = timer or StageTimer()
    height, width = pixels.shape[:2]
    if (
        config.landmarks.source == "dataset"
        and prior_landmarks is not None
        and np.isfinite(prior_landmarks).all()
    ):
        landmarks_src = np.asarray(prior_landmarks, dtype=np.float32)
        if prior_box is not None and np.isfinite(prior_box).all():
            box = np.asarray(prior_box, dtype=np.float32)
        else:
            box = np.concatenate([landmarks_src.min(axis=0), landmarks_src.max(axis=0)]).astype(np.float32)
        return _align_and_render(pixels, box, landmarks_src, Status.OK_PRIOR, config, models, timer)

    use_dataset_box = config.detect.prior == "dataset" and prior_box is not None and np.isfinite(prior_box).all()
    detection = detect_face(models.detector, pixels, config.detect.upsample, prior_box if use_dataset_box else None)
    box, status = detection.box, Status.OK
    if box is None:
        status = Status.OK_PRIOR
        if use_dataset_box:
            box = clip_box(np.asarray(prior_box, dtype=np.float32), height, width)
        elif config.detect.prior == "full-frame":
            box = full_frame_box(height, width)
    timer.lap("detect")
    if box is None:
        message = "no face found by the detector"
        if config.detect.prior == "dataset":
            message += " and the dataset has no usable box for this sample"
        elif config.detect.prior == "none":
            message += " (pre-cropped faces: use --prior full-frame)"
        return SampleResult(Status.NO_FACE, message, faces_detected=detection.faces)

    landmarks_src = predict_landmarks(models.predictor, pixels, box)
    timer.lap("landmarks")
    result = _align_and_render(pixels, box, landmarks_src, status, config, models, timer)
    result.faces_detected, result.face_score = detection.faces, detection.score
    if detection.undecided:
        result.message = store.several_faces_message(detection.faces, detection.score)
    return result


def _align_and_render(
    pixels: np.ndarray,
    box: np.ndarray,
    landmarks_src: np.ndarray,
    status: Status,
    config: PreprocessConfig,
    models: LoadedModels,
    timer: StageTimer,
) -> SampleResult:
    """Align the face given its 68 source landmarks and render every guidance tensor."""
    size = config.align.size
    aligned_from_src = aligned_from_src_matrix(landmarks_src, size)
    source = to_rgb(pixels) if config.align.color == "rgb" else to_gray(pixels)
    aligned = warp_to_aligned(source, aligned_from_src, size)
    landmarks = apply_affine(aligned_from_src, landmarks_src)
    image = aligned.transpose(2, 0, 1) if aligned.ndim == 3 else aligned[None]
    timer.lap("align")

    return SampleResult(
        status=status,
        image=np.ascontiguousarray(image),
        landmarks=landmarks,
        landmarks_src=landmarks_src,
        box_src=box,
        aligned_from_src=aligned_from_src,
        guidance=render_guidance(config.guidance.types, aligned, landmarks, config, models, timer),
    )


def render_guidance(
    types: tuple[str, ...],
    aligned: np.ndarray,
    landmarks: np.ndarray,
    config: PreprocessConfig,
    models: LoadedModels,
    timer: StageTimer,
) -> dict[str, np.ndarray]:
    """Render guidance ``types`` of one aligned face.

    Args:
        aligned: ``(S, S) uint8`` gray or ``(S, S, 3) uint8 RGB`` aligned face.
        landmarks: ``(68, 2) float32`` in aligned pixels.

    Returns:
        name -> ``(C, H, H) uint8`` map or ``(R, 4) float32`` boxes.
    """
    guidance = {}
    for name in types:
        guidance[name] = GUIDANCE_TYPES[name].render(aligned, landmarks, config.align.size, config.guidance, models)
        timer.lap(name)
    return guidance


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
    computed = store.computed_arrays(config)
    arrays = {
        spec.name: np.full((n, *spec.sample_shape), spec.fill_value, dtype=spec.dtype)
        for spec in store.array_specs(config)
        if spec.name in computed and spec.dtype is not str
    }
    arrays["message"] = np.array([""] * n, dtype=object)
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
    for i, source in enumerate(task.sources):
        prior = None if task.prior_boxes is None else task.prior_boxes[i]
        prior_landmarks = None if task.prior_landmarks is None else task.prior_landmarks[i]
        if task.skip is not None and task.skip[i]:
            status[i], arrays["message"][i] = Status.FAILED, task.skip[i]
            continue
        try:
            try:
                raw = adapter.read(root, source)
            except (OSError, RuntimeError, DatasetError) as error:  # RuntimeError: symlink loop
                raise UnreadableImageError(f"cannot read {source}: {error}") from None
            timer.lap("read")
            if isinstance(raw, np.ndarray):
                pixels = raw
            else:
                pixels = decode_image(raw, max_pixels=task.config.decode.max_pixels)
            timer.lap("decode")
            result = process_image(pixels, prior, task.config, models, timer, prior_landmarks)
        except UnreadableImageError as error:
            result = SampleResult(Status.UNREADABLE, str(error))
        except Exception as error:  # noqa: BLE001 - a bad sample never stops the shard
            result = SampleResult(Status.FAILED, f"{type(error).__name__}: {error}")
        status[i] = result.status
        arrays["message"][i] = result.message
        arrays["faces_detected"][i] = min(result.faces_detected, 255)
        arrays["face_score"][i] = result.face_score
        if result.status in store.USABLE_STATUSES:
            for name in store.BASE_COMPUTED_ARRAYS:
                arrays[name][i] = getattr(result, name)
            for name, values in result.guidance.items():
                arrays[name][i] = values
        timer.lap("other")
    store.write_shard(task.store_path, task.start, arrays, status)
    timer.lap("write")
    return ShardSummary(
        start=task.start,
        stop=task.stop,
        counts=store.status_counts(status),
        seconds=time.perf_counter() - began,
        stage_seconds=dict(timer.seconds),
    )


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
    them, then the shard's growth mark. Samples that are not ok keep zeroed guidance. A sample
    whose rendering raises is recorded as it would be in a full run: status ``failed``, with the
    error in ``message``; the shard goes on."""
    began = time.perf_counter()
    timer = StageTimer()
    models = thread_models(task.models)
    group = store.open_store(task.store_path)
    status = group["status"][task.start : task.stop]
    needs = {name for kind in task.types for name in GUIDANCE_TYPES[kind].inputs}
    images = group["image"][task.start : task.stop] if "image" in needs else None
    landmarks = group["landmarks"][task.start : task.stop] if "landmarks" in needs else None
    timer.lap("read")
    n = task.stop - task.start
    specs = store.guidance_specs(task.types, task.config)
    arrays = {spec.name: np.zeros((n, *spec.sample_shape), dtype=spec.dtype) for spec in specs}
    messages = {}
    for i in range(n):
        if status[i] not in store.USABLE_STATUSES:
            continue
        aligned = None
        if images is not None:
            aligned = images[i, 0] if images.shape[1] == 1 else images[i].transpose(1, 2, 0)
        try:
            rendered = render_guidance(
                task.types, aligned, None if landmarks is None else landmarks[i], task.config, models, timer
            )
        except Exception as error:  # noqa: BLE001 - a bad sample never stops the shard
            messages[i] = f"{type(error).__name__}: {error}"
            continue
        for name, values in rendered.items():
            arrays[name][i] = values
    if messages:
        message = group["message"][task.start : task.stop]
        for i, text in messages.items():
            status[i], message[i] = Status.FAILED, text
        arrays["message"] = message
        arrays["status"] = status
    store.write_grown_shard(task.store_path, task.start, arrays)
    timer.lap("write")
    return ShardSummary(
        task.start, task.stop, store.status_counts(status), time.perf_counter() - began, dict(timer.seconds)
    )
