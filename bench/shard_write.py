"""Writing one shard task's output: through zarr-python alone against the whole-shard writer.

Prints JSON: milliseconds per image for :func:`pipeline.store.writer.write_shard` to write one
256-sample shard of every array a shard task writes (aligned image, landmarks, the default
guidance, detections, message), its checksums and its status, into a store template, at S = H =
48 (gray) and 112 (RGB): with whole shards of numeric arrays written in one piece
(:mod:`pipeline.store.shard_writer`, what runs) and with every array written by zarr-python
(the writer switched off, what ran before). The values are noise with the stores' shapes, so
they compress about as badly as real faces; median of 5.

    .venv/bin/python bench/shard_write.py
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline.store.writer as writer
from pipeline.config import build_config
from pipeline.store.schema import Status, array_specs, computed_arrays
from tests.support.synthetic_store import synthetic_manifest

SHARD = 256


def shard_values(config) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    specs = {spec.name: spec for spec in array_specs(config)}
    values = {}
    for name in computed_arrays(config):
        spec = specs[name]
        if spec.dtype is str:
            values[name] = np.array(["several faces found"] * SHARD, dtype=object)
        else:
            values[name] = (rng.random((SHARD, *spec.sample_shape)) * 250).astype(spec.dtype)
    return values


def ms_per_image(config, whole_shards: bool, workdir: Path) -> float:
    values, status = shard_values(config), np.full(SHARD, int(Status.OK), np.uint8)
    real = writer.write_whole_shard
    writer.write_whole_shard = real if whole_shards else (lambda *args: False)
    times = []
    try:
        for attempt in range(5):
            path = workdir / f"{whole_shards}-{config.align.size}-{attempt}"
            writer.prepare_store(path, synthetic_manifest(4 * SHARD), config, {})
            began = time.perf_counter()
            writer.write_shard(path, SHARD, values, status)
            times.append(time.perf_counter() - began)
    finally:
        writer.write_whole_shard = real
    return round(statistics.median(times) * 1000 / SHARD, 3)


def main() -> None:
    report = {}
    with tempfile.TemporaryDirectory() as scratch:
        for size, color in ((48, "gray"), (112, "rgb")):
            config = build_config({"align": {"size": size, "color": color}})
            report[f"S={size}"] = {
                "zarr_python_ms_per_image": ms_per_image(config, False, Path(scratch)),
                "whole_shard_ms_per_image": ms_per_image(config, True, Path(scratch)),
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
