"""Training-batch throughput: the store against the ways paper code gets its inputs.

Prints JSON: samples per second delivered as float training batches of 64 (image plus heatmap,
soft landmark mask, saliency and landmarks) on the CPU, at S = H = 48 (FER-2013's own size) and
S = H = 112 (the same faces upscaled), from

- ``store``: :class:`fer_models.data.stream.StoreBatches` streaming the store on local disk (whole
  shards decoded by :mod:`pipeline.store.shard_reader`, shuffled over a window of shards);
- ``checksum_check``: the stream as it is, its reads checked against the checksums the store
  recorded, against the same stream unchecked (what it read before), one epoch of each in turn,
  and the CPU time per sample of the checks alone: the cost of the check;
- ``store_zarr_python``: the same shards read by zarr-python (one ``array[a:b]`` call per shard
  and field, what StoreBatches did before), made into the same batches: the old path, side by side;
- ``store_lz4``: the same, from a second store built with ``--codec lz4`` (the same values);
- ``memory``: the same batches with the selection already in memory (the ceiling);
- ``http``, ``nginx``, ``s3`` and ``s3_rclone``: the same store streamed from ``fer-store
  serve``, from nginx (where installed; null otherwise) and from two S3-compatible servers on
  loopback, moto and ``rclone serve s3``, with the time to open the store (metadata, selection)
  from each, the CPU it took to stream (``cpu``: microseconds per sample and cores kept busy, of
  this process and of the rest of the machine, the server, which shares these cores), and the
  rate at which the same files are fetched alone, without decoding (what the server and the
  client's HTTP stack allow);
- ``two_core_bound``: what limits the local stream on this machine's cores: the CPU time per
  sample of decoding the stream's shards alone (one thread) and of the training loop (making
  and converting the batches, from the in-memory rate at batch 256), and the rate no stream can
  pass with both sharing the cores perfectly, ``cores / (decode + loop)`` (nor the in-memory
  rate), also as a multiple of the zarr-python path;
- ``random_sample_ms``: the median time to read one random sample (every field) with
  :class:`pipeline.store.shard_reader.SampleReader` and with zarr-python (``array[i]`` per field), locally,
  from ``fer-store serve`` and from nginx;
- ``jpeg``: decoding the source JPEG files each time and resizing to S, image only (what an
  image-folder loader does);
- ``jpeg_and_dlib``: decoding plus detection, 68 landmarks, alignment and the three guidance maps
  recomputed each time (what paper code does).

Each rate is the median of three epochs (two for the remote stores) after a first one (a
training run reads many epochs; the first also pays for opening the store and allocating
buffers). ``store_cpu`` and ``memory_cpu`` give the CPU of those epochs, as ``cpu`` does for a
remote store. ``batch_256`` gives the same at batch 256. The servers run in processes of their
own, as they would for a colleague. All readers run in one process (no DataLoader workers), so
each figure is per process on this machine's cores (the store's decoding threads use them all).

    .venv/bin/python bench/loader.py [--fer-images 6000] [--dlib-images 300]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fer2013_stores import fer2013_stores
from fer_models.data.selection import select_samples
from fer_models.data.stream import WINDOW_SHARDS, StoreBatches
from fer_models.training.engine import prepare_batch
from pipeline.compute.image_chain import process_image
from pipeline.compute.model_files import ModelFiles, thread_models
from pipeline.compute.run import preprocess
from pipeline.config import PreprocessConfig
from pipeline.datasets import get_dataset
from pipeline.stages.decode import decode_image
from pipeline.store import bytes_on_disk, open_store
from pipeline.store.recorded_checksums import RecordedChecksums
from pipeline.store.shard_format import ShardLayout
from pipeline.store.shard_reader import SampleReader, fetch_ranges, start_reading_shards
from tests.support.servers import NGINX, nginx, put_in_bucket, rclone_s3, s3_server, store_server

FIELDS = ("image", "heatmap", "mask_soft", "saliency", "landmarks")
BATCH = 64
CPU = torch.device("cpu")


class UncheckedStoreBatches(StoreBatches):
    """StoreBatches whose shards are not checked against the store's recorded checksums."""

    def _arrays_of(self):
        handles = super()._arrays_of()
        self._checksums = None
        return handles


def cpu_seconds() -> float:
    """CPU seconds of this process so far, every thread's."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds every process of this machine has run so far (Linux ``/proc/stat``: user,
    nice, system, irq and softirq time; idle, iowait and time stolen by the hypervisor left out)."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def rate(batches, n_expected: int, epochs: int = 3, cpu: dict | None = None) -> float:
    """Median samples per second of ``epochs`` passes over ``batches`` after a first pass:
    a :class:`StoreBatches`, whose epoch is set before each pass as the training engine does, or a
    function making one pass. ``cpu``, when given, receives the CPU microseconds per sample of
    those passes, of this process and of the rest of the machine, and the cores each kept busy."""

    def one_pass(epoch: int) -> float:
        if isinstance(batches, StoreBatches):
            batches.set_epoch(epoch)
        began, seen = time.perf_counter(), 0
        for batch in batches() if callable(batches) else batches:
            batch = prepare_batch(batch, CPU)
            seen += len(batch["image"])
        assert seen == n_expected, (seen, n_expected)
        return seen / (time.perf_counter() - began)

    one_pass(0)
    if epochs == 0:
        return 0.0
    began, process_cpu, machine_cpu = time.perf_counter(), cpu_seconds(), machine_busy_seconds()
    rates = [one_pass(epoch) for epoch in range(1, epochs + 1)]
    if cpu is not None:
        wall = time.perf_counter() - began
        process_cpu, machine_cpu = cpu_seconds() - process_cpu, machine_busy_seconds() - machine_cpu
        rest = max(0.0, machine_cpu - process_cpu)
        cpu.update(
            this_process_us_per_sample=round(1e6 * process_cpu / (n_expected * epochs), 1),
            rest_of_machine_us_per_sample=round(1e6 * rest / (n_expected * epochs), 1),
            this_process_cores=round(process_cpu / wall, 2),
            rest_of_machine_cores=round(rest / wall, 2),
        )
    return float(np.median(rates))


def zarr_python_batches(store: Path, selection, shard_size: int):
    """Shuffled batches of the selected samples, each shard of each field read by zarr-python
    (the store opened for each pass, as StoreBatches did)."""
    group = open_store(store)
    arrays = {name: group[name] for name in FIELDS}
    shards = np.unique(selection.index // shard_size)
    window = []
    order = np.random.default_rng(0).permutation(shards)
    for position, shard in enumerate(order):
        rows = selection.index[selection.index // shard_size == shard] - shard * shard_size
        read = {name: array[shard * shard_size : (shard + 1) * shard_size][rows] for name, array in arrays.items()}
        window.append(read)
        if len(window) == 8 or position == len(order) - 1:
            merged = {name: np.concatenate([part[name] for part in window]) for name in FIELDS}
            shuffled = np.random.default_rng(1).permutation(len(merged["image"]))
            for first in range(0, len(shuffled), BATCH):
                rows = shuffled[first : first + BATCH]
                yield {name: torch.from_numpy(values[rows]) for name, values in merged.items()}
            window = []


def jpeg_batches(root: Path, sources: list[str], size: int, guidance: bool, config):
    """Batches made the way paper code makes them: decode (and recompute guidance) per sample."""
    models = thread_models(ModelFiles.locate()) if guidance else None
    order = np.random.default_rng(0).permutation(len(sources))
    for first in range(0, len(order), BATCH):
        images, maps = [], []
        for i in order[first : first + BATCH]:
            pixels = decode_image((root / sources[i]).read_bytes(), max_pixels=config.decode.max_pixels)
            if guidance:
                result = process_image(pixels, None, config, models)
                if result.image is None:  # no face: the paper scripts skip or blank it
                    result.image = np.zeros((1, size, size), np.uint8)
                    result.guidance = {
                        k: np.zeros((1, size, size), np.uint8) for k in ("heatmap", "mask_soft", "saliency")
                    }
                images.append(result.image)
                maps.append(np.concatenate([result.guidance[k] for k in ("heatmap", "mask_soft", "saliency")]))
            else:
                images.append(cv2.resize(pixels, (size, size), interpolation=cv2.INTER_LINEAR)[None])
        batch = {"image": torch.from_numpy(np.stack(images))}
        if guidance:
            batch["guidance"] = torch.from_numpy(np.stack(maps))
        yield batch


def random_sample_ms(location: str, count: int = 200) -> dict:
    """Median milliseconds to read one random sample's fields, fast path and zarr-python."""
    group = open_store(location)
    arrays = {name: group[name] for name in FIELDS}
    indices = np.random.default_rng(0).integers(0, group["image"].shape[0], count)
    read_sample = SampleReader(arrays)
    times = {"shard_reader": [], "zarr_python": []}
    for index in indices:
        began = time.perf_counter()
        read_sample(int(index))
        times["shard_reader"].append(time.perf_counter() - began)
        began = time.perf_counter()
        for array in arrays.values():
            array[int(index)]
        times["zarr_python"].append(time.perf_counter() - began)
    return {path: round(1e3 * float(np.median(values)), 2) for path, values in times.items()}


def fetch_only_rate(location: str, selection, n: int) -> float:
    """Samples per second of fetching (not decoding) every file the stream reads, a window of
    shards (all fields) per concurrent round: what the server and the client's HTTP stack allow."""
    group = open_store(location)
    layouts = [ShardLayout.of(group[name]) for name in FIELDS]
    shards = np.unique(selection.index // layouts[0].shard_len).tolist()
    store = group.store_path.store
    rates = []
    for _ in range(3):
        began = time.perf_counter()
        for first in range(0, len(shards), WINDOW_SHARDS):
            window = shards[first : first + WINDOW_SHARDS]
            fetch_ranges(store, [(layout.key(shard), 0, None) for layout in layouts for shard in window])
        rates.append(n / (time.perf_counter() - began))
    return float(np.median(rates))


def window_passes(read_window, shards: list[int], n: int, count: int = 3) -> dict:
    """Samples per second and CPU microseconds per sample (``n`` samples) of reading every shard,
    ``WINDOW_SHARDS`` at a time with ``read_window(shards)``: medians of ``count`` passes after a
    first."""
    rates, costs = [], []
    for _ in range(count + 1):
        began, cpu = time.perf_counter(), cpu_seconds()
        for first in range(0, len(shards), WINDOW_SHARDS):
            read_window(shards[first : first + WINDOW_SHARDS])
        rates.append(n / (time.perf_counter() - began))
        costs.append(1e6 * (cpu_seconds() - cpu) / n)
    return {
        "samples_per_s": round(float(np.median(rates[1:]))),
        "cpu_us_per_sample": round(float(np.median(costs[1:])), 1),
    }


def decode_cpu_us(store: Path, selection, shard_size: int) -> float:
    """CPU microseconds per selected sample of reading and decoding the shards that hold the
    selection (every field, one decoding thread, the calling thread only waiting), each shard
    checked against the store's recorded checksums as the stream checks it."""
    group = open_store(store)
    arrays = {name: group[name] for name in FIELDS}
    checksums = RecordedChecksums.of(group, FIELDS)
    shards = np.unique(selection.index // shard_size).tolist()
    out = {name: np.empty((WINDOW_SHARDS * shard_size, *a.shape[1:]), a.dtype) for name, a in arrays.items()}
    read = lambda window: start_reading_shards(arrays, window, out, threads=1, checksums=checksums).wait()
    return window_passes(read, shards, len(selection))["cpu_us_per_sample"]


class TimedChecksums(RecordedChecksums):
    """RecordedChecksums that add up the CPU time of their checks (of the calling thread)."""

    def __init__(self, checksums: RecordedChecksums):
        super().__init__(checksums.recorded, checksums.shard_len, checksums.ndim)
        self.seconds = 0.0

    def check(self, name, first, values):
        began = time.thread_time()
        super().check(name, first, values)
        self.seconds += time.thread_time() - began


def checked_against_unchecked(store: Path, selection, n: int, pairs: int = 12, epochs: int = 10) -> dict:
    """The stream with its reads checked against the recorded checksums, and without, ``epochs``
    epochs of each in turn (``pairs`` times, after a first epoch of each, the one going first
    alternating; one epoch of a small selection is too short to time on a shared machine): the
    median ratio of the paired rates; and the CPU time of the checks alone per sample, in decoding every shard of the
    selection (one thread), on the first pass (which also works out the checksums of whole
    inner chunks from the per-sample ones) and the median of three after it."""
    checked = StoreBatches(store, selection, FIELDS, BATCH, shuffle=True, in_memory=False)
    unchecked = UncheckedStoreBatches(store, selection, FIELDS, BATCH, shuffle=True, in_memory=False)
    rate(checked, n, epochs=0), rate(unchecked, n, epochs=0)
    ratios, rates = [], {"checked": [], "unchecked": []}
    for pair in range(pairs):
        streams = [("checked", checked), ("unchecked", unchecked)]
        for name, batches in streams if pair % 2 == 0 else streams[::-1]:
            began, seen = time.perf_counter(), 0
            for epoch in range(1 + pair * epochs, 1 + (pair + 1) * epochs):
                batches.set_epoch(epoch)
                seen += sum(len(prepare_batch(batch, CPU)["image"]) for batch in batches)
            rates[name].append(seen / (time.perf_counter() - began))
        ratios.append(rates["checked"][-1] / rates["unchecked"][-1])
    group = open_store(store)
    arrays = {name: group[name] for name in FIELDS}
    timed = TimedChecksums(RecordedChecksums.of(group, FIELDS))
    shards = np.unique(selection.index // checked.shard_size).tolist()
    out = {name: np.empty((WINDOW_SHARDS * checked.shard_size, *a.shape[1:]), a.dtype) for name, a in arrays.items()}
    check_us = []
    for _ in range(4):
        timed.seconds = 0.0
        for first in range(0, len(shards), WINDOW_SHARDS):
            start_reading_shards(arrays, shards[first : first + WINDOW_SHARDS], out, 1, timed).wait()
        check_us.append(1e6 * timed.seconds / n)
    return {
        "checked_samples_per_s": round(float(np.median(rates["checked"]))),
        "unchecked_samples_per_s": round(float(np.median(rates["unchecked"]))),
        "checked_over_unchecked_median_of_pairs": round(float(np.median(ratios)), 3),
        "pair_ratios": [round(r, 3) for r in ratios],
        "check_cpu_us_per_sample_first_pass": round(check_us[0], 2),
        "check_cpu_us_per_sample": round(float(np.median(check_us[1:])), 2),
    }


def two_core_bound(decode_us: float, memory_rate: float, zarr_python_rate: float) -> dict:
    """The most a stream can deliver when decoding (``decode_us`` of CPU per sample) and the
    training loop (``1 / memory_rate`` s per sample, one thread) share this machine's cores
    without loss."""
    loop_us = 1e6 / memory_rate
    cores = os.cpu_count() or 1
    bound = min(memory_rate, cores * 1e6 / (decode_us + loop_us))
    return {
        "cores": cores,
        "decode_cpu_us_per_sample": decode_us,
        "loop_cpu_us_per_sample": round(loop_us, 1),
        "samples_per_s": round(bound),
        "times_zarr_python": round(bound / zarr_python_rate, 2),
    }


def open_and_select(location: str):
    """Seconds to open the store and select the train split, and the selection."""
    began = time.perf_counter()
    open_store(location)
    selection = select_samples(location, "train")
    return time.perf_counter() - began, selection


def remote(location: str, n: int) -> dict:
    """Seconds to open the store and select the train split, streamed samples per second with
    the CPU it took (this process: decoding, the HTTP client, the training loop; the rest of the
    machine: on this otherwise idle machine, the server), and the rate of fetching the same files
    alone."""
    opened, selection = open_and_select(location)
    streaming = StoreBatches(location, selection, FIELDS, BATCH, shuffle=True, in_memory=False)
    cpu = {}
    return {
        "open_seconds": round(opened, 3),
        "samples_per_s": round(rate(streaming, n, epochs=2, cpu=cpu)),
        "cpu": cpu,
        "fetch_only_samples_per_s": round(fetch_only_rate(location, selection, n)),
    }


def measure(root: Path, store: Path, config: PreprocessConfig, workdir: Path, dlib_images: int) -> dict:
    """Every figure of one store (built from the images under ``root``) at its size."""
    size = config.align.size
    selection = select_samples(store, "train")
    n = len(selection)
    thread_models(ModelFiles.locate())  # dlib's models load once, outside the timing
    manifest = get_dataset("fer2013").scan(root)
    train_sources = [s for s, split in zip(manifest.source, manifest.split) if split == 0]
    with store_server(store, separate_process=True) as url:
        http = remote(url, n)
        http["random_sample_ms"] = random_sample_ms(url)
    nginx_http = None
    if NGINX:
        with nginx(store.parent, workdir / f"nginx-{size}") as base:
            nginx_http = remote(f"{base}/{store.name}", n)
            nginx_http["random_sample_ms"] = random_sample_ms(f"{base}/{store.name}")
    with s3_server(separate_process=True):
        put_in_bucket(store, f"s3://bench-{size}/s.zarr")
        s3 = remote(f"s3://bench-{size}/s.zarr", n)
    buckets = workdir / f"buckets-{size}"
    (buckets / "bench").mkdir(parents=True)
    (buckets / "bench" / "s.zarr").symlink_to(store)
    with rclone_s3(buckets):
        s3_rclone = remote("s3://bench/s.zarr", n)

    lz4_store = workdir / f"s{size}-lz4.zarr"
    preprocess(lz4_store, "fer2013", root, dataclasses.replace(config, codec="lz4"), workers=2)

    def loaders(batch_size: int) -> dict:
        def streaming(location: Path) -> StoreBatches:
            return StoreBatches(location, selection, FIELDS, batch_size, shuffle=True, in_memory=False)

        in_memory = StoreBatches(store, selection, FIELDS, batch_size, shuffle=True, in_memory=True)
        store_cpu, memory_cpu = {}, {}
        return {
            "store_samples_per_s": round(rate(streaming(store), n, cpu=store_cpu)),
            "store_cpu": store_cpu,
            "store_lz4_samples_per_s": round(rate(streaming(lz4_store), n)),
            "memory_samples_per_s": round(rate(in_memory, n, cpu=memory_cpu)),  # its first pass loads the selection
            "memory_cpu": memory_cpu,
        }

    zarr_python = rate(lambda: zarr_python_batches(store, selection, config.shard_size), n)
    batch_256 = loaders(256)
    return {
        "local_open_seconds": round(open_and_select(str(store))[0], 3),
        "random_sample_ms": random_sample_ms(str(store)),
        "http": http,
        "nginx": nginx_http,
        "s3": s3,
        "s3_rclone": s3_rclone,
        "samples": n,
        **loaders(BATCH),
        "store_zarr_python_samples_per_s": round(zarr_python),
        "jpeg_samples_per_s": round(
            rate(lambda: jpeg_batches(root, train_sources, size, False, config), len(train_sources))
        ),
        "jpeg_and_dlib_samples_per_s": round(
            rate(lambda: jpeg_batches(root, train_sources[:dlib_images], size, True, config), dlib_images, epochs=1),
            1,
        ),
        "store_bytes_per_sample": round(bytes_on_disk(store) / len(manifest)),
        "store_lz4_bytes_per_sample": round(bytes_on_disk(lz4_store) / len(manifest)),
        "lz4_random_sample_ms": random_sample_ms(str(lz4_store)),
        "batch_256": batch_256,
        "checksum_check": checked_against_unchecked(store, selection, n),
        "two_core_bound": two_core_bound(
            decode_cpu_us(store, selection, config.shard_size), batch_256["memory_samples_per_s"], zarr_python
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fer-images", type=int, default=6000)
    parser.add_argument("--dlib-images", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as workdir:
        workdir = Path(workdir)
        result = {
            f"S={size}": measure(workdir / "fer", store, config, workdir, args.dlib_images)
            for size, store, config in fer2013_stores(workdir, args.fer_images)
        }
    result["fields"] = list(FIELDS)
    result["batch_size"] = BATCH
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
