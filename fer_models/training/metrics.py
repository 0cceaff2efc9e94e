"""Classification metrics from a confusion matrix, and the records of a model's scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def confusion_matrix(target: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K) int64``; rows are true classes, columns predicted classes."""
    return np.bincount(target * num_classes + predicted, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy(confusion: np.ndarray) -> float:
    return float(np.trace(confusion) / max(confusion.sum(), 1))


def macro_f1(confusion: np.ndarray) -> float:
    """Mean F1 over the classes that occur in the targets or the predictions."""
    true_positive = np.diag(confusion).astype(float)
    support, predicted = confusion.sum(1), confusion.sum(0)
    present = (support + predicted) > 0
    f1 = 2 * true_positive[present] / (support[present] + predicted[present])
    return float(f1.mean()) if present.any() else 0.0


@dataclass(frozen=True)
class Predictions:
    """Per scored sample, in the order scored: ``index`` (store indices), ``target`` and
    ``predicted`` (class indices; a soft target's most voted class), each ``(N,) int64``."""

    index: np.ndarray
    target: np.ndarray
    predicted: np.ndarray

    def write_csv(self, path: Path) -> None:
        """``index,target,predicted``, one row per sample (``test_predictions.csv``)."""
        rows = zip(self.index.tolist(), self.target.tolist(), self.predicted.tolist())
        path.write_text("index,target,predicted\n" + "".join(f"{i},{t},{p}\n" for i, t, p in rows))

    @classmethod
    def read_csv(cls, path: Path) -> Predictions:
        """What :meth:`write_csv` wrote."""
        values = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
        return cls(values[:, 0], values[:, 1], values[:, 2])


@dataclass(frozen=True)
class Scores:
    """A model's scores on a selection: mean cross-entropy ``loss``, the ``(K, K) int64``
    ``confusion`` matrix (rows true classes) and the per-sample :class:`Predictions`."""

    loss: float
    confusion: np.ndarray
    predictions: Predictions

    @property
    def accuracy(self) -> float:
        return accuracy(self.confusion)

    @property
    def macro_f1(self) -> float:
        return macro_f1(self.confusion)

    def to_dict(self) -> dict[str, Any]:
        """``loss``, ``accuracy``, ``macro_f1`` and ``confusion`` (nested lists), as JSON holds them."""
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "confusion": self.confusion.tolist(),
        }
