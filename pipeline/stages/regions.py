"""Local region boxes for region networks: a fixed set of facial regions in aligned pixels.

Each region is a rectangle centred on the mean of some landmarks, sized in units of the
inter-ocular distance (IOD, between the two eye centres), so it covers the same part of every
face whatever the crop size; boxes are clipped to the S x S crop.

| region | centred on (iBUG indices) | width x height (IOD) |
|---|---|---|
| right_eye | right eye and right brow, 17-21 and 36-41 | 0.9 x 0.8 |
| left_eye | left eye and left brow, 22-26 and 42-47 | 0.9 x 0.8 |
| nose | nose bridge and lower nose, 27-35 | 0.7 x 0.9 |
| mouth | outer lips, 48-59 | 1.2 x 0.7 |
| right_cheek | jaw 2-4, right mouth corner 48, right nostril 31 | 0.6 x 0.6 |
| left_cheek | jaw 12-14, left mouth corner 54, left nostril 35 | 0.6 x 0.6 |

"right" is the subject's right (the image's left), as in the iBUG scheme.
"""

from __future__ import annotations

import numpy as np

from pipeline.landmark_scheme import LEFT_BROW, LEFT_EYE, OUTER_LIPS, RIGHT_BROW, RIGHT_EYE

REGIONS: dict[str, tuple[tuple[int, ...], float, float]] = {
    "right_eye": ((*RIGHT_BROW, *RIGHT_EYE), 0.9, 0.8),
    "left_eye": ((*LEFT_BROW, *LEFT_EYE), 0.9, 0.8),
    "nose": (tuple(range(27, 36)), 0.7, 0.9),
    "mouth": (tuple(OUTER_LIPS), 1.2, 0.7),
    "right_cheek": ((2, 3, 4, 48, 31), 0.6, 0.6),
    "left_cheek": ((14, 13, 12, 54, 35), 0.6, 0.6),
}
# A horizontal flip swaps right and left regions: flipped region i is original region REGION_FLIP[i].
REGION_FLIP = np.array([1, 0, 2, 3, 5, 4])


def region_boxes(landmarks: np.ndarray, aligned_size: int) -> np.ndarray:
    """Boxes of the :data:`REGIONS` of one face.

    Args:
        landmarks: ``(68, 2)`` (x, y) in aligned pixels (corner frame).
        aligned_size: S; boxes are clipped to [0, S].

    Returns:
        ``(6, 4) float32`` (left, top, right, bottom) in aligned pixels, in :data:`REGIONS` order.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    iod = float(np.linalg.norm(points[list(LEFT_EYE)].mean(0) - points[list(RIGHT_EYE)].mean(0)))
    boxes = np.empty((len(REGIONS), 4), dtype=np.float64)
    for i, (indices, width, height) in enumerate(REGIONS.values()):
        cx, cy = points[list(indices)].mean(axis=0)
        boxes[i] = (cx - width * iod / 2, cy - height * iod / 2, cx + width * iod / 2, cy + height * iod / 2)
    return np.clip(boxes, 0.0, float(aligned_size)).astype(np.float32)
