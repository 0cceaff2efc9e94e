"""``ferplus``: FERPlus (Barsoum et al. 2016), ten annotators' votes for every FER-2013 image.

Layout: ``<root>/fer2013.csv`` (the official FER-2013 CSV, for the pixels) and
``<root>/fer2013new.csv`` beside it (``Usage,Image name,neutral,happiness,surprise,sadness,anger,
disgust,fear,contempt,unknown,NF``), joined row by row: both must have the same number of rows
and the same Usage in every row.

The store keeps all ten vote counts in ``votes`` and the majority label as Barsoum et al.'s code
makes it: after the votes of single annotators are removed, the class with more than half of
the row's votes, else -1 (also when the majority is ``unknown`` or ``NF``, not a face; see
:mod:`pipeline.datasets.ferplus_votes`). Label sets: ``8`` (majority, the default), ``7`` (without
contempt), ``polarity``, and the paper's soft schemes ``crossentropy`` and ``probability``
(trained on the vote distribution, scored by majority). Rows with an empty image name are images
FERPlus dropped: they enter the store with status ``failed`` and a message, and are not processed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.datasets import fer2013
from pipeline.datasets.ferplus_votes import majority_labels
from pipeline.datasets.label_sets import LabelSet
from pipeline.datasets.manifest import Manifest
from pipeline.datasets.paths import given_root, require_directory
from pipeline.datasets.tables import csv_rows, malformed, parse_field, require_file
from pipeline.errors import DatasetError

VOTES_NAME = "fer2013new.csv"
VOTE_NAMES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
LABEL_NAMES = VOTE_NAMES[:8]
VOTES_HEADER = ("Usage", "Image name", *VOTE_NAMES)
LABEL_SETS = (
    LabelSet.identity("8", LABEL_NAMES),
    LabelSet.from_labels("7", LABEL_NAMES, {name: (name,) for name in LABEL_NAMES[:7]}),
    LabelSet.from_labels(
        "polarity",
        LABEL_NAMES,
        {
            "negative": ("sadness", "anger", "disgust", "fear", "contempt"),
            "neutral": ("neutral",),
            "positive": ("happiness",),
        },
    ),
    *(
        LabelSet(
            name, LABEL_NAMES, "votes", vote_columns=tuple(range(8)), scheme="ferplus", draw=draw, evaluated_with="8"
        )
        for name, draw in (("crossentropy", False), ("probability", True))
    ),
)


def scan_votes(
    path: Path, usage_splits: np.ndarray, shown_as: Path | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Vote counts and skip reasons of every row of ``fer2013new.csv``.

    Args:
        usage_splits: ``(N,) uint8`` the split of each ``fer2013.csv`` row, which every row here
            must agree with.
        shown_as: the name messages give the file (default ``path``).

    Returns:
        ``(votes, skip)``: ``(N, 10) float32`` counts (zeros for a malformed row) and ``(N,)``
        str: "" for a good row; the problem, naming the line and column, for a row with the
        wrong number of columns, an unknown Usage or a vote count that is not a count; a message
        for rows FERPlus drops (empty image name).

    Raises:
        DatasetError: a wrong header, a Usage that disagrees with ``fer2013.csv`` (the files are
            not in the same row order), or another number of rows.
    """
    votes: list[list[int]] = []
    skip: list[str] = []
    shown = shown_as or path
    for line, row in csv_rows(path, VOTES_HEADER, check_columns=False):
        index = len(votes)
        try:
            counts, name = _parse_votes_row(shown, line, row)
        except DatasetError as problem:
            votes.append([0] * len(VOTE_NAMES))
            skip.append(str(problem))
            continue
        usage = fer2013.USAGE_SPLITS[row[0].strip()]
        if index < len(usage_splits) and usage != usage_splits[index]:
            raise malformed(
                path,
                line,
                f"Usage {row[0].strip()} differs from row {index} of {fer2013.CSV_NAME} "
                f"({fer2013.SPLITS[usage_splits[index]]}); the two files must be in the same row order",
                "Usage",
            )
        votes.append(counts)
        skip.append(
            "" if name else f"FERPlus drops this image (empty 'Image name', votes {dict(zip(VOTE_NAMES, counts))})"
        )
    if len(votes) != len(usage_splits):
        raise DatasetError(
            f"{path} has {len(votes)} data rows but {fer2013.CSV_NAME} beside it has {len(usage_splits)}; "
            "FERPlus labels join the FER-2013 pixels row by row, so both files must be complete and "
            "in the official order"
        )
    return np.array(votes, dtype=np.float32), tuple(skip)


def _parse_votes_row(path: Path, line: int, row: list[str]) -> tuple[list[int], str]:
    if len(row) != len(VOTES_HEADER):
        raise malformed(path, line, f"expected {len(VOTES_HEADER)} columns, got {len(row)}")
    usage = row[0].strip()
    if usage not in fer2013.USAGE_SPLITS:
        raise malformed(path, line, f"unknown Usage {usage!r}", "Usage")
    counts = [parse_field(path, line, name, text, int, "a vote count") for name, text in zip(VOTE_NAMES, row[2:])]
    if min(counts) < 0:
        raise malformed(path, line, f"negative vote count in {counts}")
    return counts, row[1].strip()


class FerPlusDataset:
    name = "ferplus"
    config_defaults = fer2013.CONFIG_DEFAULTS

    def scan(self, root: Path | None) -> Manifest:
        root = require_directory(root, self.name)
        pixels = require_file(
            root / fer2013.CSV_NAME,
            f"FERPlus takes its pixels from the official {fer2013.CSV_NAME}, beside {VOTES_NAME}",
        )
        labels_file = require_file(root / VOTES_NAME, f"the FERPlus labels file, beside {fer2013.CSV_NAME}")
        _, splits, pixel_problems = fer2013.scan_csv(pixels, Path(fer2013.CSV_NAME))
        votes, vote_problems = scan_votes(labels_file, splits, Path(VOTES_NAME))
        skip = tuple(pixel or vote for pixel, vote in zip(pixel_problems, vote_problems))
        return Manifest(
            dataset=self.name,
            label_names=LABEL_NAMES,
            splits=fer2013.SPLITS,
            source=tuple(fer2013.row_source(i) for i in range(len(splits))),
            label=majority_labels(votes),
            split=splits,
            votes=votes,
            vote_names=VOTE_NAMES,
            skip=skip,
            label_sets=LABEL_SETS,
        )

    def read(self, root: Path | None, source: str) -> np.ndarray:
        """A row's ``(48, 48) uint8`` pixels from ``fer2013.csv``."""
        return fer2013.read_row_source(given_root(root), source)
