"""Dataset adapters: one module per dataset layout, each turning a root into a :class:`Manifest`.

An adapter has a ``name``, ``config_defaults`` (nested dict of :class:`PreprocessConfig` fields the
dataset needs by default; the user's options override them), ``scan(root) -> Manifest`` (validates
the root before any work) and ``read(root, source) -> bytes | ndarray`` (one sample's encoded file,
or its pixels where the dataset stores pixels rather than files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.datasets.affectnet import AffectNetDataset
from pipeline.datasets.ckplus import CkPlusDataset
from pipeline.datasets.fer2013 import Fer2013Dataset
from pipeline.datasets.ferplus import FerPlusDataset
from pipeline.datasets.folder import FolderDataset
from pipeline.datasets.manifest import Manifest
from pipeline.datasets.rafdb import RafDbDataset
from pipeline.datasets.sample import SampleDataset
from pipeline.errors import DatasetError


class DatasetAdapter(Protocol):
    name: str
    config_defaults: dict[str, dict[str, Any]]

    def scan(self, root: Path | None) -> Manifest: ...

    def read(self, root: Path | None, source: str) -> bytes | np.ndarray: ...


DATASETS: dict[str, DatasetAdapter] = {
    adapter.name: adapter
    for adapter in (
        AffectNetDataset(),
        Fer2013Dataset(),
        FerPlusDataset(),
        RafDbDataset("aligned"),
        RafDbDataset("original"),
        CkPlusDataset(),
        FolderDataset(),
        SampleDataset(),
    )
}


def get_dataset(name: str) -> DatasetAdapter:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}") from None


__all__ = ["DATASETS", "DatasetAdapter", "Manifest", "get_dataset"]
