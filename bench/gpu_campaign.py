"""The GPU campaign: every guided family and its unguided twin, at full width, on all of FER-2013,
over three seeds, trained at once on one GPU within a few minutes, and the guidance table: each
pair's mean difference with its 95% paired interval (docs/results.md has the CPU's).

Three steps, the first here, the others on the GPU machine (bench/gpu_campaign.sh):

``prepare`` builds the campaign's store from the FER-2013 image archive (S = 48 gray, the
guidance the families read: ``heatmap`` for PAL, ``mask_soft`` for the guided STN, ``mask_hull``
for FERAtt, ``regions`` for local/non-local, at H = 24 to carry less) and cuts it, with the wheels
the GPU machine lacks, into parts that each fit one device call (64 MiB, the checkout included).
It prints the calls to make: the parts go over in back-to-back calls while the machine stays warm,
the last one runs the campaign.

``run`` puts the parts back together into one store (hard links, no copies), starts every run of
:data:`RUNS` for every seed at once (one process each, sharing the GPU) and writes
``campaign.md`` and ``campaign.json``. Every run has the same deadline: it trains one epoch and
reports its time; the runs of a group (the runs :data:`PAIRS` joins: a model, its twin, and what
shares the twin) then all train the same number of epochs, as many as the group's slowest first
epoch leaves room for before the deadline (at most ``--max-epochs``), resuming their own run
directories, so each pair is trained alike. The recipe's first epoch is its warmup, whatever the
number of epochs, so a run is exactly the one that would have been planned with that many epochs
from the start. PublicTest (``val``) selects the epoch, PrivateTest (``test``) is reported.

The tables give, per run, the epochs trained, the selected epoch, PrivateTest accuracy and
macro-F1, optimiser steps per second and the share of the training time spent waiting for the
loader (``log.jsonl``'s ``data_wait_seconds`` over ``training_seconds``; near 0 the GPU never waits
on the store); and per pair, as ``fer-compare`` computes it, the mean difference model - twin over
the seeds with its 95% paired-bootstrap interval.

    .venv/bin/python bench/gpu_campaign.py prepare [--out build/campaign] [--part-mib 56]
    python3 bench/gpu_campaign.py run --parts build/campaign --out OUT [--minutes 7] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> (model, options); every guided family and its unguided twin, at the models' default width.
RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    "stn": ("stn", {}),
    "guided-stn-mask": ("guided-stn", {"guidance": "mask_soft"}),
    "guided-stn-saliency": ("guided-stn", {"guidance": "saliency"}),
    "resnet18": ("resnet18", {}),
    "pal": ("pal", {}),
    "keypoint": ("keypoint", {}),
    "local-nonlocal": ("local-nonlocal", {}),
    "local-nonlocal-grid": ("local-nonlocal", {"regions": "grid"}),
    "feratt": ("feratt", {}),
    "feratt-noattention": ("feratt", {"attention": False}),
}
# (guided, unguided twin): the guidance table's rows, docs/results.md's on the CPU
PAIRS = (
    ("guided-stn-mask", "stn"),
    ("guided-stn-saliency", "stn"),
    ("pal", "resnet18"),
    ("keypoint", "resnet18"),
    ("local-nonlocal", "local-nonlocal-grid"),
    ("feratt", "feratt-noattention"),
)
GUIDANCE = "heatmap,mask_soft,saliency,mask_hull,regions"
STORE_NAME, WHEELS_NAME = "store.zarr", "wheels"
MIB = 1024 * 1024


# --- prepare (the CPU machine) -------------------------------------------------------------------


def build_store(store: Path, images_per_class: int | None, workers: int | None) -> None:
    """The campaign store of the FER-2013 archive (all of it, or the first ``images_per_class``
    of each split and class)."""
    from pipeline.compute.run import preprocess
    from pipeline.config import build_config
    from pipeline.datasets import get_dataset
    from tests.support.shared_data import extract_fer2013

    root = extract_fer2013(store.parent / "fer2013-images", per_class=images_per_class or 10**9)
    config = build_config(
        get_dataset("fer2013").config_defaults,
        {"align": {"size": 48, "color": "gray"}, "guidance": {"types": GUIDANCE, "size": 24}},
    )
    preprocess(store, "fer2013", root, config, workers=workers)


def pack_parts(sources: list[Path], out: Path, part_bytes: int) -> list[Path]:
    """Share the files under ``sources`` (folders) among ``out/part-1``, ``part-2``, ... of at most
    ``part_bytes`` each, every file hard-linked at its path relative to ``out`` (the largest
    files first, each into the first part with room). Returns the parts, in order."""
    files = sorted(
        (path for source in sources for path in source.rglob("*") if path.is_file()),
        key=lambda path: path.stat().st_size,
        reverse=True,
    )
    loads: list[int] = []
    for path in files:
        size = path.stat().st_size
        if size > part_bytes:
            raise SystemExit(f"{path} ({size / MIB:.1f} MiB) is larger than a part ({part_bytes / MIB:.1f} MiB)")
        part = next((i for i, load in enumerate(loads) if load + size <= part_bytes), None)
        if part is None:
            loads.append(0)
            part = len(loads) - 1
        loads[part] += size
        target = out / f"part-{part + 1}" / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    return [out / f"part-{i + 1}" for i in range(len(loads))]


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    store = out / STORE_NAME
    if not store.exists():
        build_store(store, args.images_per_class, args.workers)
    for old in out.glob("part-*"):
        shutil.rmtree(old)
    sources = [store]
    if args.wheels is not None:
        shutil.rmtree(out / WHEELS_NAME, ignore_errors=True)
        shutil.copytree(args.wheels, out / WHEELS_NAME)
        sources.append(out / WHEELS_NAME)
    parts = pack_parts(sources, out, int(args.part_mib * MIB))
    calls = [{"carry": [str(part)], "command": "true"} for part in parts[:-1]]
    calls.append({"carry": [str(parts[-1])], "command": "bash bench/gpu_campaign.sh --minutes 7"})
    return {
        "store": str(store),
        "parts_mib": [round(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / MIB, 1) for p in parts],
        "device_calls_in_order": calls,
    }


# --- run (the GPU machine) -----------------------------------------------------------------------


def assemble(parts_folder: Path) -> Path:
    """One folder from ``parts_folder/part-*`` (hard links); returns the store in it."""
    whole = parts_folder / "assembled"
    for part in sorted(parts_folder.glob("part-*")):
        for path in part.rglob("*"):
            if path.is_file():
                target = whole / path.relative_to(part)
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.link(path, target)
    store = whole / STORE_NAME
    if not (store / "zarr.json").is_file():
        raise SystemExit(f"no {STORE_NAME} in {parts_folder}/part-*: carry every part (bench/gpu_campaign.py prepare)")
    return store


def groups(names: list[str]) -> list[list[str]]:
    """The runs of ``names`` that must train alike: the connected parts of :data:`PAIRS`' graph
    (a run in no pair is a group alone)."""
    found: list[set[str]] = []
    for name in names:
        joined = {name} | {x for pair in PAIRS if name in pair for x in pair if x in names}
        touching = [group for group in found if group & joined]
        for group in touching:
            found.remove(group)
            joined |= group
        found.append(joined)
    return [sorted(group, key=names.index) for group in found]


def run_config(args: argparse.Namespace, name: str, seed: int, epochs: int | None = None) -> Any:
    """Run ``name``'s TrainConfig for ``seed`` (``--option`` pairs go to every model that has the key)."""
    from cli.train import parse_options
    from fer_models.models.registry import get_model_entry
    from fer_models.training.config import TrainConfig

    model, options = RUNS[name]
    takes = get_model_entry(model).options()
    given = tuple(pair for pair in args.option if pair.split("=", 1)[0] in takes)  # width=8 where a model has a width
    return TrainConfig(
        store=str(args.store),
        model=model,
        options={**options, **parse_options(model, given)},
        epochs=epochs,
        labels="7",
        seed=seed,
        device=args.device,
        recipe=args.recipe,
        threads=1,
        batch_size=args.batch_size,
    )


def train_until(args: argparse.Namespace) -> None:
    """One run (``args.name``, ``args.seed``): an epoch, its time reported in ``first_epoch.json``,
    then the epochs the campaign gives its group (``args.epochs_file``, written by :func:`run`)."""
    import torch

    from fer_models.training.run_directory import train

    torch.set_num_threads(1)
    out = args.out / args.name / f"seed{args.seed}"
    train(run_config(args, args.name, args.seed, 1), out)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    (out / "first_epoch.json").write_text(json.dumps({"seconds": log[-1]["seconds"]}))
    while not args.epochs_file.exists() and time.time() < args.deadline:
        time.sleep(0.5)
    epochs = json.loads(args.epochs_file.read_text())["epochs"] if args.epochs_file.exists() else 1
    if epochs > 1:
        train(run_config(args, args.name, args.seed, epochs), out, resume=True)


def group_epochs(first_epochs: list[float], deadline: float, max_epochs: int, now: float) -> int:
    """The epochs a group trains: one, then as many as the slowest first epoch leaves room for
    before ``deadline``, one epoch's time kept for the test pass and the checkpoints."""
    slowest = max(max(first_epochs, default=0.0), 1e-3)
    return max(1, min(max_epochs, 1 + math.floor((deadline - now) / slowest) - 1))


def run_record(run_dir: Path) -> dict[str, Any]:
    """A finished run's row: its figures from ``summary.json`` and ``log.jsonl``."""
    summary = json.loads((run_dir / "summary.json").read_text())
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    steps = sum(epoch["steps"] for epoch in log)
    train_seconds = sum(epoch["training_seconds"] for epoch in log)
    return {
        "epochs": summary["epochs"],
        "selected_epoch": summary["selected_epoch"],
        "selected_by": summary["selected_by"],
        "test_accuracy": summary["test_accuracy"],
        "test_macro_f1": summary["test_macro_f1"],
        "steps_per_s": round(steps / max(train_seconds, 1e-9), 2),
        "data_wait_share": round(sum(epoch["data_wait_seconds"] for epoch in log) / max(train_seconds, 1e-9), 4),
        "minutes": round(summary["seconds"] / 60, 2),
        "device": summary["device"],
    }


def campaign_table(
    rows: dict[str, dict[str, Any]], comparisons: list[dict[str, Any]], failed: dict[str, str], header: str
) -> str:
    from fer_models.training.paired_comparison import guidance_table_markdown

    pct = lambda value: f"{100 * value:.2f}"
    lines = [header, "", guidance_table_markdown(comparisons) if comparisons else "(no pair finished)", ""]
    lines += [
        "| run | epochs | selected epoch | PrivateTest acc | PrivateTest macro-F1 | steps/s | waiting on data | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| `{name}` | {row['epochs']} | {row['selected_epoch']} | {pct(row['test_accuracy'])} | "
            f"{pct(row['test_macro_f1'])} | {row['steps_per_s']} | {pct(row['data_wait_share'])}% | {row['minutes']} |"
        )
    lines += [f"- `{name}` failed: {reason}" for name, reason in failed.items()]
    return "\n".join(lines) + "\n"


def first_epoch_is_planned_alike(recipe_name: str, steps: int = 100) -> bool:
    """Whether the recipe's first epoch has the same learning rates however many epochs follow
    (so a run sized after its first epoch is the run planned with that size from the start)."""
    from fer_models.training.recipe import RECIPES

    recipe = RECIPES[recipe_name]
    return all(recipe.lr_factor(step, steps, 1) == recipe.lr_factor(step, steps, 60) for step in range(steps))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fer_models.training.paired_comparison import comparison_table

    if not first_epoch_is_planned_alike(args.recipe):
        raise SystemExit(f"recipe {args.recipe}: its first epoch depends on the number of epochs; choose another")
    store = args.store if args.store is not None else assemble(args.parts)
    args.store = store
    names = list(RUNS) if args.runs == "all" else args.runs.split(",")
    unknown = [name for name in names if name not in RUNS]
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + 60 * args.minutes
    began = time.time()
    processes = {}
    run_groups = groups(names)
    for group_index, group in enumerate(run_groups):
        for name in group:
            for seed in seeds:
                command = [sys.executable, __file__, "one", name, "--seed", str(seed), "--store", str(store)]
                command += ["--out", str(args.out), "--deadline", str(deadline), "--device", args.device]
                command += ["--recipe", args.recipe, "--max-epochs", str(args.max_epochs)]
                command += ["--epochs-file", str(args.out / f"group{group_index}-epochs.json")]
                command += [f"--option={option}" for option in args.option]
                if args.batch_size:
                    command += ["--batch-size", str(args.batch_size)]
                log = open(args.out / f"{name}-seed{seed}.log", "w")  # closed when the process ends
                processes[name, seed] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
    decided: set[int] = set()
    while len(decided) < len(run_groups):  # each group's epochs, once all its first epochs are in
        for group_index, group in enumerate(run_groups):
            members = [(name, seed) for name in group for seed in seeds]
            reports = [args.out / name / f"seed{seed}" / "first_epoch.json" for name, seed in members]
            settled = [r.exists() or processes[m][0].poll() is not None for r, m in zip(reports, members)]
            if group_index not in decided and all(settled):
                seconds = [json.loads(r.read_text())["seconds"] for r in reports if r.exists()]
                epochs = group_epochs(seconds, deadline, args.max_epochs, time.time())
                (args.out / f"group{group_index}-epochs.json").write_text(json.dumps({"epochs": epochs}))
                decided.add(group_index)
        time.sleep(0.5)
    rows, failed = {}, {}
    for (name, seed), (process, log) in processes.items():
        code = process.wait()
        log.close()
        if code == 0:
            rows[f"{name} seed {seed}"] = run_record(args.out / name / f"seed{seed}")
        else:
            tail = (args.out / f"{name}-seed{seed}.log").read_text(errors="replace").strip().splitlines()[-1:]
            failed[f"{name} seed {seed}"] = f"exit status {code}: {tail[0] if tail else ''}"
    comparisons = []
    for guided, twin in PAIRS:
        if all(f"{name} seed {seed}" in rows for name in (guided, twin) for seed in seeds):
            dirs = {name: [args.out / name / f"seed{seed}" for seed in seeds] for name in (guided, twin)}
            a, b = run_config(args, guided, seeds[0]), run_config(args, twin, seeds[0])
            comparisons.append(comparison_table(a, b, seeds, dirs[guided], dirs[twin]))
    device = next(iter(rows.values()))["device"] if rows else args.device
    header = (
        f"FER-2013, 7 classes, recipe `{args.recipe}`, seeds {args.seeds}, {len(processes)} runs at once on "
        f"{device}, {args.minutes} min each, the runs of each pair trained alike; PublicTest selects the "
        "epoch, PrivateTest is reported; intervals: paired bootstrap over the seeds and the test samples."
    )
    report = {"runs": rows, "comparisons": comparisons, "failed": failed, "minutes": args.minutes}
    report.update(recipe=args.recipe, seeds=seeds, wall_minutes=round((time.time() - began) / 60, 2))
    (args.out / "campaign.json").write_text(json.dumps(report, indent=2))
    (args.out / "campaign.md").write_text(campaign_table(rows, comparisons, failed, header))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="build the campaign store and cut it into parts")
    p.add_argument("--out", type=Path, default=Path("build/campaign"))
    p.add_argument("--part-mib", type=float, default=56.0)
    p.add_argument("--wheels", type=Path, help="wheels the GPU machine lacks (zarr, numcodecs, crc32c, zstandard)")
    p.add_argument("--images-per-class", type=int, help="only the first N images of each split and class")
    p.add_argument("--workers", type=int)
    for name in ("run", "one"):
        r = commands.add_parser(name)
        if name == "one":
            r.add_argument("name")
            r.add_argument("--seed", type=int, required=True)
            r.add_argument("--deadline", type=float, required=True)
            r.add_argument("--store", type=Path, required=True)
            r.add_argument("--epochs-file", type=Path, required=True)
        else:
            where = r.add_mutually_exclusive_group(required=True)
            where.add_argument("--parts", type=Path, help="the folder of part-1, part-2, ...")
            where.add_argument("--store", type=Path)
            r.add_argument("--runs", default="all", help=f"comma-separated, of: {', '.join(RUNS)}")
            r.add_argument("--minutes", type=float, default=7.0)
            r.add_argument("--seeds", default="0,1,2", help="comma-separated; every run trains each")
        r.add_argument("--out", type=Path, required=True)
        r.add_argument("--device", default="auto")
        r.add_argument("--recipe", default="adamw-cosine")
        r.add_argument("--max-epochs", type=int, default=60)
        r.add_argument("--batch-size", type=int)
        r.add_argument("--option", action="append", default=[], help="KEY=VALUE for every run whose model has KEY")
    args = parser.parse_args()
    if args.command == "prepare":
        print(json.dumps(prepare(args), indent=2))
    elif args.command == "run":
        print(json.dumps(run(args), indent=2))
    else:
        train_until(args)


if __name__ == "__main__":
    main()
