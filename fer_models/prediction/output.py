"""fer-predict's files: one CSV row (and JSON object) per :class:`FacePrediction`.

Columns: ``source``, ``frame`` (empty for an image), ``face`` (empty where there is none),
``status``, ``message``, ``left``, ``top``, ``right``, ``bottom`` (the face's box in source
pixels), ``predicted`` (the class name), then one probability column per class, named by the
class, in the run's class order. Rows are written as they come, so a long video is written while
it is read.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fer_models.prediction.predictor import FacePrediction

FIXED_COLUMNS = ("source", "frame", "face", "status", "message", "left", "top", "right", "bottom", "predicted")


def write_predictions(
    rows: Iterable[FacePrediction], class_names: list[str], csv_path: str | Path, json_path: str | Path | None = None
) -> Counter[str]:
    """Write ``rows`` to ``csv_path`` (and as a JSON list to ``json_path``); returns the count of
    rows per status."""
    counts: Counter[str] = Counter()
    objects: list[dict[str, Any]] = []
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FIXED_COLUMNS, *class_names])
        for row in rows:
            counts[row.status] += 1
            writer.writerow(_csv_cells(row, len(class_names)))
            if json_path is not None:
                objects.append(_json_object(row, class_names))
    if json_path is not None:
        Path(json_path).write_text(json.dumps(objects, indent=1) + "\n", encoding="utf-8")
    return counts


def _csv_cells(row: FacePrediction, classes: int) -> list[str]:
    box = [f"{value:.1f}" for value in row.box] if row.box is not None else [""] * 4
    probabilities = [f"{p:.6f}" for p in row.probabilities] if row.probabilities is not None else [""] * classes
    optional = ["" if value is None else str(value) for value in (row.frame, row.face)]
    return [row.source, *optional, row.status, row.message, *box, row.predicted or "", *probabilities]


def _json_object(row: FacePrediction, class_names: list[str]) -> dict[str, Any]:
    return {
        "source": row.source,
        "frame": row.frame,
        "face": row.face,
        "status": row.status,
        "message": row.message,
        "box": None if row.box is None else list(row.box),
        "predicted": row.predicted,
        "probabilities": None if row.probabilities is None else dict(zip(class_names, row.probabilities, strict=True)),
    }
