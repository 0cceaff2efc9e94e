"""The per-image chain of stages: detect -> landmarks -> align -> guidance, on numpy arrays.

No I/O, no Dask, no Zarr: :func:`process_image` takes a decoded image and returns a
:class:`SampleResult`; :func:`render_guidance` renders guidance types of one aligned face (also
used to grow a store from its stored faces).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from pipeline.compute.model_files import LoadedModels
from pipeline.compute.renderers import RENDERERS
from pipeline.config import PreprocessConfig
from pipeline.stages.align import aligned_from_src_matrix, apply_affine, warp_to_aligned
from pipeline.stages.decode import to_gray, to_rgb
from pipeline.stages.detect import clip_box, detect_face, full_frame_box
from pipeline.stages.landmarks import predict_landmarks
from pipeline.store.schema import Status, several_faces_message


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
        self.seconds: defaultdict[str, float] = defaultdict(float)
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
    if config.landmarks.source == "dataset" and prior_landmarks is not None and np.isfinite(prior_landmarks).all():
        landmarks_src = np.asarray(prior_landmarks, dtype=np.float32)
        if prior_box is not None and np.isfinite(prior_box).all():
            landmarks_box = np.asarray(prior_box, dtype=np.float32)
        else:
            landmarks_box = np.concatenate([landmarks_src.min(axis=0), landmarks_src.max(axis=0)]).astype(np.float32)
        return _align_and_render(pixels, landmarks_box, landmarks_src, Status.OK_PRIOR, config, models, timer)

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
        result.message = several_faces_message(detection.faces, detection.score)
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
        guidance[name] = RENDERERS[name](aligned, landmarks, config.align.size, config.guidance, models)
        timer.lap(name)
    return guidance
