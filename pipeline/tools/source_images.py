"""A sample's source image, read again from the dataset the store was built from, for people to
look at (the contact sheet, the viewer). Training never reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.datasets import get_dataset
from pipeline.stages.decode import decode_image, to_rgb
from pipeline.store import Provenance


def read_source_image(provenance: Provenance, source: str, root: str | Path | None = None) -> np.ndarray | None:
    """The source image of the store row ``source`` as ``(H, W, 3) uint8 RGB`` in source pixels
    (the frame of ``landmarks_src`` and ``box_src``), or None when it cannot be read here.

    Args:
        provenance: the store's provenance (its dataset adapter and decode limits).
        source: the row's ``source`` value.
        root: where the dataset lies on this machine; None: the root the store was built from.
    """
    try:
        adapter = get_dataset(provenance.dataset)
        where = root if root is not None else provenance.root
        raw = adapter.read(Path(where) if where else None, source)
        max_pixels = provenance.preprocess_config.decode.max_pixels
        pixels = raw if isinstance(raw, np.ndarray) else decode_image(raw, max_pixels=max_pixels)
        return to_rgb(pixels)
    except Exception:  # noqa: BLE001 - a missing or broken source is shown without its image
        return None
