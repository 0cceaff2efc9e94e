"""The Manifest: a dataset's rows in a stable order, before any image is read."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from pipeline.datasets.label_sets import LabelSet


@dataclass(frozen=True, eq=False)
class Manifest:
    """N rows describing a dataset, as a dataset adapter scanned them.

    Attributes:
        dataset: adapter name (``folder``, ``sample``, ...).
        label_names: class names; ``label`` indexes into them.
        splits: split names; ``split`` indexes into them.
        source: ``(N,)`` str, path relative to the dataset root, or a row id.
        label: ``(N,) int16``, -1 when unknown.
        split: ``(N,) uint8``.
        valence, arousal: ``(N,) float32`` with NaN where absent, or None.
        votes: ``(N, L) float32`` per-class vote distribution, or None; ``vote_names`` names L.
        prior_box: ``(N, 4) float32`` (left, top, right, bottom) source pixels with NaN rows where
            absent, or None.
        prior_landmarks: ``(N, 68, 2) float32`` dataset landmarks, (x, y) source pixels in the
            pixel-corner frame, NaN rows where absent, or None.
        subject: ``(N,)`` str, the person shown (for subject-independent folds), or None.
        skip: ``(N,)`` str, why a row is not processed at all ("" for rows that are): such rows
            enter the store with status ``failed`` and this message. None when every row is.
        label_sets: the ways training can turn labels into targets; the first is the default.
            Empty means one set, ``classes``, the stored labels as they are.
    """

    dataset: str
    label_names: tuple[str, ...]
    splits: tuple[str, ...]
    source: tuple[str, ...]
    label: np.ndarray
    split: np.ndarray
    valence: np.ndarray | None = None
    arousal: np.ndarray | None = None
    votes: np.ndarray | None = None
    vote_names: tuple[str, ...] = ()
    prior_box: np.ndarray | None = None
    prior_landmarks: np.ndarray | None = None
    subject: tuple[str, ...] | None = None
    skip: tuple[str, ...] | None = None
    label_sets: tuple[LabelSet, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.source)
        if not self.label_sets:
            object.__setattr__(self, "label_sets", (LabelSet.identity("classes", self.label_names),))
        object.__setattr__(self, "label", np.asarray(self.label, dtype=np.int16))
        object.__setattr__(self, "split", np.asarray(self.split, dtype=np.uint8))
        columns = {"label": self.label, "split": self.split}
        for name in ("subject", "skip"):
            if getattr(self, name) is not None:
                columns[name] = getattr(self, name)
        for name in ("valence", "arousal", "votes", "prior_box", "prior_landmarks"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.float32)
                object.__setattr__(self, name, value)
                columns[name] = value
        for name, column in columns.items():
            if len(column) != n:
                raise ValueError(f"manifest column {name} has {len(column)} rows, source has {n}")

    def __len__(self) -> int:
        return len(self.source)

    def sha256(self) -> str:
        """Hash of every row and name (not of the dataset root path, which differs per machine)."""
        digest = hashlib.sha256()
        for text in (self.dataset, *self.label_names, "|", *self.splits, "|", *self.vote_names):
            digest.update(text.encode("utf-8", "surrogateescape") + b"\0")
        for texts in (self.source, self.subject or (), self.skip or ()):
            for text in texts:  # a file name that is not UTF-8 carries its bytes as surrogates
                digest.update(text.encode("utf-8", "surrogateescape") + b"\0")
            digest.update(b"|")
        columns = (self.label, self.split, self.valence, self.arousal, self.votes, self.prior_box, self.prior_landmarks)
        for column in columns:
            digest.update(b"-" if column is None else np.ascontiguousarray(column).tobytes())
        digest.update(json.dumps([(s.name, s.to_dict()) for s in self.label_sets], sort_keys=True).encode())
        return digest.hexdigest()
