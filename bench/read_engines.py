"""Read engines for whole shards: the store's own shard reader against zarr-python, the zarrs
codec pipeline and tensorstore.

Builds FER-2013 stores at S = H = 48 and 112 (default guidance, shards of 256), then reads every
shard of ``image``, ``heatmap``, ``mask_soft``, ``saliency`` and ``landmarks`` a window of 8
shards at a time (as the training stream does) and prints JSON: per engine, samples per second
and CPU microseconds per sample (all threads; median of three passes after a first):

- ``shard_reader_1`` / ``_2``: :func:`pipeline.store.shard_reader.start_reading_shards` with one
  and two decoding threads, through the store opened by :func:`pipeline.store.open_store`;
- ``zarr_python``: one ``array[a:b]`` call per window and field through the same store;
- ``zarrs``: the same calls with zarr-python's codec pipeline set to ``zarrs.ZarrsCodecPipeline``,
  on a plain ``zarr.open_group`` (the pipeline reads the files itself, from the path; on the
  store ``open_store`` gives it falls back to zarr-python's own pipeline);
- ``tensorstore_1`` / ``_2``: tensorstore's ``zarr3`` driver on the array folders, with one and
  two threads for file reads and decoding.

``stream``: :class:`fer_models.data.stream.StoreBatches` at batch 256 as training uses it, and the same
with its window reads done by tensorstore (two threads) instead of the shard reader: whether a
faster decoder makes training batches come faster while the training loop shares the cores.

zarrs and tensorstore are not dependencies of the project: ``pip install -e ".[engines]"``
installs them; an engine that is not installed prints null.

    .venv/bin/python bench/read_engines.py [--fer-images 6000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fer_models.data.window_buffers
from bench.fer2013_stores import fer2013_stores
from bench.loader import FIELDS, rate, window_passes
from fer_models.data.selection import select_samples
from fer_models.data.stream import WINDOW_SHARDS, StoreBatches
from pipeline.store import open_store
from pipeline.store.shard_reader import start_reading_shards


def slices(shards: list[int], shard_len: int, n: int) -> slice:
    return slice(shards[0] * shard_len, min((shards[-1] + 1) * shard_len, n))


def tensorstore_arrays(store: Path, threads: int) -> dict:
    import tensorstore

    context = tensorstore.Context(
        {"data_copy_concurrency": {"limit": threads}, "file_io_concurrency": {"limit": threads}}
    )
    spec = lambda name: {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(store / name)}}
    return {name: tensorstore.open(spec(name), context=context, open=True, read=True).result() for name in FIELDS}


class TensorstoreWindow:
    """A window read by tensorstore into the stream's buffer, in the shape of
    :func:`pipeline.store.shard_reader.start_reading_shards` (for ``stream``)."""

    def __init__(self, arrays: dict, shards: list[int], out: dict[str, np.ndarray], shard_len: int):
        self._reads = []
        for name, array in arrays.items():
            for i, shard in enumerate(shards):
                stop = min((shard + 1) * shard_len, array.shape[0])
                rows = out[name][i * shard_len : i * shard_len + stop - shard * shard_len]
                self._reads.append((rows, array[shard * shard_len : stop].read()))

    def wait(self) -> None:
        for rows, read in self._reads:
            rows[:] = read.result()


def engines(store: Path) -> dict:
    group = open_store(store)
    arrays = {name: group[name] for name in FIELDS}
    n, shard_len = arrays["image"].shape[0], arrays["image"].shards[0]
    shards = list(range(-(-n // shard_len)))
    out = {name: np.empty((WINDOW_SHARDS * shard_len, *a.shape[1:]), a.dtype) for name, a in arrays.items()}
    result = {}
    for threads in (1, 2):
        result[f"shard_reader_{threads}"] = window_passes(
            lambda window, threads=threads: start_reading_shards(arrays, window, out, threads).wait(), shards, n
        )

    def through_zarr(arrays):
        return lambda window: [array[slices(window, shard_len, n)] for array in arrays.values()]

    result["zarr_python"] = window_passes(through_zarr(arrays), shards, n, count=1)
    result["zarrs"] = None
    if importlib.util.find_spec("zarrs"):
        with zarr.config.set({"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}):
            plain = zarr.open_group(str(store), mode="r")
            result["zarrs"] = window_passes(through_zarr({name: plain[name] for name in FIELDS}), shards, n)
    for threads in (1, 2):
        result[f"tensorstore_{threads}"] = None
        if importlib.util.find_spec("tensorstore"):
            by_tensorstore = tensorstore_arrays(store, threads)
            result[f"tensorstore_{threads}"] = window_passes(
                lambda window, a=by_tensorstore: [
                    f.result() for f in [x[slices(window, shard_len, n)].read() for x in a.values()]
                ],
                shards,
                n,
            )
    return result


def stream(store: Path) -> dict:
    """Training batches of 256 (the train split) with the window reads of each engine."""
    selection = select_samples(store, "train")
    batches = lambda: StoreBatches(store, selection, FIELDS, 256, shuffle=True, in_memory=False)
    result = {"shard_reader": round(rate(batches(), len(selection))), "tensorstore_2": None}
    if importlib.util.find_spec("tensorstore"):
        by_tensorstore = tensorstore_arrays(store, 2)
        shard_len = open_store(store)["image"].shards[0]
        own = fer_models.data.window_buffers.start_reading_shards
        fer_models.data.window_buffers.start_reading_shards = lambda arrays, shards, out, threads: TensorstoreWindow(
            by_tensorstore, shards, out, shard_len
        )
        try:
            result["tensorstore_2"] = round(rate(batches(), len(selection)))
        finally:
            fer_models.data.window_buffers.start_reading_shards = own
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fer-images", type=int, default=6000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {}
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as workdir:
        for size, store, _ in fer2013_stores(Path(workdir), args.fer_images):
            result[f"S={size}"] = {"decode_alone": engines(store), "stream_batch_256": stream(store)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
