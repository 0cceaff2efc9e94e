"""``fer-store view`` on a real store: time and disk per 1,000 samples, and a screenshot.

Builds the FiftyOne view of ``--samples`` samples of ``--store`` in a fresh cache (images written,
database filled), then again (the dataset found as built), then the same selection into a new
dataset with the images already written; starts the App and, with ``--screenshot``, takes a
headless-Chromium screenshot of the samples grid. Prints JSON: seconds and megabytes, per 1,000
samples, of each step (the database's megabytes beyond those of an empty one, per dataset).

    .venv/bin/python bench/viewer.py --store stores/fer2013.zarr [--samples 1000]
        [--predictions runs/<run>] [--screenshot docs/images/viewer-fer2013.png]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.tools.fiftyone_view import FACE_SLICE, build_view_dataset, launch_view, viewer_database
from tests.support.browser import screenshot
from tests.support.servers import free_port


def megabytes(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--predictions")
    parser.add_argument("--screenshot", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        with viewer_database(Path(folder) / "empty"):
            pass
        empty_database = megabytes(Path(folder) / "empty")
        cache = Path(folder) / "cache"
        began = time.perf_counter()
        with viewer_database(cache):
            started = time.perf_counter()
            options = dict(limit=args.samples, cache=cache, predictions=args.predictions)
            dataset = build_view_dataset(args.store, name="bench", **options)
            built = time.perf_counter()
            build_view_dataset(args.store, name="bench", **options)
            found = time.perf_counter()
            build_view_dataset(args.store, name="bench-again", **options)
            rebuilt = time.perf_counter()
            groups, images_in_view = (
                dataset.select_group_slices(FACE_SLICE).count(),
                dataset.select_group_slices().count(),
            )
            images = megabytes(cache) - megabytes(cache / "mongodb")
            port = free_port()
            session = launch_view(dataset, port=port)
            launched = time.perf_counter()
            if args.screenshot:
                args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot(f"http://127.0.0.1:{port}/datasets/{dataset.name}", args.screenshot)
            session.close()
        database = megabytes(cache / "mongodb")  # once mongod has written everything out
        per_1000 = 1000 / groups
        print(
            json.dumps(
                {
                    "store": args.store,
                    "samples": groups,
                    "images_in_view": images_in_view,
                    "database_start_s": round(started - began, 2),
                    "first_build_s_per_1000": round((built - started) * per_1000, 2),
                    "second_build_s_per_1000": round((found - built) * per_1000, 3),
                    "new_dataset_images_cached_s_per_1000": round((rebuilt - found) * per_1000, 2),
                    "app_start_s": round(launched - rebuilt, 2),
                    "images_mb_per_1000": round(images * per_1000, 2),
                    "database_mb_per_1000_and_dataset": round((database - empty_database) / 2 * per_1000, 1),
                    "database_mb_empty": round(empty_database, 1),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
