"""Writing one shard task's arrays: zarr-python against the whole-shard writer.

Prints JSON: milliseconds to write one 256-sample shard of every array a shard task writes
(aligned image, landmarks, default guidance, detections, message) through
:func:`pipeline.store.writer.write_regions` (whole shards of tensors in one piece) and through
zarr-python alone (``array[a:b] = values`` per array), per image as well, at S = H = 48 (gray)
and 112 (RGB). The values are noise with the stores' shapes, so they compress about as badly as
real faces; median of 5.

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
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import build_config
from pipeline.store.schema import array_specs, computed_arrays
from pipeline.store.writer import create_array, write_regions

SHARD = 256


def shard_values(config) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    specs = {spec.name: spec for spec in array_specs(config)}
    values = {}
    for name in computed_arrays(config):
        spec = specs[name]
        shape = (SHARD, *spec.sample_shape)
        if spec.dtype is str:
            values[name] = np.array(["several faces found"] * SHARD, dtype=object)
        else:
            values[name] = (rng.random(shape) * 250).astype(spec.dtype)
    return values


def median_ms(config, fast: bool, workdir: Path) -> float:
    values = shard_values(config)
    times = []
    for attempt in range(5):
        root = workdir / f"{'fast' if fast else 'zarr'}-{config.align.size}-{attempt}"
        group = zarr.open_group(str(root), mode="w", zarr_format=3)
        for spec in array_specs(config):
            if spec.name in values:
                create_array(group, spec, 4 * SHARD, SHARD)
        began = time.perf_counter()
        if fast:
            write_regions(root, group, SHARD, values)
        else:
            for name, array in values.items():
                group[name][SHARD : 2 * SHARD] = array
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def main() -> None:
    report = {}
    with tempfile.TemporaryDirectory() as scratch:
        for size, color in ((48, "gray"), (112, "rgb")):
            config = build_config({"align": {"size": size, "color": color}})
            zarr_ms, fast_ms = median_ms(config, False, Path(scratch)), median_ms(config, True, Path(scratch))
            report[f"S={size}"] = {
                "zarr_python_ms_per_shard": round(zarr_ms, 1),
                "whole_shard_ms_per_shard": round(fast_ms, 1),
                "zarr_python_ms_per_image": round(zarr_ms / SHARD, 3),
                "whole_shard_ms_per_image": round(fast_ms / SHARD, 3),
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
