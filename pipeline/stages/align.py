"""How a source face becomes the ``(S, S)`` aligned image: the three alignment modes.

- ``similarity``: this project's template places the centres of both eyes and of the outer lips
  at fixed fractions of the aligned crop (measured on dlib's 68-point output so that brows, jaw
  and chin fit inside the crop with a margin). A least-squares similarity (rotation, uniform
  scale, translation; Umeyama 1991) maps those three source points onto the template.
- ``arcface``: the same least-squares similarity from five points (eye centres, nose tip, mouth
  corners) onto the ArcFace template (insightface's ``arcface_src`` for 112 x 112, scaled to S),
  the framing face-recognition backbones are trained on.
- ``crop``: no warp; the whole source image is resized to S x S (a dataset distributed as face
  crops keeps its own crop). ``aligned_from_src`` is the scaling; a source that is not square is
  stretched to the square, as resizing to (S, S) does in the datasets' own training code.

Transforms are ``(2, 3) float32`` affine matrices in the pixel-corner frame named by the frames
they map: ``aligned_from_src @ [x, y, 1]`` gives aligned pixels from source pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.landmark_scheme import LEFT_EYE, MOUTH_CORNERS, NOSE_TIP, OUTER_LIPS, RIGHT_EYE

# (x, y) as fractions of the aligned side S: subject's right eye (image left), left eye, mouth.
TEMPLATE_FRACTIONS = np.array([[0.34, 0.33], [0.66, 0.33], [0.50, 0.687]], dtype=np.float64)
# insightface's arcface_src (python-package/insightface/utils/face_align.py), pixels of a 112 x 112
# crop: subject's right eye (image left), left eye, nose tip, right and left mouth corners.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def inter_ocular_distance(points: np.ndarray) -> float:
    """The distance between the eye centres (the means of the iBUG eye points) of ``(68, 2)``
    landmarks, in their pixels."""
    return float(np.linalg.norm(points[RIGHT_EYE].mean(0) - points[LEFT_EYE].mean(0)))


def anchor_points(landmarks: np.ndarray) -> np.ndarray:
    """``(68, 2)`` landmarks -> ``(3, 2) float64``: right-eye, left-eye and outer-lip centres."""
    points = np.asarray(landmarks, dtype=np.float64)
    return np.stack([points[RIGHT_EYE].mean(0), points[LEFT_EYE].mean(0), points[OUTER_LIPS].mean(0)])


def similarity_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity mapping ``src`` points onto ``dst`` points.

    Args:
        src, dst: ``(K, 2)`` corresponding (x, y) points, K >= 2, not all coincident.

    Returns:
        ``(2, 3) float64`` matrix ``[[a, -b, tx], [b, a, ty]]`` minimising the squared distances.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    p, q = src - src_mean, dst - dst_mean
    norm = float((p**2).sum())
    if norm < 1e-12:
        raise ValueError("source points coincide; no similarity transform exists")
    a = float((p * q).sum()) / norm
    b = float((p[:, 0] * q[:, 1] - p[:, 1] * q[:, 0]).sum()) / norm
    linear = np.array([[a, -b], [b, a]])
    translation = dst_mean - linear @ src_mean
    return np.hstack([linear, translation[:, None]])


def aligned_from_src_matrix(landmarks_src: np.ndarray, size: int) -> np.ndarray:
    """The template alignment for one face.

    Args:
        landmarks_src: ``(68, 2)`` (x, y) source pixels.
        size: S, side of the aligned crop in pixels.

    Returns:
        ``(2, 3) float32`` ``aligned_from_src``.
    """
    return similarity_from_points(anchor_points(landmarks_src), TEMPLATE_FRACTIONS * size).astype(np.float32)


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """``(68, 2)`` landmarks -> ``(5, 2) float64``: right-eye and left-eye centres, nose tip, right
    and left mouth corners (the order of :data:`ARCFACE_TEMPLATE_112`)."""
    points = np.asarray(landmarks, dtype=np.float64)
    eyes = [points[RIGHT_EYE].mean(0), points[LEFT_EYE].mean(0)]
    return np.stack([*eyes, points[NOSE_TIP], points[MOUTH_CORNERS[0]], points[MOUTH_CORNERS[1]]])


def crop_scaling(height: int, width: int, size: int) -> np.ndarray:
    """``(2, 3) float32`` ``aligned_from_src`` of the ``crop`` mode: a ``(height, width)`` source
    resized to ``(S, S)``."""
    return np.array([[size / width, 0, 0], [0, size / height, 0]], dtype=np.float32)


def aligned_from_src_for(mode: str, landmarks_src: np.ndarray, image_shape: tuple[int, ...], size: int) -> np.ndarray:
    """The alignment of one face in a mode (``crop``, ``similarity`` or ``arcface``).

    Args:
        mode: :data:`pipeline.config.ALIGN_MODES`.
        landmarks_src: ``(68, 2)`` (x, y) source pixels.
        image_shape: the source's ``(H, W)`` or ``(H, W, C)``.
        size: S.

    Returns:
        ``(2, 3) float32`` ``aligned_from_src``.
    """
    if mode == "crop":
        return crop_scaling(image_shape[0], image_shape[1], size)
    if mode == "arcface":
        template = ARCFACE_TEMPLATE_112 * (size / 112)
        return similarity_from_points(five_points(landmarks_src), template).astype(np.float32)
    if mode == "similarity":
        return aligned_from_src_matrix(landmarks_src, size)
    raise ValueError(f"unknown align mode {mode!r}")


def resample_to_aligned(image: np.ndarray, aligned_from_src: np.ndarray, size: int, mode: str) -> np.ndarray:
    """The aligned image of :func:`aligned_from_src_for`'s transform: ``crop`` resizes (area
    averaging when it shrinks, bilinear when it enlarges; a 48-pixel source at S = 48 is copied
    unchanged), the other modes warp (:func:`warp_to_aligned`).

    Args:
        image: ``(H, W) uint8`` or ``(H, W, C) uint8`` source image.

    Returns:
        ``(S, S) or (S, S, C) uint8``.
    """
    if mode != "crop":
        return warp_to_aligned(image, aligned_from_src, size)
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image.copy()
    shrinks = size < height or size < width
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinks else cv2.INTER_LINEAR)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``(K, 2)`` points through a ``(2, 3)`` affine; returns ``(K, 2) float32``."""
    points = np.asarray(points, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    mapped: np.ndarray = (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
    return mapped


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a ``(2, 3)`` affine (e.g. ``src_from_aligned`` from ``aligned_from_src``)."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64)).astype(np.float32)


def warp_to_aligned(image: np.ndarray, aligned_from_src: np.ndarray, size: int) -> np.ndarray:
    """Resample the aligned crop.

    Args:
        image: ``(H, W) uint8`` or ``(H, W, C) uint8`` source image.
        aligned_from_src: ``(2, 3)`` affine in the pixel-corner frame.
        size: S.

    Returns:
        ``(S, S) or (S, S, C) uint8``; pixels mapping outside the source are 0. When the crop
        shrinks the face by more than 2x, the source is first reduced by an integer factor with
        area averaging, so the result does not alias.
    """
    matrix = np.asarray(aligned_from_src, dtype=np.float64)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    factor = int(1.0 / scale) if scale < 0.5 else 1
    if factor > 1:
        height, width = image.shape[:2]
        reduced = (max(1, round(width / factor)), max(1, round(height / factor)))
        # The reduced image maps source corner-frame points p to p * (reduced / original).
        ratio = np.array([reduced[0] / width, reduced[1] / height])
        image = cv2.resize(image, reduced, interpolation=cv2.INTER_AREA)
        matrix = np.hstack([matrix[:, :2] / ratio[None, :], matrix[:, 2:]])
    # OpenCV puts pixel centres at integer coordinates: shift both frames by half a pixel.
    linear, translation = matrix[:, :2], matrix[:, 2]
    opencv_translation = translation + linear @ np.array([0.5, 0.5]) - 0.5
    opencv_matrix = np.hstack([linear, opencv_translation[:, None]])
    return cv2.warpAffine(
        image,
        opencv_matrix,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
