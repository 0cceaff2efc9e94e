"""Landmark masks for guided spatial transformers (Luna-Jimenez et al. 2021)."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from pipeline.landmark_scheme import (
    INNER_LIPS,
    JAW,
    LEFT_BROW,
    LEFT_EYE,
    LOWER_NOSE,
    NOSE_BRIDGE,
    OUTER_LIPS,
    RIGHT_BROW,
    RIGHT_EYE,
)

# Regions filled as the convex hull of their landmarks, each with its own fill call: one call
# with overlapping polygons (mouth and inner mouth) would cancel the overlap and leave holes.
FILLED_REGIONS: dict[str, tuple[int, ...]] = {
    "right_brow": tuple(RIGHT_BROW),
    "left_brow": tuple(LEFT_BROW),
    "right_eye": tuple(RIGHT_EYE),
    "left_eye": tuple(LEFT_EYE),
    "nose": tuple(NOSE_BRIDGE) + tuple(LOWER_NOSE),
    "mouth": tuple(OUTER_LIPS),
    "inner_mouth": tuple(INNER_LIPS),
}
SOFT_BACKGROUND = 128
_SUBPIXEL_BITS = 4


def _to_opencv_points(points: np.ndarray) -> np.ndarray:
    """Corner-frame guidance pixels -> OpenCV's fixed-point, centre-at-integer coordinates."""
    return np.round((points - 0.5) * (1 << _SUBPIXEL_BITS)).astype(np.int32)


def _filled_regions(
    landmarks: np.ndarray,
    aligned_size: int,
    guidance_size: int,
    groups: Iterable[tuple[int, ...]] | None = None,
) -> np.ndarray:
    """``(H, H) uint8`` {0, 255}: the convex hull of each group of landmark indices (by default
    every :data:`FILLED_REGIONS` entry), filled."""
    groups = FILLED_REGIONS.values() if groups is None else groups
    points = np.asarray(landmarks, dtype=np.float64) * (guidance_size / aligned_size)
    mask = np.zeros((guidance_size, guidance_size), dtype=np.uint8)
    for indices in groups:
        hull = cv2.convexHull(_to_opencv_points(points[list(indices)]))
        cv2.fillPoly(mask, [hull], 255, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return mask


def render_binary_landmark_mask(landmarks: np.ndarray, aligned_size: int, guidance_size: int) -> np.ndarray:
    """Filled brows, eyes, nose, mouth and inner mouth plus the jaw line, white on black.

    Args:
        landmarks: ``(68, 2)`` (x, y) in aligned pixels.
        aligned_size: S.
        guidance_size: H; the mask covers the same square as the S x S crop.

    Returns:
        ``(H, H) uint8`` with values {0, 255}. The jaw is a polyline about H/64 pixels thick
        (at least 1).
    """
    mask = _filled_regions(landmarks, aligned_size, guidance_size)
    points = np.asarray(landmarks, dtype=np.float64) * (guidance_size / aligned_size)
    thickness = max(1, round(guidance_size / 64))
    jaw = _to_opencv_points(points[list(JAW)])
    cv2.polylines(mask, [jaw], False, 255, thickness, cv2.LINE_8, _SUBPIXEL_BITS)
    return mask


def soften_mask(binary_mask: np.ndarray) -> np.ndarray:
    """Guided-STN soft mask: mask pixels stay 255, the background becomes 128.

    Args:
        binary_mask: ``(H, H) uint8`` {0, 255}.

    Returns:
        ``(H, H) uint8`` {128, 255}.
    """
    return np.where(binary_mask > 0, np.uint8(255), np.uint8(SOFT_BACKGROUND)).astype(np.uint8)


def render_dilated_landmark_mask(landmarks: np.ndarray, aligned_size: int, guidance_size: int) -> np.ndarray:
    """Guided-STN dilated mask: the filled regions of the binary mask without the jaw line,
    dilated by an elliptical kernel of about H/14 pixels (9 pixels at H = 112), so the regions grow
    into the skin around them.

    Args:
        landmarks: ``(68, 2)`` (x, y) in aligned pixels.
        aligned_size: S.
        guidance_size: H.

    Returns:
        ``(H, H) uint8`` with values {0, 255}.
    """
    mask = _filled_regions(landmarks, aligned_size, guidance_size)
    side = max(3, 2 * round(guidance_size / 28) + 1)  # odd, so the kernel is centred
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    return cv2.dilate(mask, kernel)


def render_face_hull_mask(landmarks: np.ndarray, aligned_size: int, guidance_size: int) -> np.ndarray:
    """The face region: the filled convex hull of all 68 landmarks (FERAtt's face-on-black target
    is the image times this mask).

    Args:
        landmarks: ``(68, 2)`` (x, y) in aligned pixels.
        aligned_size: S.
        guidance_size: H.

    Returns:
        ``(H, H) uint8`` with values {0, 255}.
    """
    return _filled_regions(landmarks, aligned_size, guidance_size, groups=[tuple(range(len(landmarks)))])
