"""A small synthetic store written through the store's own writer: no dataset, no dlib model, no
image decoding, so store, config and registry tests run without ../shared/data.

Samples are random faces (noise images, landmarks scattered over the crop) with random guidance;
every third sample of the test split is ``no_face``. Values are seeded, so two calls write
stores with equal arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import build_config
from pipeline.datasets.manifest import Manifest
from pipeline.store import Status, array_specs, open_store
from pipeline.store.schema import computed_arrays
from pipeline.store.writer import finalize_store, prepare_store, write_shard

LABEL_NAMES = ("neutral", "happy", "sad")
SYNTHETIC_GUIDANCE = ("heatmap", "saliency", "mask_binary", "mask_soft", "mask_hull", "regions")


def synthetic_manifest(n: int) -> Manifest:
    """``n`` rows: labels cycling over three classes, the first 3/4 train, the rest test, six subjects."""
    return Manifest(
        dataset="folder",
        label_names=LABEL_NAMES,
        splits=("train", "test"),
        source=tuple(f"{LABEL_NAMES[i % 3]}/{i:04d}.png" for i in range(n)),
        label=np.arange(n) % 3,
        split=(np.arange(n) >= n * 3 // 4).astype(np.uint8),
        subject=tuple(f"s{i % 6}" for i in range(n)),
    )


def write_synthetic_store(
    path: str | Path, n: int = 48, size: int = 32, shard_size: int = 16, guidance: tuple[str, ...] = SYNTHETIC_GUIDANCE
) -> Path:
    """Write and finalise an ``n``-sample gray store at S = H = ``size``; returns its path."""
    path = Path(path)
    config = build_config(
        {"align": {"size": size, "color": "gray"}, "guidance": {"types": ",".join(guidance)}, "shard_size": shard_size}
    )
    manifest = synthetic_manifest(n)
    prepare_store(path, manifest, config, {"landmarks": {"file": "synthetic", "sha256": "0" * 64}})
    specs = {spec.name: spec for spec in array_specs(config)}
    rng = np.random.default_rng(0)
    for start in range(0, n, shard_size):
        count = min(shard_size, n - start)
        arrays = {}
        for name in computed_arrays(config):
            spec = specs[name]
            shape = (count, *spec.sample_shape)
            if spec.dtype is str:
                arrays[name] = np.array([""] * count, dtype=object)
            elif spec.dtype == "uint8":
                arrays[name] = rng.integers(0, 256, shape, dtype=np.uint8)
            else:
                arrays[name] = (rng.random(shape) * size).astype(spec.dtype)
        arrays["faces_detected"] = np.ones(count, np.uint8)
        status = np.full(count, int(Status.OK), np.uint8)
        no_face = [i for i in range(count) if manifest.split[start + i] == 1 and (start + i) % 3 == 0]
        status[no_face] = Status.NO_FACE
        for i in no_face:
            arrays["message"][i] = "no face found by the detector"
        write_shard(path, start, arrays, status)
    finalize_store(path)
    open_store(path)  # the writer's output passes the reader's checks
    return path
