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
from pipeline.store import ATTRS_KEY, USABLE_STATUSES, open_store


@dataclass(frozen=True)
class StoreSplit:
    """Usable, labelled samples of one split, in memory.

    image: ``(N, C, S, S) uint8``; label: ``(N,) int64``, an index into the store's label names.
    """

    image: np.ndarray
    label: np.ndarray


def read_rows(array, index: np.ndarray, block: int) -> np.ndarray:
    """``array[index]`` for sorted ``index``, read as contiguous blocks of ``block`` samples."""
    parts = []
    for start in range(0, array.shape[0], block):
        stop = min(start + block, array.shape[0])
        wanted = index[(index >= start) & (index < stop)]
        if len(wanted):
            parts.append(array[start:stop][wanted - start])
    return np.concatenate(parts) if parts else np.zeros((0, *array.shape[1:]), array.dtype)


def load_split(store: str | Path, split: str) -> StoreSplit:
    """Read the usable (status ok or ok_prior), labelled samples of ``split`` from a store.

    Raises:
        ConfigError: the store has no such split, or it holds no usable labelled sample.
        StoreError: the store is missing, incomplete or not a FER store.
    """
    group = open_store(store)
    provenance = group.attrs[ATTRS_KEY]
    if not provenance["complete"]:
        raise StoreError(f"{store} is incomplete (a preprocessing run did not finish); run it again to complete it")
    splits = list(provenance["splits"])
    if split not in splits:
        raise ConfigError(f"no split {split!r} in {store}; it has: {', '.join(splits)}")
    status, labels = group["status"][:], group["label"][:]
    keep = np.isin(status, [int(s) for s in USABLE_STATUSES]) & (group["split"][:] == splits.index(split)) & (labels >= 0)
    index = np.flatnonzero(keep)
    if len(index) == 0:
        raise ConfigError(f"split {split!r} of {store} has no usable labelled sample")
    block = provenance["config"]["shard_size"]
    return StoreSplit(
        image=read_rows(group["image"], index, block),
        label=labels[index].astype(np.int64),
    )


class InMemoryDataset(torch.utils.data.Dataset):
    """Items ``{"image": (C, S, S) float32 in [0, 1], "label": int64}`` of a :class:`StoreSplit`."""

    def __init__(self, split: StoreSplit):
        self.image = torch.from_numpy(split.image)
        self.label = torch.from_numpy(split.label)

    def __len__(self) -> int:
        return len(self.label)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.image[i].float().div_(255.0), "label": self.label[i]}
