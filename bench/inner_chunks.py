"""Samples per inner chunk against whole-shard reads, random single-sample reads and bytes on disk.

Copies the ``image`` and ``heatmap`` arrays of each store given (built by fer-preprocess, e.g.
``make preprocess DATASET=fer2013 SIZE=112``) into stores that differ only in how many samples an
inner chunk holds, then reads each with :mod:`pipeline.store.shard_reader`: every shard whole (ms per
shard, both arrays) and 200 random samples (median ms per sample, both arrays). Prints JSON.

    .venv/bin/python bench/inner_chunks.py --store stores/fer2013-48.zarr --store stores/fer2013-112.zarr
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.store import open_store
from pipeline.store.shard_reader import SampleReader, read_shards

ARRAYS = ("image", "heatmap")
COUNTS = (1, 2, 4, 8, 16, 32, 64, 256)


def relayout(source: zarr.Group, destination: Path, samples: int) -> zarr.Group:
    """A store holding ``ARRAYS`` of ``source`` with ``samples`` per inner chunk (the same shards)."""
    group = zarr.open_group(str(destination), mode="w", zarr_format=3)
    for name in ARRAYS:
        array = source[name]
        shard = array.shards
        copy = group.create_array(
            name,
            shape=array.shape,
            dtype=array.dtype,
            chunks=(samples, *shard[1:]),
            shards=shard,
            compressors=[ZstdCodec(level=3), Crc32cCodec()],
            fill_value=array.metadata.fill_value,
        )
        copy[:] = array[:]
    return group


def measure(group: zarr.Group, folder: Path) -> dict:
    arrays = {name: group[name] for name in ARRAYS}
    shard_len = arrays["image"].shards[0]
    shards = list(range(-(-arrays["image"].shape[0] // shard_len)))
    began = time.perf_counter()
    for _ in range(3):
        read_shards(arrays, shards)
    whole = (time.perf_counter() - began) / 3 / len(shards)
    times = []
    read_sample = SampleReader(arrays)
    for index in np.random.default_rng(0).integers(0, arrays["image"].shape[0], 200):
        began = time.perf_counter()
        read_sample(int(index))
        times.append(time.perf_counter() - began)
    return {
        "ms_per_shard": round(1e3 * whole, 2),
        "ms_per_random_sample": round(1e3 * float(np.median(times)), 3),
        "bytes_per_sample": round(
            sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / arrays["image"].shape[0]
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", action="append", required=True, help="a store with image and heatmap (repeatable)")
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory(prefix="bench-inner-") as workdir:
        for location in args.store:
            source = open_store(location)
            size = source["image"].shape[-1]
            rows = {}
            for samples in COUNTS:
                folder = Path(workdir) / f"s{size}-{samples}.zarr"
                rows[samples] = measure(relayout(source, folder, samples), folder)
            result[f"S={size}"] = {
                "image_inner_chunk_now": list(source["image"].chunks),
                "samples_per_inner_chunk": rows,
            }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
