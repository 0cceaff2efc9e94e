"""FER-2013 stores for the benchmarks: the first images of every (split, class) folder of the
archive in ``../shared/data`` (``tests.support.shared_data.extract_fer2013``), preprocessed with the dataset's
defaults at each aligned size S = H."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.compute.run import preprocess
from pipeline.config import PreprocessConfig, build_config
from pipeline.datasets import get_dataset
from tests.support.shared_data import extract_fer2013


def fer2013_stores(
    workdir: Path, images: int, sizes: tuple[int, ...] = (48, 112)
) -> Iterator[tuple[int, Path, PreprocessConfig]]:
    """``(size, store, config)`` for each size: about ``images`` faces extracted into
    ``workdir / "fer"`` once, each store written to ``workdir / "s<size>.zarr"`` when its turn
    comes (by two Dask workers)."""
    root = extract_fer2013(workdir / "fer", per_class=max(1, images // 14))
    for size in sizes:
        config = build_config(get_dataset("fer2013").config_defaults, {"align": {"size": size}})
        store = workdir / f"s{size}.zarr"
        preprocess(store, "fer2013", root, config, workers=2)
        yield size, store, config
