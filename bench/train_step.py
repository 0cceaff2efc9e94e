"""Milliseconds per training step and peak memory of every registered model.

Each model runs at its default input (channels and size of its constructor, e.g. 48x48 gray for
``cnn``, 112x112 RGB for ``resnet18``) and its default batch size. A step is forward, the loss
with the model's own terms, backward and an Adam step, on a batch whose guidance tensors have
the store's shapes. Each model is measured in a fresh process, so ``peak_rss_mb`` is that
process's peak resident memory (Python, torch and the model included). On the CPU the process
uses every core; where CUDA is present the same runs on the GPU with bfloat16 autocast and
channels-last, with ``peak_cuda_mb`` from torch's allocator.

    .venv/bin/python bench/train_step.py [--steps 10] [--threads N] [--input C,S] [--models A,B]
        [--option MODEL:KEY=VALUE]

``--input 1,48`` measures every model at 48x48 gray (the FER-2013 store) instead of its default;
``--models resnet18,pal`` measures those only; ``--option pal:width=16`` passes a constructor
option to one model (repeatable), e.g. ``--option resnet18:backbone=convnext_nano``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.train import parse_options
from fer_models.models.registry import create_model, get_model_entry, list_models
from fer_models.training.engine import classification_loss
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.stages.regions import region_boxes


def synthetic_batch(model, channels: int, size: int, batch_size: int, generator: torch.Generator) -> dict:
    landmarks = (torch.rand(batch_size, 68, 2, generator=generator) * 0.5 + 0.25) * size
    batch = {
        "image": torch.rand(batch_size, channels, size, size, generator=generator),
        "landmarks": landmarks,
        "target": torch.randint(0, 7, (batch_size,), generator=generator),
    }
    for name in model.inputs:
        if name in ("image", "landmarks"):
            continue
        if GUIDANCE_TYPES[name].boxes:
            batch[name] = torch.from_numpy(np.stack([region_boxes(lm.numpy(), size) for lm in landmarks]))
        else:
            batch[name] = torch.rand(batch_size, len(GUIDANCE_TYPES[name].channels), size, size, generator=generator)
    return batch


def measure_one(
    name: str, device: str, steps: int, input_shape: tuple[int, int] | None, pairs: tuple[str, ...]
) -> dict:
    entry = get_model_entry(name)
    parameters = inspect.signature(entry.build).parameters
    channels, size = input_shape or (parameters["in_channels"].default, parameters["image_size"].default)
    batch_size, options = entry.defaults["batch_size"], parse_options(name, pairs)
    torch.manual_seed(0)
    model = create_model(name, in_channels=channels, num_classes=7, image_size=size, **options).to(device)
    cuda = device == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = {
        k: v.to(device)
        for k, v in synthetic_batch(model, channels, size, batch_size, torch.Generator().manual_seed(0)).items()
    }

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False):
            output = model(batch)
            loss = classification_loss(output["logits"], batch["target"], None) + sum(output.get("losses", {}).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        began = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    result = {
        "input": [channels, size, size],
        "batch_size": batch_size,
        "options": options,
        "parameters": sum(p.numel() for p in model.parameters()),
        "ms_per_step": round(1e3 * float(np.median(times)), 1),
        "ms_per_sample": round(1e3 * float(np.median(times)) / batch_size, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if cuda:
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--input", help="C,S: every model at C channels, SxS (default: each model's own)")
    parser.add_argument("--models", help="comma-separated model names (default: every registered model)")
    parser.add_argument("--option", action="append", default=[], metavar="MODEL:KEY=VALUE")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    input_shape = tuple(int(v) for v in args.input.split(",")) if args.input else None
    if args.one:
        pairs = tuple(item.partition(":")[2] for item in args.option if item.partition(":")[0] == args.one)
        print(json.dumps(measure_one(args.one, args.device, args.steps, input_shape, pairs)))
        return
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    result = {
        "torch_threads": args.threads or torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if "cuda" in devices else None,
    }
    for device in devices:
        result[device] = {}
        for name in args.models.split(",") if args.models else list_models():
            command = [
                sys.executable,
                __file__,
                "--one",
                name,
                "--device",
                device,
                "--steps",
                str(args.steps),
                "--threads",
                str(args.threads),
                *(["--input", args.input] if args.input else []),
                *(f"--option={item}" for item in args.option),
            ]
            result[device][name] = json.loads(
                subprocess.run(command, check=True, capture_output=True, text=True).stdout
            )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
