"""Landmarks made for tests."""

from __future__ import annotations

import numpy as np

from pipeline.stages.align import TEMPLATE_FRACTIONS


def synthetic_landmarks(scale=1.0, angle=0.0, offset=(0.0, 0.0)) -> np.ndarray:
    """68 points whose anchors (eye and mouth centres) sit on the template at S = 100, then moved
    by a known similarity."""
    rng = np.random.default_rng(1)
    points = rng.uniform(20, 80, size=(68, 2))
    template = TEMPLATE_FRACTIONS * 100
    for indices, target in zip((range(36, 42), range(42, 48), range(48, 60)), template):
        points[list(indices)] += target - points[list(indices)].mean(0)
    c, s = np.cos(angle), np.sin(angle)
    return (points @ (scale * np.array([[c, -s], [s, c]])).T + offset).astype(np.float32)


def relative_distances(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``(n,)``: the mean distance of ``other``'s 68 landmarks to ``reference``'s (both ``(n, 68,
    2)``, or one face ``(68, 2)``) over the inter-ocular distance (between the eye centres) of
    ``reference``: how the tests and bench/affectnet.py compare two ways of placing landmarks."""
    reference, other = np.asarray(reference).reshape(-1, 68, 2), np.asarray(other).reshape(-1, 68, 2)
    inter_ocular = np.linalg.norm(reference[:, 36:42].mean(1) - reference[:, 42:48].mean(1), axis=1)
    return np.linalg.norm(reference - other, axis=2).mean(1) / inter_ocular
