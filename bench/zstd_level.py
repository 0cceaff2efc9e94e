"""The zstd level of the store's chunks: decoding and encoding time against bytes on disk.

Builds FER-2013 stores at S = H = 48 and 112 (default guidance), then compresses the inner chunks
(16 samples) of the first 2,048 samples of each tensor array again at each level and prints JSON:
per level, microseconds per sample to decode (median of 7 passes, one thread) and to encode (every
array), and compressed bytes per sample. Any level is read by every zstd decoder, so the level
is the writer's choice alone (``pipeline.store.writer.ZSTD_LEVEL``).

    .venv/bin/python bench/zstd_level.py [--fer-images 3000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numcodecs.zstd
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fer2013_stores import fer2013_stores
from pipeline.store import open_store

FIELDS = ("image", "heatmap", "mask_soft", "saliency", "landmarks")
LEVELS = (1, 2, 3)
SAMPLES, INNER = 2048, 16


def measure(store: Path) -> dict:
    group = open_store(store)
    values = {name: group[name][:SAMPLES] for name in FIELDS}
    n = len(values["image"])
    chunks = {
        name: [np.ascontiguousarray(v[i : i + INNER]).view(np.uint8).reshape(-1) for i in range(0, n, INNER)]
        for name, v in values.items()
    }
    result = {}
    for level in LEVELS:
        began = time.perf_counter()
        frames = {name: [numcodecs.zstd.compress(chunk, level) for chunk in parts] for name, parts in chunks.items()}
        encode = time.perf_counter() - began
        decode = {}
        for name, parts in frames.items():
            out = np.empty(chunks[name][0].size, np.uint8)
            passes = []
            for _ in range(7):
                began = time.perf_counter()
                for frame, chunk in zip(parts, chunks[name]):
                    numcodecs.zstd.decompress(frame, out[: chunk.size])
                passes.append(time.perf_counter() - began)
            decode[name] = round(float(np.median(passes)) / n * 1e6, 2)
        result[f"level {level}"] = {
            "decode_us_per_sample": round(sum(decode.values()), 1),
            "decode_us_per_sample_by_array": decode,
            "encode_us_per_sample": round(encode / n * 1e6, 1),
            "bytes_per_sample": round(sum(len(f) for parts in frames.values() for f in parts) / n),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fer-images", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-zstd-") as workdir:
        stores = fer2013_stores(Path(workdir), args.fer_images)
        result = {f"S={size}": measure(store) for size, store, config in stores}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
