"""Stores the tests build and compare: the tests' FER-2013 store, the build options of the
subprocess tests, and comparisons of stores and of their files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from pipeline import store
from pipeline.store.provenance import ATTRS_KEY

FER_STORE_GUIDANCE = "heatmap,heatmap_regions,saliency,mask_soft,mask_binary,mask_hull,regions"


def build_fer_store(store: Path, images: Path, codec: str = "zstd", align: str = "similarity") -> Path:
    """The tests' store of the FER-2013 folder ``images`` at ``store``: S = H = 48, gray, the
    guidance of :data:`FER_STORE_GUIDANCE`, shards of 32 samples, tensors compressed by ``codec``,
    faces aligned in mode ``align``."""
    from pipeline.compute.run import SYNCHRONOUS, preprocess
    from pipeline.config import build_config

    config = build_config(
        {
            "detect": {"prior": "full-frame"},
            "align": {"size": 48, "color": "gray", "mode": align},
            "guidance": {"types": FER_STORE_GUIDANCE},
            "shard_size": 32,
            "codec": codec,
        }
    )
    preprocess(store, "folder", images, config, scheduler=SYNCHRONOUS)
    return store


def fer2013_build_options(root: Path) -> list[str]:
    """The ``fer-preprocess`` options the subprocess tests build FER-2013 folders at ``root`` with:
    full-frame prior, S = 48, shards of 64, no progress bar."""
    return ["--root", str(root), *"--dataset folder --prior full-frame --size 48 --shard-size 64 --no-progress".split()]


def expected_tree(root: Path):
    """(source, class, split) of every file of a <split>/<class>/<file> tree."""
    return sorted((p.relative_to(root).as_posix(), p.parent.name, p.parent.parent.name) for p in root.glob("*/*/*"))


def stores_equal(a: Path, b: Path) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert sorted(ga.array_keys()) == sorted(gb.array_keys())
    for name in ga.array_keys():
        np.testing.assert_array_equal(ga[name][:], gb[name][:], err_msg=name)
    pa, pb = dict(ga.attrs[ATTRS_KEY]), dict(gb.attrs[ATTRS_KEY])
    for key in ("created", "root"):
        pa.pop(key), pb.pop(key)
    assert pa == pb


def usable_face_means(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Store indices of the usable samples and the mean of each aligned face (0..1, RGB as the
    network sees it), the first usable sample first."""
    group = store.open_store(path)
    usable = np.flatnonzero(np.isin(group["status"][:], [int(code) for code in store.USABLE_STATUSES]))
    faces = group["image"][:][usable].astype(np.float64) / 255
    return usable, faces.mean(axis=(1, 2, 3))


def files_of(path: Path) -> dict[str, bytes]:
    return {str(file.relative_to(path)): file.read_bytes() for file in sorted(path.rglob("*")) if file.is_file()}


# Every family with its options, small enough to train an epoch on the test store's 42 training
# faces in seconds (the prediction and export tests).
SMALL_FAMILIES = {
    "cnn": {},
    "stn": {},
    "guided-stn": {"guidance": "mask_soft"},
    "resnet18": {"width": 8},
    "pal": {"width": 8},
    "keypoint": {"width": 8},
    "feratt": {"width": 8, "maps": 8, "attention_width": 8},
    "local-nonlocal": {"width": 8},
}
