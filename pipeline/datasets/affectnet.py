"""``affectnet``: AffectNet (Mollahosseini et al. 2017), manually annotated part.

Layout as distributed::

    <root>/Manually_Annotated_file_lists/training.csv      -> split train
    <root>/Manually_Annotated_file_lists/validation.csv    -> split val (header optional)
    <root>/Manually_Annotated_Images/<subDirectory_filePath>

CSV columns ``subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
expression, valence, arousal``. The face box (pixels, left/top and size) is the detector's
fallback (prior ``dataset``); ``facial_landmarks`` (68 ``x;y`` pairs, pixel indices) become prior
landmarks in the pixel-corner frame (+0.5), used instead of dlib's with ``--landmarks dataset``.

Expression codes: 0 neutral, 1 happy, 2 sad, 3 surprise, 4 fear, 5 disgust, 6 anger, 7 contempt
are the stored labels; 8 none, 9 uncertain, 10 no-face are kept with label -1. Valence and
arousal outside [-1, 1] (AffectNet writes -2 for no-face) are stored as NaN. Missing images and
odd formats are not checked here: each is recorded per sample when read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.datasets.label_sets import POLARITY_NAMES, LabelSet
from pipeline.datasets.manifest import Manifest
from pipeline.datasets.paths import FilesUnderRoot, escapes_root, require_directory
from pipeline.datasets.tables import csv_rows, malformed, parse_field, require_file
from pipeline.errors import DatasetError

LABEL_NAMES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
SPLIT_FILES = {"train": "training.csv", "val": "validation.csv"}
LISTS_DIR = "Manually_Annotated_file_lists"
IMAGES_DIR = "Manually_Annotated_Images"
HEADER = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
POLARITY_THRESHOLDS = (-0.2, 0.2)  # negative < -0.2 <= neutral <= 0.2 < positive (guided-STN paper)
LABEL_SETS = (
    LabelSet.from_labels("7", LABEL_NAMES, {name: (name,) for name in LABEL_NAMES[:7]}),
    LabelSet.identity("8", LABEL_NAMES),
    LabelSet("polarity", POLARITY_NAMES, "valence", thresholds=POLARITY_THRESHOLDS),
)
# Every AffectNet row gives the face's box: it goes straight to landmarks, mapped to dlib's framing
# (--detect auto; docs/benchmarks.md, "AffectNet"). With --detect always the detector runs at
# native resolution (faces of about 80 px and up, 4x cheaper than upsampling once), the annotated
# box choosing among its detections and standing in where it finds none.
CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {"detect": {"prior": "dataset", "upsample": 0, "mode": "auto"}}


def _float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(text)
    return value


def _landmarks(text: str) -> np.ndarray:
    values = np.array(text.strip().strip(";").split(";"), dtype=np.float64)  # C parsing: 300k rows in seconds
    if values.size != 136 or not np.isfinite(values).all():
        raise ValueError(text)
    return values.astype(np.float32).reshape(68, 2) + 0.5


def scan_split_file(path: Path) -> dict[str, list[Any]]:
    """Rows of one AffectNet list file, validated row by row.

    Returns:
        Columns ``source`` (paths relative to the dataset root), ``label``, ``valence``,
        ``arousal``, ``box`` ((4,) left, top, right, bottom, corner frame), ``landmarks``
        ((68, 2) corner frame) and ``skip``: "" for a good row; for a row with missing fields, a
        number that does not parse, a landmark list that is not 136 numbers, an unknown
        expression code or a path leaving the dataset root, the problem, naming the file, line
        and column. Such rows are stored as ``failed`` with that message and never read.

    Raises:
        DatasetError: an empty file or a wrong header.
    """
    columns: dict[str, list[Any]] = {
        k: [] for k in ("source", "label", "valence", "arousal", "box", "landmarks", "skip")
    }
    for line, row in csv_rows(path, HEADER, header_optional=True, check_columns=False):
        relative = row[0].strip()
        try:
            parsed = _parse_row(path, line, row)
        except DatasetError as problem:
            parsed = {
                "label": -1,
                "valence": np.nan,
                "arousal": np.nan,
                "box": (np.nan,) * 4,
                "landmarks": np.full((68, 2), np.nan, dtype=np.float32),
                "skip": str(problem),
            }
        columns["source"].append(f"{IMAGES_DIR}/{relative}" if relative else f"{path.name}, line {line}")
        for key, value in parsed.items():
            columns[key].append(value)
    return columns


def _parse_row(path: Path, line: int, row: list[str]) -> dict[str, Any]:
    if len(row) != len(HEADER):
        raise malformed(path, line, f"expected {len(HEADER)} columns ({','.join(HEADER)}), got {len(row)}")
    fields = dict(zip(HEADER, (cell.strip() for cell in row)))
    relative = fields["subDirectory_filePath"]
    if not relative or escapes_root(relative):
        raise malformed(
            path,
            line,
            f"path {relative!r} must be relative to {IMAGES_DIR}/ and stay inside it",
            "subDirectory_filePath",
        )
    x, y, width, height = (
        parse_field(path, line, name, fields[name], _float, "a number")
        for name in ("face_x", "face_y", "face_width", "face_height")
    )
    landmarks = parse_field(
        path,
        line,
        "facial_landmarks",
        fields["facial_landmarks"],
        _landmarks,
        "136 numbers separated by ';' (68 x;y pairs)",
    )
    code = parse_field(path, line, "expression", fields["expression"], int, "an expression code 0-10")
    if not 0 <= code <= 10:
        raise malformed(path, line, f"unknown expression code {code}; AffectNet codes are 0-10", "expression")
    valence, arousal = (
        parse_field(path, line, name, fields[name], _float, "a number") for name in ("valence", "arousal")
    )
    return {
        "label": code if code < len(LABEL_NAMES) else -1,
        "valence": valence if -1.0 <= valence <= 1.0 else np.nan,
        "arousal": arousal if -1.0 <= arousal <= 1.0 else np.nan,
        "box": (x, y, x + width, y + height),
        "landmarks": landmarks,
        "skip": "",
    }


class AffectNetDataset(FilesUnderRoot):
    name = "affectnet"
    config_defaults = CONFIG_DEFAULTS

    def scan(self, root: Path | None) -> Manifest:
        root = require_directory(root, self.name)
        files = {
            split: require_file(
                root / LISTS_DIR / file,
                f"AffectNet's {split} list; DATA_ROOT must be the folder holding {LISTS_DIR}/ and {IMAGES_DIR}/",
            )
            for split, file in SPLIT_FILES.items()
        }
        if not (root / IMAGES_DIR).is_dir():
            raise DatasetError(f"{root / IMAGES_DIR} not found: the AffectNet images folder, beside {LISTS_DIR}/")
        columns: dict[str, list[Any]] = {}
        split: list[int] = []
        for split_id, path in enumerate(files.values()):
            for key, values in scan_split_file(path).items():
                columns.setdefault(key, []).extend(values)
            split += [split_id] * (len(columns["source"]) - len(split))
        return Manifest(
            dataset=self.name,
            label_names=LABEL_NAMES,
            splits=tuple(SPLIT_FILES),
            source=tuple(columns["source"]),
            label=np.array(columns["label"]),
            split=np.array(split),
            valence=np.array(columns["valence"]),
            arousal=np.array(columns["arousal"]),
            prior_box=np.array(columns["box"]).reshape(-1, 4),
            prior_landmarks=np.array(columns["landmarks"]).reshape(-1, 68, 2),
            skip=tuple(columns["skip"]) if any(columns["skip"]) else None,
            label_sets=LABEL_SETS,
        )
