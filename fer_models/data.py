"""Samples from a guidance store as tensors.

This first version holds the selected samples in memory (right for stores of up to a few GB) and
reads them in contiguous slices of whole shards, because each zarr read call costs about a
millisecond of Python however little it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import ConfigError, StoreError
from pipeline.datasets.label_sets import label_set_from_attrs
from pipeline.store import ATTRS_KEY, USABLE_STATUSES, open_store


@dataclass(frozen=True)
class StoreSplit:
    """Usable samples of one split with a target under the chosen label set, in memory.

    image: ``(N, C, S, S) uint8``. target: ``(N,) int64`` class indices, or ``(N, K) float32``
    class distributions for soft label sets (FERPlus votes). class_names: the K target names.
    """

    image: np.ndarray
    target: np.ndarray
    class_names: tuple[str, ...]

    @property
    def hard_target(self) -> np.ndarray:
        """``(N,) int64``: the class index, or the most voted class of a soft target."""
        return self.target if self.target.ndim == 1 else self.target.argmax(axis=1)


@dataclass(frozen=True)
class SubjectFolds:
    """Subject-independent k-fold selection: ``held_out`` True keeps fold ``fold``, else the rest."""

    folds: int
    fold: int
    held_out: bool


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


def read_rows(array, index: np.ndarray, block: int) -> np.ndarray:
    """``array[index]`` for sorted ``index``, read as contiguous blocks of ``block`` samples."""
    parts = []
    for start in range(0, array.shape[0], block):
        stop = min(start + block, array.shape[0])
        wanted = index[(index >= start) & (index < stop)]
        if len(wanted):
            parts.append(array[start:stop][wanted - start])
    return np.concatenate(parts) if parts else np.zeros((0, *array.shape[1:]), array.dtype)


def load_split(
    store: str | Path, split: str, labels: str | None = None, folds: SubjectFolds | None = None
) -> StoreSplit:
    """Read the usable (status ok or ok_prior) samples of ``split`` that label set ``labels``
    trains on.

    Args:
        store: store path.
        split: a split name of the store.
        labels: a label set recorded in the store (``7``, ``8``, ``polarity``, ``votes``, ...);
            None for the store's default.
        folds: keep one subject fold (or all but one) of the split; needs a ``subject`` array.

    Raises:
        ConfigError: no such split or label set, no subjects for folds, or no sample left.
        StoreError: the store is missing, incomplete or not a FER store.
    """
    group = open_store(store)
    provenance = group.attrs[ATTRS_KEY]
    if not provenance["complete"]:
        raise StoreError(f"{store} is incomplete (a preprocessing run did not finish); run it again to complete it")
    splits = list(provenance["splits"])
    if split not in splits:
        raise ConfigError(f"no split {split!r} in {store}; it has: {', '.join(splits)}")
    label_set = label_set_from_attrs(provenance["label_sets"], labels)
    target, keep = label_set.targets(
        group["label"][:],
        valence=group["valence"][:],
        votes=group["votes"][:] if "votes" in group else None,
    )
    keep &= np.isin(group["status"][:], [int(s) for s in USABLE_STATUSES]) & (group["split"][:] == splits.index(split))
    if folds is not None:
        if "subject" not in group:
            raise ConfigError(f"{store} records no subjects, so it cannot be split into subject folds")
        in_fold = subject_folds(group["subject"][:], folds.folds) == folds.fold
        keep &= in_fold if folds.held_out else ~in_fold
    index = np.flatnonzero(keep)
    if len(index) == 0:
        raise ConfigError(f"split {split!r} of {store} has no usable sample under label set {label_set.name!r}")
    block = provenance["config"]["shard_size"]
    return StoreSplit(image=read_rows(group["image"], index, block), target=target[index], class_names=label_set.names)


class InMemoryDataset(torch.utils.data.Dataset):
    """Items ``{"image": (C, S, S) float32 in [0, 1], "label": () int64 or (K,) float32}`` of a
    :class:`StoreSplit`."""

    def __init__(self, split: StoreSplit):
        self.image = torch.from_numpy(split.image)
        self.label = torch.from_numpy(split.target)
        self.hard_label = torch.from_numpy(split.hard_target)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.image[i].float().div_(255.0), "label": self.label[i]}
