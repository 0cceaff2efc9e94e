"""Face boxes: dlib's HOG frontal face detector, and the prior boxes used when it finds none.

Boxes are ``(left, top, right, bottom)`` float32 in source pixels, edges in the pixel-corner frame
(see :mod:`pipeline.stages`): a box covering pixel columns 10..19 has left 10 and right 20. dlib
rectangles are inclusive (right = left + width - 1); :func:`box_from_dlib` and :func:`dlib_rect`
convert.
"""

from __future__ import annotations

import dlib
import numpy as np


def box_from_dlib(rect: "dlib.rectangle") -> np.ndarray:
    """dlib's inclusive rectangle -> ``(4,) float32`` (left, top, right, bottom) edges."""
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float32)


def dlib_rect(box: np.ndarray) -> "dlib.rectangle":
    """``(4,)`` (left, top, right, bottom) edges -> dlib's inclusive integer rectangle."""
    left, top, right, bottom = (int(round(float(v))) for v in box)
    return dlib.rectangle(left, top, max(left, right - 1), max(top, bottom - 1))


def detect_largest_face(
    detector: "dlib.fhog_object_detector", image: np.ndarray, upsample: int
) -> np.ndarray | None:
    """Run the HOG detector and keep the largest face.

    Args:
        detector: ``dlib.get_frontal_face_detector()``; one per thread (sharing one between
            threads crashes dlib).
        image: ``(H, W) uint8`` or ``(H, W, 3) uint8 RGB`` source image.
        upsample: times the image is doubled before detection (finds smaller faces, slower).

    Returns:
        ``(4,) float32`` box (left, top, right, bottom) in source pixels, or ``None`` when no face
        is found. Among several faces the largest area wins; equal areas go to the higher score.
    """
    rects, scores, _ = detector.run(image, upsample, 0.0)
    if len(rects) == 0:
        return None
    best = max(range(len(rects)), key=lambda i: (rects[i].area(), scores[i]))
    return box_from_dlib(rects[best])


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
