"""Epoch times with the data held on the training device (``--device-data auto``) and without
(``off``: batches made from memory on the host by the loader, then copied).

Trains one model on a store with each setting in turn, ``--repeats`` times, alternating, and
prints JSON: per setting the training pass's seconds of each epoch (``log.jsonl``'s
``training_seconds``: the steps, until the device finished) and the part spent waiting for the next
batch (``data_wait_seconds``). Both settings train on the same batches, so they reach the same
weights (tests/fer_models/data/test_device_batches.py).

    .venv/bin/python bench/device_data.py --store stores/fer2013.zarr [--model cnn] [--repeats 2] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.train import parse_options
from fer_models.training.config import TrainConfig
from fer_models.training.engine import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE model option")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    trainers = {
        setting: Trainer(
            TrainConfig(
                store=args.store,
                model=args.model,
                options=parse_options(args.model, tuple(args.option)),
                batch_size=args.batch_size,
                labels="7",
                device=args.device,
                in_memory=True,
                device_data=setting,
            )
        )
        for setting in ("auto", "off")
    }
    timings: dict[str, list[dict[str, float]]] = {setting: [] for setting in trainers}
    for repeat in range(args.repeats):
        for setting, trainer in trainers.items():
            trainer.train_epoch(repeat + 1)
            timings[setting].append(dict(trainer.epoch_timing))
    report = {
        "store": args.store,
        "model": args.model,
        "options": args.option,
        "device": str(trainers["auto"].device),
        "samples_per_epoch": len(trainers["auto"].train_selection),
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    for setting, epochs in timings.items():
        report[f"device_data_{setting}"] = {
            "training_seconds": [epoch["training_seconds"] for epoch in epochs],
            "data_wait_seconds": [epoch["data_wait_seconds"] for epoch in epochs],
            "median_training_seconds": statistics.median(epoch["training_seconds"] for epoch in epochs),
        }
    report["speedup"] = round(
        report["device_data_off"]["median_training_seconds"] / report["device_data_auto"]["median_training_seconds"], 3
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
