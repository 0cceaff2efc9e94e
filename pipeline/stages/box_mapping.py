"""Dataset face boxes in the framing dlib's shape predictor expects.

dlib's 68-point predictor was trained on faces framed by its HOG detector, and its landmarks move
when a box frames the face otherwise (tighter, looser, higher). A dataset's own boxes come from
other detectors or annotators, so before they can stand in for a detection they are mapped: the
box's centre moves by a share of its width and height, and its sides are scaled.
:func:`fit_box_mapping` measures that mapping on faces where both boxes exist (the median of each
ratio, robust to a few mismatched detections).

Boxes are ``(left, top, right, bottom)`` float32 edges in source pixels (see
:mod:`pipeline.stages.detect`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Fewer matched faces than this and the fit is not trusted: the identity mapping is used.
MIN_FIT_FACES = 8


@dataclass(frozen=True)
class BoxMapping:
    """``mapped centre = centre + (shift_x * width, shift_y * height)``, ``mapped sides =
    (scale_x * width, scale_y * height)``; ``fitted_on`` faces measured it, out of ``tried``
    (0 of any: the identity, unfitted)."""

    scale_x: float = 1.0
    scale_y: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    fitted_on: int = 0
    tried: int = 0

    def apply(self, box: np.ndarray) -> np.ndarray:
        """The dataset ``box`` ``(4,)`` mapped to dlib's framing, ``(4,) float32`` source pixels."""
        left, top, right, bottom = (float(v) for v in box)
        width, height = right - left, bottom - top
        centre_x = (left + right) / 2 + self.shift_x * width
        centre_y = (top + bottom) / 2 + self.shift_y * height
        half_width, half_height = self.scale_x * width / 2, self.scale_y * height / 2
        return np.array(
            [centre_x - half_width, centre_y - half_height, centre_x + half_width, centre_y + half_height],
            dtype=np.float32,
        )

    def to_attrs(self) -> dict[str, Any]:
        return {
            "scale": [self.scale_x, self.scale_y],
            "shift": [self.shift_x, self.shift_y],
            "fitted_on": self.fitted_on,
            "tried": self.tried,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> BoxMapping:
        (scale_x, scale_y), (shift_x, shift_y) = attrs["scale"], attrs["shift"]
        return cls(float(scale_x), float(scale_y), float(shift_x), float(shift_y), attrs["fitted_on"], attrs["tried"])

    def __str__(self) -> str:
        if not self.fitted_on:
            return f"the identity (no fit: {self.tried} faces tried)"
        return (
            f"sides x{self.scale_x:.3f}, x{self.scale_y:.3f}, centre moved by {self.shift_x:+.3f} of the width and "
            f"{self.shift_y:+.3f} of the height (fitted on {self.fitted_on} of {self.tried} faces)"
        )


def fit_box_mapping(dataset_boxes: np.ndarray, detector_boxes: np.ndarray, tried: int) -> BoxMapping:
    """The mapping from ``dataset_boxes`` to ``detector_boxes`` (both ``(n, 4)``, row i the same
    face), the median of each ratio; the identity when fewer than :data:`MIN_FIT_FACES` pairs.

    Args:
        tried: how many faces were tried (recorded beside the ``n`` that matched).
    """
    n = len(dataset_boxes)
    if n < MIN_FIT_FACES:
        return BoxMapping(tried=tried)
    ours, theirs = np.asarray(dataset_boxes, np.float64), np.asarray(detector_boxes, np.float64)
    width, height = ours[:, 2] - ours[:, 0], ours[:, 3] - ours[:, 1]
    shift_x = ((theirs[:, 0] + theirs[:, 2]) - (ours[:, 0] + ours[:, 2])) / 2 / width
    shift_y = ((theirs[:, 1] + theirs[:, 3]) - (ours[:, 1] + ours[:, 3])) / 2 / height
    scale_x = (theirs[:, 2] - theirs[:, 0]) / width
    scale_y = (theirs[:, 3] - theirs[:, 1]) / height

    def median(ratio: np.ndarray) -> float:
        return round(float(np.median(ratio)), 4)

    return BoxMapping(median(scale_x), median(scale_y), median(shift_x), median(shift_y), fitted_on=n, tried=tried)
