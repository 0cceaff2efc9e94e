"""Preprocessing throughput: the Dask pipeline against a plain serial loop of the same stages.

Prints JSON: images per second on FER-2013 images (48x48, full-frame prior) and on the dlib
example photos (large multi-face photographs, repeated to 96 samples), each with a local cluster
of 1 and 2 workers; milliseconds per stage per image as measured inside the workers; and the
same stages called in a plain loop in this process without Dask or Zarr (the ceiling).

    .venv/bin/python bench/preprocess.py [--fer-images 2000]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.compute.image_chain import StageTimer, process_image
from pipeline.compute.model_files import ModelFiles, thread_models
from pipeline.compute.run import preprocess
from pipeline.config import build_config
from pipeline.datasets import get_dataset
from pipeline.stages.decode import decode_image
from tests.support.shared_data import DLIB_FACES, extract_fer2013


def dlib_photo_folder(destination: Path, copies: int) -> Path:
    """The dlib example photos (one class folder), each repeated ``copies`` times."""
    photos = sorted(DLIB_FACES.glob("*.jpg"))
    folder = destination / "photos"
    folder.mkdir(parents=True)
    for copy in range(copies):
        for photo in photos:
            shutil.copy(photo, folder / f"{copy:02d}_{photo.name}")
    return destination


def serial_loop(root: Path, config) -> dict:
    """The same stages, one image after another, in this process: no Dask, no Zarr."""
    adapter = get_dataset("folder")
    manifest = adapter.scan(root)
    models = thread_models(ModelFiles.locate())
    timer = StageTimer()
    began = time.perf_counter()
    for source in manifest.source:
        raw = adapter.read(root, source)
        timer.lap("read")
        pixels = decode_image(raw, max_pixels=config.decode.max_pixels)
        timer.lap("decode")
        process_image(pixels, None, config, models, timer)
    seconds = time.perf_counter() - began
    n = len(manifest)
    return {
        "images": n,
        "seconds": round(seconds, 3),
        "images_per_second": round(n / seconds, 1),
        "ms_per_stage": {k: round(v * 1000 / n, 3) for k, v in sorted(timer.seconds.items())},
    }


def pipeline_run(root: Path, config, workers: int, store: Path) -> dict:
    summary = preprocess(store, "folder", root, config, workers=workers)
    n = summary.processed
    return {
        "workers": workers,
        "images": n,
        "seconds": round(summary.seconds, 3),
        "images_per_second": round(summary.images_per_second, 1),
        "ms_per_stage": {k: round(v * 1000 / n, 3) for k, v in sorted(summary.stage_seconds.items())},
        "counts": {k: v for k, v in summary.counts.items() if v},
        "store_bytes_per_sample": round(summary.store_bytes / n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fer-images", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        fer = extract_fer2013(scratch / "fer", per_class=-(-args.fer_images // 14))
        photos = dlib_photo_folder(scratch / "dlib", copies=8)
        cases = {
            "fer2013_48px": (
                fer,
                build_config({"detect": {"prior": "full-frame"}, "align": {"size": 48, "color": "gray"}}),
            ),
            "dlib_photos": (photos, build_config({"align": {"size": 112}, "shard_size": 16})),
        }
        results = {}
        for name, (root, config) in cases.items():
            results[name] = {
                "config": config.to_dict(),
                "serial_loop": serial_loop(root, config),
                "pipeline": [pipeline_run(root, config, w, scratch / f"{name}-{w}.zarr") for w in (1, 2)],
            }
    print(
        json.dumps(
            {
                "benchmark": "preprocess",
                "machine": {
                    "cpus": __import__("os").cpu_count(),
                    "python": platform.python_version(),
                    "numpy": np.__version__,
                },
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
