"""The tensors' codec (``fer-preprocess --codec``): zstd against lz4, written and read for real.

Builds FER-2013 stores at S = H = 48 and 112 (default guidance), then writes their tensors
(image, heatmap, mask_soft, saliency, landmarks) again with each codec through the store's own
writer (:func:`pipeline.store.writer.create_array`, :func:`pipeline.store.shard_writer.write_whole_shard`)
and reads them back through its reader (:func:`pipeline.store.shard_reader.read_shards`), and
prints JSON per codec: bytes per sample on disk, microseconds per sample to encode and write (one
thread) and to read and decode into buffers allocated once (file reads, checksums and
decompression; median of 7 passes, one thread and the pool's threads, the codecs taking turns).

    .venv/bin/python bench/tensor_codecs.py [--fer-images 3000]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fer2013_stores import fer2013_stores
from pipeline.config import TENSOR_CODECS, PreprocessConfig
from pipeline.store import open_store
from pipeline.store.location import ContainedLocalStore
from pipeline.store.schema import array_specs
from pipeline.store.shard_reader import DECODE_THREADS, start_reading_shards
from pipeline.store.shard_writer import write_whole_shard
from pipeline.store.writer import create_array

FIELDS = ("image", "heatmap", "mask_soft", "saliency", "landmarks")


def measure(store: Path, config: PreprocessConfig, workdir: Path) -> dict:
    source = open_store(store)
    values = {name: source[name][:] for name in FIELDS}
    n = len(values["image"])
    specs = [spec for spec in array_specs(config) if spec.name in FIELDS]
    shards = list(range(-(-n // config.shard_size)))
    result, written = {"samples": n}, {}
    for codec in TENSOR_CODECS:
        root = workdir / f"{store.stem}-{codec}.zarr"
        group = zarr.open_group(str(root), mode="w", zarr_format=3)
        arrays = {spec.name: create_array(group, spec, n, config.shard_size, codec) for spec in specs}
        began = time.perf_counter()
        for name, array in arrays.items():
            for shard in shards:
                start = shard * config.shard_size
                assert write_whole_shard(root, array, start, values[name][start : start + config.shard_size])
        result[codec] = {
            "bytes_per_sample": round(
                sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and f.name != "zarr.json") / n
            ),
            "write_us_per_sample": round((time.perf_counter() - began) / n * 1e6, 1),
        }
        group = zarr.open_group(ContainedLocalStore(root), mode="r")  # how open_store opens a local store
        written[codec] = {name: group[name] for name in FIELDS}
    # into buffers allocated once, as StoreBatches reads; codecs and thread counts take turns
    out = {name: np.empty((len(shards) * config.shard_size, *v.shape[1:]), v.dtype) for name, v in values.items()}
    passes = {(codec, threads): [] for codec in TENSOR_CODECS for threads in (1, DECODE_THREADS)}
    for _ in range(7):
        for (codec, threads), times in passes.items():
            began = time.perf_counter()
            start_reading_shards(written[codec], shards, out, threads).wait()
            times.append(time.perf_counter() - began)
    for codec, arrays in written.items():  # what is read is what was written
        start_reading_shards(arrays, shards, out).wait()
        assert all(np.array_equal(out[name][:n], values[name]) for name in FIELDS), codec
    for (codec, threads), times in passes.items():
        result[codec][f"read_us_per_sample_{threads}_threads"] = round(float(np.median(times)) / n * 1e6, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fer-images", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-codecs-") as workdir:
        workdir = Path(workdir)
        stores = fer2013_stores(workdir, args.fer_images)
        result = {f"S={size}": measure(store, config, workdir) for size, store, config in stores}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
