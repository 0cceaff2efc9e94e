"""``sample``: the demo dataset, real photographs that ship inside scikit-image (no download).

Rows: four scikit-image photographs (``astronaut`` and ``camera`` show a person; ``chelsea``, a
cat, and ``coffee`` show no human face) and the 200 images of ``skimage.data.lfw_subset()``: 100
faces from Labeled Faces in the Wild and 100 non-face patches, 25x25 grayscale. Labels are
``face`` / ``non-face``; one split, ``sample``. The faces are tiny, so the detector upsamples
twice by default.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.datasets.manifest import Manifest
from pipeline.errors import DatasetError

LABEL_NAMES = ("face", "non-face")
PHOTOS = {"astronaut": 0, "camera": 0, "chelsea": 1, "coffee": 1}
N_LFW = 100  # lfw_subset(): the first 100 are faces, the next 100 non-faces


@functools.lru_cache(maxsize=1)
def _lfw_subset() -> np.ndarray:
    import skimage.data

    faces: np.ndarray = skimage.data.lfw_subset()
    return faces


class SampleDataset:
    name = "sample"
    config_defaults: dict[str, dict[str, Any]] = {"detect": {"upsample": 2}, "align": {"size": 64}}

    def scan(self, root: Path | None) -> Manifest:
        sources = [f"skimage/{name}" for name in PHOTOS]
        labels = list(PHOTOS.values())
        for kind, label in (("face", 0), ("non-face", 1)):
            sources += [f"lfw_subset/{kind}/{i:03d}" for i in range(N_LFW)]
            labels += [label] * N_LFW
        return Manifest(
            dataset=self.name,
            label_names=LABEL_NAMES,
            splits=("sample",),
            source=tuple(sources),
            label=np.array(labels),
            split=np.zeros(len(sources)),
        )

    def read(self, root: Path | None, source: str) -> np.ndarray:
        """Pixels of one row: ``(H, W) uint8`` or ``(H, W, 3) uint8 RGB``."""
        import skimage.data

        parts = source.split("/")
        if parts[0] == "skimage" and len(parts) == 2 and parts[1] in PHOTOS:
            photo: np.ndarray = np.ascontiguousarray(getattr(skimage.data, parts[1])())
            return photo
        if parts[0] == "lfw_subset" and len(parts) == 3 and parts[1] in ("face", "non-face"):
            index = int(parts[2]) + (0 if parts[1] == "face" else N_LFW)
            face: np.ndarray = np.round(_lfw_subset()[index] * 255.0).astype(np.uint8)
            return face
        raise DatasetError(f"unknown sample row {source!r}")
