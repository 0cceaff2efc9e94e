"""Face boxes: dlib's HOG frontal face detector, and the prior boxes used when it finds none.

Boxes are ``(left, top, right, bottom)`` float32 in source pixels, edges in the pixel-corner frame
(see :mod:`pipeline.stages`): a box covering pixel columns 10..19 has left 10 and right 20. dlib
rectangles are inclusive (right = left + width - 1); :func:`box_from_dlib` and :func:`dlib_rect`
convert.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import dlib
import numpy as np


def box_from_dlib(rect: dlib.rectangle) -> np.ndarray:
    """dlib's inclusive rectangle -> ``(4,) float32`` (left, top, right, bottom) edges."""
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float32)


def dlib_rect(box: np.ndarray) -> dlib.rectangle:
    """``(4,)`` (left, top, right, bottom) edges -> dlib's inclusive integer rectangle."""
    left, top, right, bottom = (int(round(float(v))) for v in box)
    return dlib.rectangle(left, top, max(left, right - 1), max(top, bottom - 1))


# A detection must overlap the dataset's box at least this much (intersection over union) to be
# taken as that box's face; below it the dataset box itself is used.
MIN_PRIOR_IOU = 0.3


@dataclass(frozen=True)
class FaceDetection:
    """What the detector found in one image and which face was kept.

    box: ``(4,) float32`` (left, top, right, bottom) of the kept face in source pixels, or None
        when no (matching) face was found.
    faces: how many faces the detector found, kept or not.
    score: the detector's score of the kept face (HOG: the SVM margin, higher is surer); NaN when
        none was kept.
    undecided: several faces were found and nothing (no dataset box) said which person is meant,
        so the largest was kept.
    """

    box: np.ndarray | None
    faces: int = 0
    score: float = float("nan")
    undecided: bool = False


def detect_face(
    detector: dlib.fhog_object_detector,
    image: np.ndarray,
    upsample: int,
    prior_box: np.ndarray | None = None,
    min_face: int = 0,
) -> FaceDetection:
    """Run the HOG detector and keep one face: the one matching the dataset's box, else the largest.

    Args:
        detector: ``dlib.get_frontal_face_detector()``; one per thread (sharing one between
            threads crashes dlib).
        image: ``(H, W) uint8`` or ``(H, W, 3) uint8 RGB`` source image.
        upsample: times the image is doubled before detection (finds smaller faces, slower).
        prior_box: ``(4,)`` the dataset's box for the face meant (source pixels), or None. When
            given, the detection overlapping it most is kept, if its IoU reaches
            :data:`MIN_PRIOR_IOU`, so a photo with several people yields the annotated one.
        min_face: the smallest face side (pixels of ``image``) to find: the detector runs on a
            copy scaled by :func:`detection_scale` (area-averaged) and the boxes are mapped back
            to ``image``'s frame; 0: on ``image`` itself.

    Returns:
        A :class:`FaceDetection`; its box is None when no (matching) face is found. Without a prior
        the largest area wins; equal areas go to the higher score.
    """
    boxes, scores = detect_boxes(detector, image, upsample, min_face)
    if not boxes:
        return FaceDetection(None)
    if prior_box is not None and np.all(np.isfinite(prior_box)):
        overlaps = [box_iou(box, prior_box) for box in boxes]
        best = int(np.argmax(overlaps))
        if overlaps[best] < MIN_PRIOR_IOU:
            return FaceDetection(None, faces=len(boxes))
        return FaceDetection(boxes[best], faces=len(boxes), score=scores[best])
    best = largest_first(boxes, scores)[0]
    return FaceDetection(boxes[best], faces=len(boxes), score=scores[best], undecided=len(boxes) > 1)


def largest_first(boxes: list[np.ndarray], scores: list[float]) -> list[int]:
    """The indices of detected ``(4,)`` boxes, largest area first, then higher score (the first
    is the face :func:`detect_face` keeps without a dataset box)."""

    def area(box: np.ndarray) -> float:
        return float((box[2] - box[0]) * (box[3] - box[1]))

    return sorted(range(len(boxes)), key=lambda i: (area(boxes[i]), scores[i]), reverse=True)


def detect_boxes(
    detector: dlib.fhog_object_detector, image: np.ndarray, upsample: int, min_face: int = 0
) -> tuple[list[np.ndarray], list[float]]:
    """Every face the HOG detector finds: ``(4,) float32`` boxes in ``image``'s frame and their
    scores. With ``min_face`` it runs on a copy scaled by :func:`detection_scale`
    (area-averaged), the boxes mapped back."""
    image = np.ascontiguousarray(image)  # dlib's detector crashes (SIGSEGV) on a strided view
    height, width = image.shape[:2]
    factor = detection_scale(upsample, min_face)
    to_source = np.ones(4, np.float32)
    if factor < 1:
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        to_source = np.array([width / size[0], height / size[1]] * 2, dtype=np.float32)
    rects, scores, _ = detector.run(image, upsample, 0.0)
    return [box_from_dlib(rect) * to_source for rect in rects], [float(score) for score in scores]


# The side of the HOG detector's window: after upsampling, a face must span about this many pixels.
DETECTOR_WINDOW = 80
# How many windows a face of min_face pixels spans in the copy: HOG misses some faces at the edge
# of its range (at 1.0, 2 of the 21 faces of 111-327 px in bench/affectnet.py's photos; at 1.25 none).
MIN_FACE_MARGIN = 1.25


def detection_scale(upsample: int, min_face: int) -> float:
    """The factor (at most 1) an image is scaled by before detection at ``upsample`` so that a
    face of ``min_face`` pixels spans :data:`MIN_FACE_MARGIN` detector windows (1 for
    ``min_face`` 0)."""
    if min_face <= 0:
        return 1.0
    return min(1.0, MIN_FACE_MARGIN * DETECTOR_WINDOW / float(2**upsample) / min_face)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two ``(4,)`` (left, top, right, bottom) boxes, in [0, 1]."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return float(intersection / union) if union > 0 else 0.0


def full_frame_box(height: int, width: int) -> np.ndarray:
    """The whole image as a box: ``(4,) float32`` (0, 0, width, height)."""
    return np.array([0, 0, width, height], dtype=np.float32)


def clip_box(box: np.ndarray, height: int, width: int) -> np.ndarray | None:
    """Clip a ``(4,)`` box to the image; ``None`` if nothing of it (or NaN) is left."""
    if not np.all(np.isfinite(box)):
        return None
    left, top = max(0.0, float(box[0])), max(0.0, float(box[1]))
    right, bottom = min(float(width), float(box[2])), min(float(height), float(box[3]))
    if right - left < 1 or bottom - top < 1:
        return None
    return np.array([left, top, right, bottom], dtype=np.float32)
