"""``fer2013``: FER-2013 (Goodfellow et al. 2013), 48x48 grayscale faces, pre-cropped.

Two layouts are read, with the same labels and splits for the same images:

    <root>/fer2013.csv                        the official CSV: emotion,pixels,Usage
    <root>/{train,test}/<class>/<Usage>_<id>.jpg    the image-folder form (also under
                                              <root>/fer2013-images/), Usage from the file name

Labels (the CSV's emotion codes): 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise,
6 neutral. Splits from Usage: Training -> train, PublicTest -> val, PrivateTest -> test.
A CSV row's ``source`` is ``fer2013.csv#<row>``, its 0-based data row (the order FERPlus joins on).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.datasets.label_sets import LabelSet
from pipeline.datasets.manifest import Manifest
from pipeline.datasets.paths import given_root, read_file_inside, require_directory
from pipeline.datasets.tables import csv_rows, malformed, parse_field
from pipeline.errors import DatasetError, UnreadableImageError

LABEL_NAMES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SPLITS = ("train", "val", "test")
USAGE_SPLITS = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
CSV_NAME = "fer2013.csv"
CSV_HEADER = ("emotion", "pixels", "Usage")
IMAGE_SIDE = 48
LABEL_SETS = (
    LabelSet.identity("7", LABEL_NAMES),
    # Polarity as in the guided-STN paper; surprise is left out.
    LabelSet.from_labels(
        "polarity",
        LABEL_NAMES,
        {"negative": ("angry", "disgust", "fear", "sad"), "neutral": ("neutral",), "positive": ("happy",)},
    ),
)
# Distributed as face crops: the official protocol keeps them as they are (landmarks and guidance in
# their frame); where the detector finds no face, the whole 48x48 frame is the landmarks' box.
CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "detect": {"prior": "full-frame"},
    "align": {"mode": "crop", "size": 48, "color": "gray"},
}
_FOLDER_NAME = re.compile(r"^(Training|PublicTest|PrivateTest)_\d+\.(?i:jpg|jpeg|png)$")


def row_source(row: int) -> str:
    return f"{CSV_NAME}#{row}"


def scan_csv(path: Path, shown_as: Path | None = None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Labels and splits of every row of an official ``fer2013.csv``.

    Args:
        path: the CSV file.
        shown_as: the name messages give the file (default ``path``); a name that is the same on
            every machine keeps the manifest hash so.

    Returns:
        ``(label, split, skip)``: ``(N,) int16`` emotion codes (-1 for a malformed row),
        ``(N,) uint8`` indices into :data:`SPLITS` (``train`` where the Usage is unknown) and
        ``(N,)`` str: "" for a good row; for a row with the wrong number of columns, an unknown
        emotion code or Usage, or not 2,304 pixel values, the problem, naming the line and
        column. Such rows are stored as ``failed`` with that message and never read.

    Raises:
        DatasetError: an empty file, a wrong header or no data rows.
    """
    labels, splits, skip = [], [], []
    shown = shown_as or path
    for line, row in csv_rows(path, CSV_HEADER, check_columns=False):
        try:
            code, split = _parse_csv_row(shown, line, row)
            problem = ""
        except DatasetError as error:
            code, problem = -1, str(error)
            usage = row[2].strip() if len(row) == len(CSV_HEADER) else ""
            split = USAGE_SPLITS.get(usage, 0)
        labels.append(code)
        splits.append(split)
        skip.append(problem)
    if not labels:
        raise malformed(path, 2, "no data rows after the header")
    return np.array(labels, dtype=np.int16), np.array(splits, dtype=np.uint8), tuple(skip)


def _parse_csv_row(path: Path, line: int, row: list[str]) -> tuple[int, int]:
    if len(row) != len(CSV_HEADER):
        raise malformed(path, line, f"expected {len(CSV_HEADER)} columns ({','.join(CSV_HEADER)}), got {len(row)}")
    emotion, pixels, usage = row
    code = parse_field(path, line, "emotion", emotion, int, "an emotion code 0-6")
    if not 0 <= code < len(LABEL_NAMES):
        raise malformed(path, line, f"unknown emotion code {code}; FER-2013 codes are 0-6", "emotion")
    if usage.strip() not in USAGE_SPLITS:
        raise malformed(path, line, f"unknown Usage {usage!r}; expected one of {', '.join(USAGE_SPLITS)}", "Usage")
    count = len(pixels.split())
    if count != IMAGE_SIDE * IMAGE_SIDE:
        raise malformed(path, line, f"expected {IMAGE_SIDE * IMAGE_SIDE} grey values, got {count}", "pixels")
    return code, USAGE_SPLITS[usage.strip()]


@functools.lru_cache(maxsize=2)
def _data_rows(path: str, size: int, mtime_ns: int) -> tuple[np.memmap, np.ndarray, np.ndarray]:
    """The file mapped in memory and the byte ranges ``(starts, ends)`` of its data rows (the
    non-blank lines after the header), found once per process. ``size`` and ``mtime_ns`` key the
    cache, so a changed file is indexed again."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    block = 1 << 24
    newlines = np.concatenate(
        [np.flatnonzero(data[i : i + block] == ord("\n")) + i for i in range(0, len(data), block)]
        or [np.zeros(0, dtype=np.int64)]
    )
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(data)]))
    lengths = ends - starts
    carriage = np.zeros(len(starts), dtype=bool)
    ones = np.flatnonzero(lengths == 1)
    carriage[ones] = data[starts[ones]] == ord("\r")
    keep = (lengths > 0) & ~carriage
    return data, starts[keep][1:], ends[keep][1:]


def read_csv_pixels(path: Path, row: int) -> np.ndarray:
    """One data row's image from a ``fer2013.csv``: ``(48, 48) uint8`` grey values.

    Raises:
        UnreadableImageError: the row is not 2,304 values in 0..255.
    """
    stat = os.stat(path)
    data, starts, ends = _data_rows(str(path), stat.st_size, stat.st_mtime_ns)
    if not 0 <= row < len(starts):
        raise UnreadableImageError(f"{path} has no data row {row}")
    fields = bytes(data[starts[row] : ends[row]]).decode("utf-8").strip().split(",")
    if len(fields) != 3:
        raise UnreadableImageError(f"{path} data row {row}: expected 3 columns, got {len(fields)}")
    try:
        values = np.array(fields[1].strip('"').split(), dtype=np.int64)
    except ValueError:
        raise UnreadableImageError(f"{path} data row {row}: pixels are not all integers") from None
    if values.size != IMAGE_SIDE * IMAGE_SIDE or values.min() < 0 or values.max() > 255:
        raise UnreadableImageError(f"{path} data row {row}: expected 2304 grey values in 0..255")
    return values.astype(np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE)


def read_row_source(root: Path, source: str) -> np.ndarray:
    """Pixels of a ``fer2013.csv#<row>`` source under ``root``."""
    name, _, row = source.partition("#")
    if name != CSV_NAME or not row.isdigit():
        raise DatasetError(f"not a {CSV_NAME} row: {source!r}")
    return read_csv_pixels(Path(root) / CSV_NAME, int(row))


def _folder_split_root(root: Path) -> Path | None:
    """The folder holding ``train/`` and ``test/`` class folders: ``root`` or ``root/fer2013-images``."""
    for candidate in (root, root / "fer2013-images"):
        if any((candidate / split).is_dir() for split in ("train", "test")):
            return candidate
    return None


class Fer2013Dataset:
    name = "fer2013"
    config_defaults = CONFIG_DEFAULTS

    def scan(self, root: Path | None) -> Manifest:
        root = require_directory(root, self.name)
        skip = None
        if (root / CSV_NAME).is_file():
            labels, splits, skip = scan_csv(root / CSV_NAME, Path(CSV_NAME))
            sources = tuple(row_source(i) for i in range(len(labels)))
        else:
            folder = _folder_split_root(root)
            if folder is None:
                raise DatasetError(
                    f"{root} holds neither {CSV_NAME} nor the image folders train/<class>/ and "
                    f"test/<class>/; set DATA_ROOT to the folder holding {CSV_NAME} (or fer2013-images/)"
                )
            sources, labels, splits = self._scan_folders(root, folder)
        return Manifest(
            dataset=self.name,
            label_names=LABEL_NAMES,
            splits=SPLITS,
            source=sources,
            label=labels,
            split=splits,
            skip=skip if skip and any(skip) else None,
            label_sets=LABEL_SETS,
        )

    @staticmethod
    def _scan_folders(root: Path, folder: Path) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        sources, labels, splits = [], [], []
        for split_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if split_dir.name not in ("train", "test"):
                raise DatasetError(f"unexpected folder {split_dir}; the FER-2013 image folders are train/ and test/")
            for class_dir in sorted(p for p in split_dir.iterdir() if not p.name.startswith(".")):
                if class_dir.name not in LABEL_NAMES:
                    raise DatasetError(
                        f"unexpected {'folder' if class_dir.is_dir() else 'file'} {class_dir}; "
                        f"FER-2013 class folders are {', '.join(LABEL_NAMES)}"
                    )
                for file in sorted(p for p in class_dir.iterdir() if not p.name.startswith(".")):
                    match = _FOLDER_NAME.match(file.name)
                    if not match:
                        raise DatasetError(
                            f"{file}: expected a file named <Usage>_<id>.jpg with Usage Training, "
                            "PublicTest or PrivateTest"
                        )
                    sources.append(file.relative_to(root).as_posix())
                    labels.append(LABEL_NAMES.index(class_dir.name))
                    splits.append(USAGE_SPLITS[match.group(1)])
        if not sources:
            raise DatasetError(f"no images in the FER-2013 class folders under {folder}")
        return tuple(sources), np.array(labels, dtype=np.int16), np.array(splits, dtype=np.uint8)

    def read(self, root: Path | None, source: str) -> bytes | np.ndarray:
        """A CSV row's ``(48, 48) uint8`` pixels, or an image file's bytes."""
        if source.startswith(CSV_NAME + "#"):
            return read_row_source(given_root(root), source)
        return read_file_inside(given_root(root), source)
