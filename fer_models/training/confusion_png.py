"""A confusion matrix as a PNG a person can read at a glance.

OpenCV is imported when a figure is drawn, not with the module: training loads it only to draw
its figures once a run ends (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CELL = 64
MARGIN = 120


def render_confusion(confusion: np.ndarray, class_names: tuple[str, ...] | list[str], title: str = "") -> np.ndarray:
    """Draw a ``(K, K)`` confusion matrix (rows true classes, columns predicted).

    Each cell shows its count and its share of the row (recall on the diagonal), shaded by that
    share. Returns ``(MARGIN + 24 + K*CELL, MARGIN + K*CELL, 3) uint8`` RGB.
    """
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    k = len(class_names)
    rows = confusion.sum(1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros(confusion.shape, float), where=rows > 0)
    height, width = MARGIN + 24 + k * CELL, MARGIN + k * CELL
    image = np.full((height, width, 3), 255, np.uint8)
    top = MARGIN + 24
    cv2.putText(image, title[: width // 8], (8, 18), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, "predicted ->", (MARGIN, 40), font, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    cv2.putText(image, "true", (8, top - 6), font, 0.4, (90, 90, 90), 1, cv2.LINE_AA)
    for i, name in enumerate(class_names):
        short = str(name)[:12]
        cv2.putText(image, short, (8, top + i * CELL + CELL // 2 + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        label = np.full((CELL, MARGIN - 50, 3), 255, np.uint8)  # column names written upwards
        cv2.putText(label, short, (4, CELL // 2 + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        image[50:MARGIN, MARGIN + i * CELL : MARGIN + (i + 1) * CELL] = np.rot90(label)[: MARGIN - 50, :CELL]
    for i in range(k):
        for j in range(k):
            shade = int(255 - 200 * share[i, j])
            colour = (shade, shade, 255) if i != j else (shade, 255, shade)
            y, x = top + i * CELL, MARGIN + j * CELL
            cv2.rectangle(image, (x, y), (x + CELL - 1, y + CELL - 1), colour, -1)
            cv2.rectangle(image, (x, y), (x + CELL - 1, y + CELL - 1), (200, 200, 200), 1)
            text = (0, 0, 0) if share[i, j] < 0.6 else (255, 255, 255)
            cv2.putText(image, str(int(confusion[i, j])), (x + 6, y + 26), font, 0.45, text, 1, cv2.LINE_AA)
            cv2.putText(image, f"{100 * share[i, j]:.0f}%", (x + 6, y + 48), font, 0.4, text, 1, cv2.LINE_AA)
    return image


def write_confusion_png(
    confusion: np.ndarray, class_names: tuple[str, ...] | list[str], path: str | Path, title: str = ""
) -> Path:
    """Write :func:`render_confusion` to ``path``; returns the path."""
    import cv2

    path = Path(path)
    cv2.imwrite(str(path), cv2.cvtColor(render_confusion(np.asarray(confusion), class_names, title), cv2.COLOR_RGB2BGR))
    return path
