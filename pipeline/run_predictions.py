"""A training run's per-sample predictions (``test_predictions.csv``): the file format that
training writes and the tools below it read (``fer-store view`` shows a run's predictions), so it
lives in the lower layer, which both may import, and needs neither torch nor OpenCV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Predictions:
    """Per scored sample, in the order scored: ``index`` (store indices), ``target`` and
    ``predicted`` (class indices; a soft target's most voted class), each ``(N,) int64``, and
    ``confidence``, the softmax probability of the predicted class, ``(N,) float32`` (None when
    read from a run written before it was recorded)."""

    index: np.ndarray
    target: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray | None = None

    def write_csv(self, path: Path) -> None:
        """``index,target,predicted,confidence``, one row per sample (``test_predictions.csv``)."""
        confidence = self.confidence if self.confidence is not None else np.full(len(self.index), np.nan)
        rows = zip(self.index.tolist(), self.target.tolist(), self.predicted.tolist(), confidence.tolist())
        path.write_text(
            "index,target,predicted,confidence\n" + "".join(f"{i},{t},{p},{c:.5f}\n" for i, t, p, c in rows)
        )

    @classmethod
    def read_csv(cls, path: Path) -> Predictions:
        """What :meth:`write_csv` wrote (also the three columns of runs written before confidences)."""
        values = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
        integers = values[:, :3].astype(np.int64)
        confidence = values[:, 3].astype(np.float32) if values.shape[1] > 3 else None
        return cls(integers[:, 0], integers[:, 1], integers[:, 2], confidence)
