"""``rafdb`` and ``rafdb-original``: RAF-DB basic (Li et al. 2017), 7 expression classes.

Layout as distributed (the basic set's root)::

    <root>/EmoLabel/list_patition_label.txt     lines "train_00001.jpg 5" (the file's own spelling)
    <root>/Image/aligned/train_00001_aligned.jpg     100x100 aligned faces   -> ``rafdb``
    <root>/Image/original/train_00001.jpg            the original photos     -> ``rafdb-original``

Labels 1-7 in the file are Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral (stored as
0-6). Splits from the name prefix: ``train``, ``test``. The aligned faces are pre-cropped, so
``rafdb`` falls back to the full frame; ``rafdb-original`` detects faces in the photos.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.datasets.label_sets import LabelSet
from pipeline.datasets.manifest import Manifest
from pipeline.datasets.paths import FilesUnderRoot, require_directory
from pipeline.datasets.tables import malformed, not_utf8, require_file
from pipeline.errors import DatasetError

LABEL_NAMES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
SPLITS = ("train", "test")
LABEL_FILE = "EmoLabel/list_patition_label.txt"
LABEL_SETS = (
    LabelSet.identity("7", LABEL_NAMES),
    LabelSet.from_labels(
        "polarity",
        LABEL_NAMES,
        {"negative": ("fear", "disgust", "sadness", "anger"), "neutral": ("neutral",), "positive": ("happiness",)},
    ),
)
_LINE = re.compile(r"^(train|test)_(\d+)\.jpg$")


@dataclass(frozen=True)
class LabelLine:
    """One line of ``list_patition_label.txt``: the image stem (None where the line names no
    image), the label 0-6 (-1 unknown), the split index, and why the line cannot be used ("" if it
    can)."""

    stem: str | None
    label: int
    split: int
    problem: str
    line: int


def scan_label_file(path: Path, shown_as: Path | None = None) -> list[LabelLine]:
    """Every non-blank line of ``list_patition_label.txt``. A line that is not
    ``<train|test>_<number>.jpg <1-7>`` is kept with its problem (file and line named, the file
    as ``shown_as``: a path that is the same on every machine keeps the manifest hash so), to be
    stored as a ``failed`` sample; the other lines go on.

    Raises:
        DatasetError: no line at all.
    """
    lines, shown = [], shown_as or path
    try:
        text_lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    for number, text in enumerate(text_lines, start=1):
        if not text.strip():
            continue
        parts = text.split()
        match = _LINE.match(parts[0]) if len(parts) == 2 else None
        if match is None:
            problem = malformed(shown, number, f"expected '<train|test>_<number>.jpg <label 1-7>', got {text!r}")
            lines.append(LabelLine(None, -1, 0, str(problem), number))
            continue
        stem, split = parts[0].removesuffix(".jpg"), SPLITS.index(match.group(1))
        if parts[1] not in {str(code) for code in range(1, 8)}:
            problem = malformed(shown, number, f"unknown label {parts[1]!r}; RAF-DB basic labels are 1-7", "label")
            lines.append(LabelLine(stem, -1, split, str(problem), number))
            continue
        lines.append(LabelLine(stem, int(parts[1]) - 1, split, "", number))
    if not lines:
        raise malformed(path, 1, "no labelled images in the file")
    return lines


class RafDbDataset(FilesUnderRoot):
    """RAF-DB basic, reading either the aligned faces or the original photos."""

    def __init__(self, images: str):
        self.images = images
        self.name = "rafdb" if images == "aligned" else "rafdb-original"
        if images == "aligned":
            # The aligned faces are the dataset's own 100x100 crops, kept as they are.
            self.config_defaults: dict[str, dict[str, Any]] = {
                "detect": {"prior": "full-frame"},
                "align": {"mode": "crop", "size": 100},
            }
        else:
            self.config_defaults = {}

    def _source(self, stem: str) -> str:
        return f"Image/aligned/{stem}_aligned.jpg" if self.images == "aligned" else f"Image/original/{stem}.jpg"

    def scan(self, root: Path | None) -> Manifest:
        root = require_directory(root, self.name)
        label_file = require_file(
            root / LABEL_FILE,
            "RAF-DB's label list; DATA_ROOT must be the basic set's folder holding EmoLabel/ and Image/",
        )
        image_dir = root / "Image" / self.images
        if not image_dir.is_dir():
            other = "rafdb-original" if self.images == "aligned" else "rafdb"
            raise DatasetError(
                f"{image_dir} not found: the {self.name} dataset reads Image/{self.images}/ "
                f"(for the other image folder use --dataset {other})"
            )
        lines = scan_label_file(label_file, Path(LABEL_FILE))
        skip = tuple(line.problem for line in lines)
        return Manifest(
            dataset=self.name,
            label_names=LABEL_NAMES,
            splits=SPLITS,
            source=tuple(self._source(line.stem) if line.stem else f"{LABEL_FILE}, line {line.line}" for line in lines),
            label=np.array([line.label for line in lines]),
            split=np.array([line.split for line in lines]),
            skip=skip if any(skip) else None,
            label_sets=LABEL_SETS,
        )
