"""Loader worker processes started per epoch against started once (``persistent_workers``).

Prints JSON: samples per second over ``--epochs`` shuffled passes of a store's train split
(image, heatmap, soft mask, saliency, landmarks; batches of 64), the workers' start included, and
over the passes after the first, for no workers, ``--workers`` started every epoch (what training
did before) and started once (what it does now).

    .venv/bin/python bench/gpu.py --build build/gpu/store48.zarr --images 2048 --size 48
    .venv/bin/python bench/loader_workers.py --store build/gpu/store48.zarr [--workers 2] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_models.data.selection import select_samples
from fer_models.data.stream import StoreBatches, make_loader

FIELDS = ("image", "heatmap", "mask_soft", "saliency", "landmarks")


def rate(store: str, workers: int, persistent: bool, epochs: int) -> dict:
    """Samples per second over all epochs, and over the epochs after the first (workers up)."""
    batches = StoreBatches(store, select_samples(store, "train"), FIELDS, 64, shuffle=True, in_memory=False)
    loader = make_loader(batches, workers, persistent=persistent)
    samples, seconds = [], []
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        began, count = time.perf_counter(), 0
        for batch in loader if persistent else make_loader(batches, workers):
            count += len(batch["index"])
        samples.append(count)
        seconds.append(time.perf_counter() - began)
    return {
        "all_epochs": round(sum(samples) / sum(seconds)),
        "after_the_first": round(sum(samples[1:]) / sum(seconds[1:])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    report = {
        "samples_per_s": {
            "no_workers": rate(args.store, 0, False, args.epochs),
            f"{args.workers}_workers_started_every_epoch": rate(args.store, args.workers, False, args.epochs),
            f"{args.workers}_workers_started_once": rate(args.store, args.workers, True, args.epochs),
        },
        "epochs": args.epochs,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
