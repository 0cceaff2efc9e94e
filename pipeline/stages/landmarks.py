"""68 facial landmarks with dlib's shape predictor, in the iBUG 68-point scheme
(:mod:`pipeline.landmark_scheme`)."""

from __future__ import annotations

import dlib
import numpy as np

from pipeline.stages.detect import dlib_rect


def predict_landmarks(predictor: dlib.shape_predictor, image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Place the 68 landmarks inside a face box.

    Args:
        predictor: ``dlib.shape_predictor`` loaded from the 68-point model.
        image: ``(H, W) uint8`` or ``(H, W, 3) uint8 RGB`` source image.
        box: ``(4,) float32`` (left, top, right, bottom) edges in source pixels.

    Returns:
        ``(68, 2) float32`` (x, y) in source pixels, pixel-corner frame (dlib's integer pixel
        coordinates + 0.5).
    """
    shape = predictor(image, dlib_rect(box))
    points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
    return points + np.float32(0.5)
