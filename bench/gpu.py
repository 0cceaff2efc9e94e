"""Does the GPU wait on the store? Loader and model throughput of every model family, side by side.

For each registered model at the store's image size and the model's default batch size, through
the training engine itself (:class:`fer_models.training.engine.Trainer`: bf16 autocast where the GPU has
it, channels-last, pinned memory and non-blocking copies on CUDA), prints JSON with

- ``loader_samples_per_s``: samples per second the loader delivers onto the device (the model's
  fields streamed from the store, decoded, batched, copied; nothing computed), with no loader
  workers and with ``--workers`` spawned ones (started once for the run, as training does): over
  the whole run (the workers' start included), over the epochs after the first (the steady
  rate), and the wait for the first batch of the first and of later epochs;
- ``train_steps_per_s`` / ``train_samples_per_s``: optimizer steps (augmentation on the device,
  forward, loss, backward, Adam) on one batch already on the device: the model's own speed;
- ``host_syncs_per_step``: on CUDA, the times one such step made the host wait for the GPU
  (``torch.cuda.set_sync_debug_mode``); 0 lets the host queue the next step while the GPU runs;
- ``loader_over_model``: the loader's steady samples/s (the better of the two) over the model's
  samples/s; below 1 the GPU waits on data (``gpu_waits_on_data``).

The store is built here beforehand (``--build``, needs dlib and the shared data) and carried to
the GPU machine, which needs only torch, zarr, numcodecs, google-crc32c and zstandard (bench/gpu.sh).

    python bench/gpu.py --build build/gpu-store.zarr [--images 1024] [--size 112]
    python bench/gpu.py --store build/gpu-store.zarr [--device auto] [--steps 30] [--epochs 3] [--workers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_models.data.augment import AugmentConfig, augment_batch
from fer_models.data.stream import make_loader
from fer_models.models.registry import list_models
from fer_models.training.config import TrainConfig
from fer_models.training.engine import Trainer, prepare_batch

GUIDANCE = "heatmap,saliency,mask_soft,mask_binary,mask_hull,regions"


def build(store: Path, images: int, size: int) -> None:
    """A store of ``images`` FER-2013 faces (test split half) at S = H = ``size``, gray."""
    from pipeline.compute.run import SYNCHRONOUS, preprocess
    from pipeline.config import build_config
    from tests.support.shared_data import extract_fer2013

    root = extract_fer2013(store.parent / "gpu-fer2013", per_class=max(1, images // 14))
    config = build_config(
        {"detect": {"prior": "full-frame"}, "align": {"size": size, "color": "gray"}, "guidance": {"types": GUIDANCE}}
    )
    preprocess(store, "folder", root, config, scheduler=SYNCHRONOUS if os.cpu_count() == 1 else None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loader_rate(trainer: Trainer, epochs: int) -> dict:
    """Samples per second the training loader (its ``--workers`` processes started once, serving
    every epoch) delivers onto the device over ``epochs`` whole passes of the train split: over
    the whole run (the workers' start included) and over the epochs after the first (``steady``;
    NaN for one epoch), and the seconds to the first batch of the first and of later epochs."""
    samples, first_batch, began = [], [], time.perf_counter()
    for epoch in range(epochs):
        trainer.train_batches.set_epoch(epoch)
        epoch_began, count = time.perf_counter(), 0
        for i, batch in enumerate(trainer._loader(trainer.train_batches)):
            batch = prepare_batch(batch, trainer.device)
            count += len(batch["target"])
            if i == 0:
                synchronize(trainer.device)
                first_batch.append(time.perf_counter() - epoch_began)
        synchronize(trainer.device)
        samples.append(count)
        if epoch == 0:
            first_epoch_ended = time.perf_counter()
    ended = time.perf_counter()
    later = first_batch[1:] or [float("nan")]
    steady = sum(samples[1:]) / (ended - first_epoch_ended) if epochs > 1 else float("nan")
    return {
        "samples_per_s": round(sum(samples) / (ended - began), 1),
        "steady_samples_per_s": round(steady, 1),
        "first_batch_s": round(first_batch[0], 3),
        "later_first_batch_s": round(sum(later) / len(later), 3),
    }


def model_rate(trainer: Trainer, steps: int) -> tuple[float, float | None]:
    """Optimizer steps per second on one augmented batch that stays on the device, and on CUDA
    the host syncs per step (counted over 3 further steps; None elsewhere)."""
    batch = prepare_batch(next(iter(make_loader(trainer.train_batches, pin_memory=trainer.cuda))), trainer.device)
    generator = torch.Generator().manual_seed(0)
    trainer.model.train()
    step = lambda: trainer.train_step(augment_batch(dict(batch), AugmentConfig(), trainer.view.permutations, generator))
    for i in range(steps + 3):
        if i == 3:  # after warm-up (cuDNN autotuning, allocator)
            synchronize(trainer.device)
            began = time.perf_counter()
        step()
    synchronize(trainer.device)
    steps_per_s = steps / (time.perf_counter() - began)
    if trainer.device.type != "cuda":
        return steps_per_s, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(3):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "called a synchronizing CUDA operation" in str(w.message)]
    for sync in syncs[:3]:  # where they happen, once per run on stderr
        print(f"host sync: {sync.filename}:{sync.lineno}: {sync.message}", file=sys.stderr)
    return steps_per_s, len(syncs) / 3


def measure(store: str, model: str, device: str, steps: int, workers: int, epochs: int) -> dict:
    loaders = {}
    for count in sorted({workers, 0}, reverse=True):
        config = TrainConfig(store=store, model=model, device=device, in_memory=False, workers=count)
        trainer = Trainer(config)
        loaders[f"workers_{count}"] = loader_rate(trainer, epochs)
    batch_size = trainer.config.batch_size
    steps_per_s, syncs_per_step = model_rate(trainer, steps)
    best_loader = max(rates["steady_samples_per_s"] for rates in loaders.values())
    return {
        "inputs": list(trainer.fields),
        "batch_size": batch_size,
        "loader_samples_per_s": loaders,
        "train_steps_per_s": round(steps_per_s, 2),
        "train_samples_per_s": round(steps_per_s * batch_size, 1),
        "host_syncs_per_step": syncs_per_step,
        "loader_over_model": round(best_loader / (steps_per_s * batch_size), 2),
        "gpu_waits_on_data": best_loader < steps_per_s * batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, help="build the store here (needs dlib and ../shared/data), then exit")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--store", help="the store to measure")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=3, help="passes of the train split timed per loader")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--models", default=",".join(list_models()))
    args = parser.parse_args()
    if args.build:
        build(args.build, args.images, args.size)
        return
    if not args.store:
        parser.error("give --store PATH (built with --build PATH beforehand)")
    if args.epochs < 2:
        parser.error("give --epochs 2 or more: the steady loader rate is timed over the epochs after the first")
    cuda = torch.cuda.is_available()
    report = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda and args.device != "cpu" else "cpu",
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "store": args.store,
        "models": {},
    }
    for model in args.models.split(","):
        report["models"][model] = measure(args.store, model, args.device, args.steps, args.workers, args.epochs)
        print(json.dumps({model: report["models"][model]}), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
