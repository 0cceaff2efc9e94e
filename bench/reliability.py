"""Preprocessing at scale: peak memory against dataset size, and planning an AffectNet-sized run.

Prints JSON with two parts.

``memory``: ``fer-preprocess`` on the first N images of the FER-2013 archive (48x48, full-frame
prior, default guidance, a local cluster of 2 workers), for each N. The process tree is sampled
every 50 ms: peak resident memory of the driver, of the largest worker, and of all processes
together. Bounded memory means these stay flat as N grows tenfold.

``planning``: a synthetic AffectNet ``training.csv`` of N rows (every row with a box and 68
landmarks, as the real file has; the images need not exist for planning) is scanned, the store
template is written, and the shard tasks are planned, each step timed. The task graph has one
task per shard: its size is reported beside the sample count.

    .venv/bin/python bench/reliability.py [--sizes 2000,20000] [--plan 300000] [--shard-size 256]
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.compute.model_files import ModelFiles
from pipeline.compute.run import plan_tasks
from pipeline.config import build_config
from pipeline.datasets import get_dataset
from pipeline.store.writer import pending_shards, prepare_store
from tests.support.shared_data import FER2013_TGZ

VENV_BIN = Path(sys.executable).parent


def extract_first(destination: Path, n: int) -> int:
    """The first ``n`` images of the FER-2013 archive under ``destination/<split>/<class>/``."""
    count = 0
    with tarfile.open(FER2013_TGZ) as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 4:
                continue
            target = destination.joinpath(*parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            count += 1
            if count == n:
                break
    return count


def peak_memory(command: list) -> dict:
    """Run ``command``; sample its process tree's resident memory until it exits."""
    process = psutil.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks = {"driver_mb": 0.0, "largest_worker_mb": 0.0, "all_processes_mb": 0.0}
    began = time.perf_counter()
    while process.poll() is None:
        try:
            driver = process.memory_info().rss
            workers = []
            for child in process.children(recursive=True):
                try:
                    workers.append(child.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
        except psutil.NoSuchProcess:
            break
        peaks["driver_mb"] = max(peaks["driver_mb"], driver / 2**20)
        peaks["largest_worker_mb"] = max(peaks["largest_worker_mb"], max(workers, default=0) / 2**20)
        peaks["all_processes_mb"] = max(peaks["all_processes_mb"], (driver + sum(workers)) / 2**20)
        time.sleep(0.05)
    seconds = time.perf_counter() - began
    if process.returncode != 0:
        raise RuntimeError(process.stderr.read().decode())
    return {**{k: round(v) for k, v in peaks.items()}, "seconds": round(seconds, 1)}


def measure_memory(sizes: list[int], work: Path) -> dict:
    result = {}
    for n in sizes:
        root = work / f"fer-{n}"
        count = extract_first(root, n)
        store = work / f"fer-{n}.zarr"
        command = [
            VENV_BIN / "fer-preprocess",
            store,
            "--dataset",
            "folder",
            "--root",
            root,
            "--prior",
            "full-frame",
            "--size",
            "48",
            "--workers",
            "2",
            "--no-progress",
        ]
        result[str(count)] = peak_memory(command)
        shutil.rmtree(root)
        shutil.rmtree(store)
    return result


def write_affectnet_lists(root: Path, n: int) -> None:
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    (root / "Manually_Annotated_Images").mkdir()
    rng = np.random.default_rng(0)
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    with open(lists / "training.csv", "w") as out:
        out.write(header)
        for i in range(n):
            points = ";".join(f"{v:.2f}" for v in rng.uniform(40, 200, 136))
            out.write(f"{i // 1000}/{i:07d}.jpg,30,30,180,180,{points},{i % 8},0.25,-0.1\n")
    (lists / "validation.csv").write_text(header + f"v/0.jpg,30,30,180,180,{points},1,0.5,0.2\n")


def measure_planning(n: int, shard_size: int, work: Path) -> dict:
    root = work / "affectnet"
    write_affectnet_lists(root, n)
    config = build_config({"shard_size": shard_size, "align": {"size": 112}})
    models = ModelFiles.locate()
    began = time.perf_counter()
    manifest = get_dataset("affectnet").scan(root)
    scanned = time.perf_counter()
    store = work / "affectnet.zarr"
    prepare_store(store, manifest, config, models.sha256(), root=root)
    prepared = time.perf_counter()
    tasks = plan_tasks(str(store), manifest, root, config, models, pending_shards(store, shard_size))
    planned = time.perf_counter()
    task_bytes = [len(pickle.dumps(task)) for task in tasks]
    return {
        "samples": len(manifest),
        "csv_mb": round((root / "Manually_Annotated_file_lists" / "training.csv").stat().st_size / 1e6),
        "shard_size": shard_size,
        "scan_seconds": round(scanned - began, 2),
        "template_seconds": round(prepared - scanned, 2),
        "plan_seconds": round(planned - prepared, 2),
        "tasks": len(tasks),
        "mean_task_kb": round(float(np.mean(task_bytes)) / 1e3, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="2000,20000")
    parser.add_argument("--plan", type=int, default=300_000)
    parser.add_argument("--shard-size", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        result = {
            "planning": measure_planning(args.plan, args.shard_size, Path(work)),
            "memory": measure_memory([int(v) for v in args.sizes.split(",")], Path(work)),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
