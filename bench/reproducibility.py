"""Which training runs are bit-identical: the same configuration twice at one thread, twice at two
threads, and at one against two threads.

Each model trains a few epochs on one store (a subject fold where ``--folds`` is given), and the
final weights are compared tensor by tensor. Prints JSON: per model, whether each pair is
identical and the largest absolute weight difference between one and two threads.

    .venv/bin/python bench/reproducibility.py --store stores/ckplus.zarr [--folds 10] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from fer_models.training.checkpoint import load_checkpoint
from fer_models.training.config import TrainConfig
from fer_models.training.run_directory import train

MODELS = (("cnn", {}), ("resnet18", {"width": 8}))
RUNS = (("1 thread", 1), ("1 thread again", 1), ("2 threads", 2), ("2 threads again", 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--folds", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    report = {}
    with tempfile.TemporaryDirectory() as scratch:
        for model, options in MODELS:
            weights = {}
            for name, threads in RUNS:
                config = TrainConfig(
                    store=args.store,
                    model=model,
                    options=options,
                    folds=args.folds,
                    epochs=args.epochs,
                    threads=threads,
                )
                run = Path(scratch) / f"{model}-{name.replace(' ', '-')}"
                train(config, run)
                weights[name] = load_checkpoint(run / "last.pt")["model"]

            def same(a: str, b: str, weights: dict = weights) -> bool:
                return all(torch.equal(weights[a][k], weights[b][k]) for k in weights[a])

            gap = max(
                float((weights["1 thread"][k].float() - weights["2 threads"][k].float()).abs().max())
                for k in weights["1 thread"]
            )
            report[model] = {
                "identical_at_1_thread_twice": same("1 thread", "1 thread again"),
                "identical_at_2_threads_twice": same("2 threads", "2 threads again"),
                "identical_at_1_and_2_threads": same("1 thread", "2 threads"),
                "max_abs_weight_difference_1_vs_2_threads": gap,
            }
    print(json.dumps({"store": args.store, "folds": args.folds, "epochs": args.epochs, "models": report}, indent=2))


if __name__ == "__main__":
    main()
