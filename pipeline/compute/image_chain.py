"""The per-image chain of stages: detect -> landmarks -> align -> guidance, on numpy arrays.

No I/O, no Dask, no Zarr: :func:`process_image` takes a decoded image and returns a
:class:`SampleResult`; :func:`render_guidance` renders guidance types of one aligned face (also
used to grow a store from its stored faces).
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from pipeline.compute.model_files import LoadedModels
from pipeline.compute.renderers import RENDERERS
from pipeline.config import PreprocessConfig
from pipeline.stages.align import aligned_from_src_for, apply_affine, resample_to_aligned
from pipeline.stages.box_mapping import BoxMapping
from pipeline.stages.dataset_geometry import dataset_box_problem, dataset_landmarks_problem
from pipeline.stages.decode import to_gray, to_rgb
from pipeline.stages.detect import clip_box, detect_boxes, detect_face, full_frame_box, largest_first
from pipeline.stages.landmarks import predict_landmarks
from pipeline.store.schema import Status, several_faces_message

# Images no larger than this may be faces cropped to their frame (FER-2013 48, CK+ crops, RAF-DB
# aligned 100): a detector miss there is advised --prior full-frame; larger ones are photos.
PRE_CROPPED_SIDE = 128


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

    def in_source_frame(self, pixel_scale: int) -> SampleResult:
        """This result, computed on an image decoded at ``1 / pixel_scale`` of the source's size,
        with its source-frame fields (``landmarks_src``, ``box_src``, ``aligned_from_src``) in
        source pixels."""
        if pixel_scale == 1 or self.landmarks_src is None or self.box_src is None or self.aligned_from_src is None:
            return self
        to_decoded = np.array([1 / pixel_scale, 1 / pixel_scale, 1.0], dtype=np.float32)
        return dataclasses.replace(
            self,
            landmarks_src=(self.landmarks_src * pixel_scale).astype(np.float32),
            box_src=(self.box_src * pixel_scale).astype(np.float32),
            aligned_from_src=(self.aligned_from_src * to_decoded).astype(np.float32),
        )


class StageTimer:
    """Accumulates wall time per stage name (seconds)."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] += now - self._last
        self._last = now


# Where a face's box is known before decoding, a JPEG is decoded at a reduced scale only while the
# box keeps at least the aligned size S pixels a side (the face is never upsampled by the
# alignment) and at least this many for dlib's predictor (docs/benchmarks.md, "AffectNet").
MIN_DECODED_FACE = 96


def reduction_allowed(prior_box: np.ndarray | None, box_mapping: BoxMapping | None, config: PreprocessConfig) -> int:
    """The largest JPEG reduction (1, 2, 4 or 8) for a sample whose dataset box is ``prior_box``
    (source pixels; None or NaN: none): 1 unless the face's size is known before decoding (the
    detect mode takes boxes without detecting, or landmarks come from the dataset), else the
    largest keeping the box's shorter side at least ``max(S, MIN_DECODED_FACE)`` pixels."""
    takes_box = config.detect.mode != "always" or config.landmarks.source == "dataset"
    if prior_box is None or not takes_box or not np.isfinite(prior_box).all():
        return 1
    box = prior_box if box_mapping is None else box_mapping.apply(prior_box)
    side = min(float(box[2] - box[0]), float(box[3] - box[1]))
    needed = max(config.align.size, MIN_DECODED_FACE)
    factor = 1
    while factor < 8 and side / (2 * factor) >= needed:
        factor *= 2
    return factor


def process_image(
    pixels: np.ndarray,
    prior_box: np.ndarray | None,
    config: PreprocessConfig,
    models: LoadedModels,
    timer: StageTimer | None = None,
    prior_landmarks: np.ndarray | None = None,
    *,
    box_mapping: BoxMapping | None = None,
    pixel_scale: int = 1,
) -> SampleResult:
    """Run detection, landmarks, alignment and guidance on one decoded image.

    Args:
        pixels: ``(H, W) uint8`` or ``(H, W, 3) uint8 RGB`` image: the source, or the source
            decoded at ``1 / pixel_scale`` of its size (:func:`~pipeline.stages.decode.decode_reduced`).
        prior_box: ``(4,) float32`` dataset box in source pixels (NaN or None when absent).
        config: the run's configuration.
        models: this thread's dlib models.
        timer: optional per-stage timer.
        prior_landmarks: ``(68, 2) float32`` dataset landmarks in source pixels (corner frame;
            NaN or None when absent); used instead of dlib when ``config.landmarks.source`` is
            ``dataset``.
        box_mapping: how a dataset box maps to dlib's framing, where ``config.detect.mode`` takes
            boxes without detecting (``auto``, ``never``); None: the identity.
        pixel_scale: source pixels per pixel of ``pixels`` (1, 2, 4 or 8).

    Returns:
        A :class:`SampleResult` in source pixels; status ``ok``, ``ok_prior`` or ``no_face``, or
        ``failed`` where the dataset's box or landmarks cannot be a face in this image
        (:mod:`pipeline.stages.dataset_geometry`).
    """
    timer = timer or StageTimer()
    height, width = pixels.shape[:2]
    has_box = prior_box is not None and bool(np.isfinite(prior_box).all())
    box = np.asarray(prior_box, dtype=np.float32) / pixel_scale if has_box else None
    if box is not None and (problem := dataset_box_problem(box, height, width)):
        return SampleResult(Status.FAILED, problem)
    if config.landmarks.source == "dataset" and prior_landmarks is not None and np.isfinite(prior_landmarks).all():
        landmarks_src = np.asarray(prior_landmarks, dtype=np.float32) / pixel_scale
        if problem := dataset_landmarks_problem(landmarks_src, height, width):
            return SampleResult(Status.FAILED, problem)
        if box is None:
            box = np.concatenate([landmarks_src.min(axis=0), landmarks_src.max(axis=0)]).astype(np.float32)
        result = _align_and_render(pixels, box, landmarks_src, Status.OK_PRIOR, config, models, timer)
    elif config.detect.mode == "never" or (config.detect.mode == "auto" and has_box):
        result = _from_prior(pixels, box, box_mapping or BoxMapping(), config, models, timer)
    else:
        result = _from_detection(pixels, box, config, models, timer)
    return result.in_source_frame(pixel_scale)


def _from_detection(
    pixels: np.ndarray,
    prior_box: np.ndarray | None,
    config: PreprocessConfig,
    models: LoadedModels,
    timer: StageTimer,
) -> SampleResult:
    """Landmarks inside the detector's box (the one matching ``prior_box``, a dataset box in the
    frame of ``pixels``, when the prior is ``dataset``), or inside the prior when it finds none."""
    height, width = pixels.shape[:2]
    use_dataset_box = config.detect.prior == "dataset" and prior_box is not None
    detection = detect_face(
        models.detector,
        pixels,
        config.detect.upsample,
        prior_box if use_dataset_box else None,
        min_face=config.detect.min_face,
    )
    box, status = detection.box, Status.OK
    if box is None:
        status = Status.OK_PRIOR
        if use_dataset_box and prior_box is not None:
            box = clip_box(prior_box, height, width)
        elif config.detect.prior == "full-frame":
            box = full_frame_box(height, width)
    timer.lap("detect")
    if box is None:
        message = "no face found by the detector"
        if config.detect.prior == "dataset":
            message += " and the dataset has no usable box for this sample"
        elif config.detect.prior == "none" and max(height, width) <= PRE_CROPPED_SIDE:
            message += " (if the image is a face cropped to its frame, build with --prior full-frame)"
        elif config.detect.prior == "none":  # dlib's HOG finds faces of about 80 / 2**upsample pixels
            smallest, more = 80 >> config.detect.upsample, config.detect.upsample + 1
            message += (
                f" (a photo without a face needs nothing; a face under about {smallest} pixels needs --upsample {more})"
            )
        return SampleResult(Status.NO_FACE, message, faces_detected=detection.faces)
    landmarks_src = predict_landmarks(models.predictor, pixels, box)
    timer.lap("landmarks")
    result = _align_and_render(pixels, box, landmarks_src, status, config, models, timer)
    result.faces_detected, result.face_score = detection.faces, detection.score
    if detection.undecided:
        result.message = several_faces_message(detection.faces, detection.score)
    return result


def process_faces(
    pixels: np.ndarray,
    config: PreprocessConfig,
    models: LoadedModels,
    timer: StageTimer | None = None,
    *,
    largest: bool = False,
) -> list[SampleResult]:
    """Every face the detector finds in a decoded photo through the detector path of the chain
    (no dataset box or landmarks): landmarks inside each box, alignment and guidance, as
    :func:`process_image` treats the face it keeps.

    Args:
        pixels: ``(H, W) uint8`` or ``(H, W, 3) uint8 RGB`` image.
        config: the chain's configuration (``detect.mode`` and ``landmarks.source`` are not read:
            the detector runs and dlib places the landmarks).
        largest: only the face :func:`process_image` would keep.

    Returns:
        One :class:`SampleResult` per face in source pixels, largest first (area, then score: the
        first is the face a store keeps), each ``ok`` with ``faces_detected`` the number found;
        where none is found, one ``ok_prior`` result inside the full frame with ``--prior
        full-frame``, else one ``no_face`` result.
    """
    timer = timer or StageTimer()
    height, width = pixels.shape[:2]
    boxes, scores = detect_boxes(models.detector, pixels, config.detect.upsample, config.detect.min_face)
    timer.lap("detect")
    if not boxes:
        if config.detect.prior != "full-frame":
            return [SampleResult(Status.NO_FACE, "no face found by the detector")]
        found = [(full_frame_box(height, width), Status.OK_PRIOR, float("nan"))]
    else:
        order = largest_first(boxes, scores)
        found = [(boxes[i], Status.OK, scores[i]) for i in order[: 1 if largest else None]]
    results = []
    for box, status, score in found:
        landmarks_src = predict_landmarks(models.predictor, pixels, box)
        timer.lap("landmarks")
        result = _align_and_render(pixels, box, landmarks_src, status, config, models, timer)
        result.faces_detected, result.face_score = len(boxes), score
        results.append(result)
    return results


def _from_prior(
    pixels: np.ndarray,
    dataset_box: np.ndarray | None,
    mapping: BoxMapping,
    config: PreprocessConfig,
    models: LoadedModels,
    timer: StageTimer,
) -> SampleResult:
    """Landmarks inside the dataset box (in the frame of ``pixels``) mapped to dlib's framing, or
    inside the full frame with that prior; the detector does not run."""
    height, width = pixels.shape[:2]
    if dataset_box is not None:
        box = clip_box(mapping.apply(dataset_box), height, width)
        missing = "the dataset's box lies outside the image"
    elif config.detect.prior == "full-frame":
        box, missing = full_frame_box(height, width), ""
    else:
        box, missing = None, "the dataset has no box for this sample and --detect never runs the detector"
    if box is None:
        return SampleResult(Status.NO_FACE, missing)
    landmarks_src = predict_landmarks(models.predictor, pixels, box)
    timer.lap("landmarks")
    return _align_and_render(pixels, box, landmarks_src, Status.OK_PRIOR, config, models, timer)


def _align_and_render(
    pixels: np.ndarray,
    box: np.ndarray,
    landmarks_src: np.ndarray,
    status: Status,
    config: PreprocessConfig,
    models: LoadedModels,
    timer: StageTimer,
) -> SampleResult:
    """Align the face given its 68 source landmarks (in ``config.align.mode``) and render every
    guidance tensor."""
    size, mode = config.align.size, config.align.mode
    aligned_from_src = aligned_from_src_for(mode, landmarks_src, pixels.shape, size)
    source = to_rgb(pixels) if config.align.color == "rgb" else to_gray(pixels)
    aligned = resample_to_aligned(source, aligned_from_src, size, mode)
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
