"""Which samples a run reads: usable samples of one split under a label set, and subject folds.

A run first *selects* samples (:func:`select_samples`: status ok or ok_prior, one split, a label
set, optionally a subject fold), then streams them (:mod:`fer_models.data.stream`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, StoreError
from pipeline.store import USABLE_STATUSES, open_store, provenance_of
from pipeline.store.recorded_checksums import RecordedChecksums, damaged_store_error, read_checked
from pipeline.store.schema import GUIDANCE_ERRORS, LABEL, SPLIT, STATUS, SUBJECT, VALENCE, VOTES


@dataclass(frozen=True)
class Selection:
    """The samples a run reads from one split and their targets.

    index: ``(N,) int64`` sorted store indices.
    target: ``(N,) int64`` class indices, or ``(N, K) float32`` class distributions for soft
        label sets (FERPlus votes).
    class_names: the K target names. label_set: its name in the store.
    """

    index: np.ndarray
    target: np.ndarray
    class_names: tuple[str, ...]
    label_set: str

    @property
    def hard_target(self) -> np.ndarray:
        """``(N,) int64``: the class index, or the most voted class of a soft target."""
        return self.target if self.target.ndim == 1 else self.target.argmax(axis=1)

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, keep: np.ndarray) -> Selection:
        """The samples where ``keep`` ``(N,) bool`` is True, with their targets."""
        return Selection(self.index[keep], self.target[keep], self.class_names, self.label_set)

    def restricted_to(self, index: np.ndarray) -> Selection:
        """Those of these samples whose store index is in ``index`` (``(n,) int``)."""
        return self.subset(np.isin(self.index, index))


@dataclass(frozen=True)
class SubjectFolds:
    """Subject-independent k-fold selection: keep the samples whose subject is dealt to one of the
    folds in ``members`` (of ``folds``; see :func:`subject_folds`)."""

    folds: int
    members: frozenset[int]

    @classmethod
    def only(cls, folds: int, fold: int) -> SubjectFolds:
        return cls(folds, frozenset({fold}))

    @classmethod
    def all_but(cls, folds: int, *left_out: int) -> SubjectFolds:
        return cls(folds, frozenset(range(folds)) - set(left_out))


def subject_folds(subjects: np.ndarray, folds: int) -> np.ndarray:
    """``(N,) int64`` fold of each sample: the distinct subjects, sorted, are dealt out to the
    folds in turn, so no subject is in two folds.

    Raises:
        ConfigError: fewer subjects than folds.
    """
    names, subject_index = np.unique([str(s) for s in subjects], return_inverse=True)
    if len(names) < folds:
        raise ConfigError(f"{folds} folds need at least {folds} subjects; the store has {len(names)}")
    return subject_index % folds


def select_samples(
    store: str | Path,
    split: str,
    labels: str | None = None,
    folds: SubjectFolds | None = None,
    *,
    scored: bool = False,
) -> Selection:
    """The usable (status ok or ok_prior) samples of ``split`` that label set ``labels`` trains on,
    less those where a guidance type added later failed to render (``guidance_errors``).

    Args:
        store: store path.
        split: a split name of the store.
        labels: a label set recorded in the store (``7``, ``8``, ``polarity``, ``crossentropy``,
            ...); None for the store's default.
        folds: keep some subject folds of the split; needs a ``subject`` array.
        scored: the samples validation or test score, and their targets: those of the label set
            ``labels`` is scored with (FERPlus's soft schemes: majority), where it names one.

    Raises:
        ConfigError: no such split or label set, no subjects for folds, or no sample left.
        StoreError: the store is missing, incomplete or not a FER store.
    """
    group = open_store(store)
    provenance = provenance_of(group)
    if not provenance.complete:
        raise StoreError(f"{store} is incomplete (a preprocessing run did not finish); run it again to complete it")
    splits = list(provenance.splits)
    if split not in splits:
        raise ConfigError(f"no split {split!r} in {store}; it has: {', '.join(splits)}")
    label_set = provenance.label_set(labels)
    if scored and label_set.evaluated_with:
        label_set = provenance.label_set(label_set.evaluated_with)
    try:
        columns = RecordedChecksums.of(group, (LABEL, VALENCE, VOTES, STATUS, SPLIT, GUIDANCE_ERRORS, SUBJECT))

        def column(name: str) -> np.ndarray:
            return read_checked(group, name, columns)

        target, keep = label_set.targets(
            column(LABEL), valence=column(VALENCE), votes=column(VOTES) if VOTES in group else None
        )
        keep &= np.isin(column(STATUS), [int(s) for s in USABLE_STATUSES]) & (column(SPLIT) == splits.index(split))
        if GUIDANCE_ERRORS in group:  # guidance added later failed on these (at most 1% of a type)
            keep &= column(GUIDANCE_ERRORS) == ""
        if folds is not None:
            if SUBJECT not in group:
                raise ConfigError(f"{store} records no subjects, so it cannot be split into subject folds")
            keep &= np.isin(subject_folds(column(SUBJECT), folds.folds), sorted(folds.members))
    except StoreError as error:
        raise damaged_store_error(str(store), error) from error
    index = np.flatnonzero(keep)
    if len(index) == 0:
        raise ConfigError(f"split {split!r} of {store} has no usable sample under label set {label_set.name!r}")
    return Selection(index=index, target=target[index], class_names=label_set.names, label_set=label_set.name)


def read_subjects(store: str | Path, index: np.ndarray) -> np.ndarray | None:
    """``(len(index),) str`` subject of each sample at store ``index``, or None when the store
    records no subjects."""
    group = open_store(store)
    if SUBJECT not in group:
        return None
    try:
        subjects = read_checked(group, SUBJECT, RecordedChecksums.of(group, (SUBJECT,)))
    except StoreError as error:
        raise damaged_store_error(str(store), error) from error
    names: np.ndarray = np.asarray([str(s) for s in subjects])[index]
    return names
