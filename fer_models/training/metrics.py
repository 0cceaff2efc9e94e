"""Classification metrics from a confusion matrix."""

from __future__ import annotations

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
