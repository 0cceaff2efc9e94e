"""What hostile inputs cost now: time and memory of each refusal, and what was kept.

Prints JSON, one entry per class of docs/reliability.md's "Nothing lost, nobody let in":

- ``growth_undone``: a saliency network that gives NaN on half the faces, added to the sample
  store (204 samples): seconds until the run stops, and whether every file of the store is byte
  for byte what it was;
- ``hdr_refused``: a Radiance HDR photo of ``--hdr-side`` px a side: seconds and peak memory to
  refuse it, against OpenCV decoding it (what the fallback did);
- ``zip_lies``: a packed store with eight members whose directory entries claim 16 MiB
  compressed each (128 MiB of zeros behind 130 KB): seconds to refuse it;
- ``idle_sockets``: ``fer-store serve`` under 1,024 descriptors with 1,100 idle sockets open:
  seconds for another client's request.

    .venv/bin/python bench/hostile_inputs.py [--hdr-side 8000]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.compute.run import SYNCHRONOUS, grow, preprocess
from pipeline.config import build_config
from pipeline.datasets import get_dataset
from pipeline.errors import FerStoreError
from pipeline.stages.decode import decode_image
from pipeline.store import open_store
from tests.support.damaged_stores import zip_compressed_size_lies
from tests.support.onnx_networks import export_dimming_network
from tests.support.stores import files_of, usable_face_means


def growth_undone(work: Path) -> dict:
    store = work / "sample.zarr"
    config = build_config(get_dataset("sample").config_defaults)
    preprocess(store, "sample", None, config, scheduler=SYNCHRONOUS)
    _, means = usable_face_means(store)
    network = export_dimming_network(work / "dimming.onnx", float(np.median(means[1:])))
    before = files_of(store)
    began = time.perf_counter()
    try:
        grow(store, "saliency_network", saliency_model=network, scheduler=SYNCHRONOUS)
        stopped = "no"
    except FerStoreError as error:
        stopped = str(error).split(". ")[0]
    return {
        "seconds": round(time.perf_counter() - began, 2),
        "stopped_with": stopped,
        "files_unchanged": files_of(store) == before,
    }


def hdr_refused(side: int) -> dict:
    import cv2

    ok, encoded = cv2.imencode(".hdr", np.zeros((side, side, 3), np.float32))
    data = encoded.tobytes()
    tracemalloc.start()
    began = time.perf_counter()
    try:
        decode_image(data, max_pixels=40_000_000)
    except FerStoreError as error:
        message = str(error)[:60]
    refused_seconds = time.perf_counter() - began
    refused_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    began = time.perf_counter()
    decoded = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)  # what the OpenCV fallback did
    return {
        "file_bytes": len(data),
        "refused_seconds": round(refused_seconds, 4),
        "refused_peak_python_bytes": refused_peak,
        "message": message,
        "opencv_seconds": round(time.perf_counter() - began, 2),
        "opencv_bytes": int(decoded.nbytes),
    }


def zip_lies(work: Path) -> dict:
    packed = zip_compressed_size_lies(open_store_copy(work))
    began = time.perf_counter()
    try:
        open_store(packed)
        refused = "opened"
    except FerStoreError as error:
        refused = str(error).split(": ", 1)[1][:100]
    return {"zip_bytes": packed.stat().st_size, "seconds": round(time.perf_counter() - began, 4), "refused": refused}


def open_store_copy(work: Path) -> Path:
    copy = work / "for-zip.zarr"
    shutil.copytree(work / "sample.zarr", copy)
    return copy


def idle_sockets(work: Path) -> dict:
    limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    server = subprocess.Popen(
        [Path(sys.executable).parent / "fer-store", "serve", work / "sample.zarr", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
    )
    port = int(re.search(r":(\d+)/", server.stderr.readline()).group(1))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(1100)]
    began = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"GET /zarr.json HTTP/1.1\r\nHost: x\r\n\r\n")
        status = client.makefile("rb").readline().decode().strip()
    answered = time.perf_counter() - began
    for connection in idle:
        connection.close()
    server.kill()
    server.wait()
    return {
        "idle_sockets": len(idle),
        "descriptor_limit": 1024,
        "status": status,
        "answered_seconds": round(answered, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hdr-side", type=int, default=8000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        report = {"growth_undone": growth_undone(work)}
        report["hdr_refused"] = hdr_refused(args.hdr_side)
        report["zip_lies"] = zip_lies(work)
        report["idle_sockets"] = idle_sockets(work)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
