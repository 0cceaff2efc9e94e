"""Classification metrics from a confusion matrix, and the record of a model's scores (its
predictions are :class:`pipeline.run_predictions.Predictions`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from pipeline.run_predictions import Predictions


class ScoreFigures(TypedDict):
    """An evaluation's figures as JSON holds them: the mean loss, accuracy and macro-F1 as
    fractions, and the ``(K, K)`` confusion matrix (rows true classes, columns predicted)."""

    loss: float
    accuracy: float
    macro_f1: float
    confusion: list[list[int]]


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
class Scores:
    """A model's scores on a selection: mean cross-entropy ``loss``, the ``(K, K) int64``
    ``confusion`` matrix (rows true classes) and the per-sample :class:`Predictions`."""

    loss: float
    confusion: np.ndarray
    predictions: Predictions

    @classmethod
    def combined(cls, shares: list[Scores]) -> Scores:
        """The scores of one evaluation from those of its shares (each process's, in rank order)."""
        samples = [len(share.predictions.index) for share in shares]
        confidences = [share.predictions.confidence for share in shares]
        return cls(
            loss=sum(share.loss * n for share, n in zip(shares, samples, strict=True)) / max(sum(samples), 1),
            confusion=np.sum([share.confusion for share in shares], axis=0),
            predictions=Predictions(
                np.concatenate([share.predictions.index for share in shares]),
                np.concatenate([share.predictions.target for share in shares]),
                np.concatenate([share.predictions.predicted for share in shares]),
                None if any(c is None for c in confidences) else np.concatenate(confidences),  # type: ignore[arg-type]
            ),
        )

    @property
    def accuracy(self) -> float:
        return accuracy(self.confusion)

    @property
    def macro_f1(self) -> float:
        return macro_f1(self.confusion)

    def to_dict(self) -> ScoreFigures:
        """``loss``, ``accuracy``, ``macro_f1`` and ``confusion`` (nested lists), as JSON holds them."""
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "confusion": self.confusion.tolist(),
        }
