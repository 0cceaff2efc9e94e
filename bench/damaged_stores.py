"""Time and peak memory of refusing each damaged or hostile store of the test corpus.

Builds the tests' store (84 FER-2013 faces from ../shared/data, 48x48 gray, shards of 32), damages
a copy of it per corpus entry (tests/sharing/damaged_stores.py) and runs, in a fresh process,
``fer-store info`` on the ones refused on opening and ``fer-store verify`` on the ones verify
finds, recording wall time, peak resident memory (the child's ru_maxrss) and the exit status.
The intact store's ``info`` and ``verify`` are the baseline. Prints JSON.

    .venv/bin/python bench/damaged_stores.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import build_config  # noqa: E402
from pipeline.run import SYNCHRONOUS, preprocess  # noqa: E402
from tests.conftest import FER_STORE_GUIDANCE, extract_fer2013  # noqa: E402
from tests.sharing.damaged_stores import CORPUS, make_damaged  # noqa: E402

FER_STORE = Path(sys.executable).parent / "fer-store"


def measure(command: str, location: Path) -> dict:
    began = time.perf_counter()
    process = subprocess.Popen([FER_STORE, command, str(location)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "command": command,
        "exit": process.returncode,
        "seconds": round(time.perf_counter() - began, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "traceback": "Traceback" in output,
        "message": next((line.strip() for line in output.splitlines() if "FAULT" in line or "Error" in line
                         or "refusing" in line), output.strip()[:200])[:200],  # fmt: skip
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        store = folder / "fer.zarr"
        config = build_config({"detect": {"prior": "full-frame"}, "align": {"size": 48, "color": "gray"},
                               "guidance": {"types": FER_STORE_GUIDANCE}, "shard_size": 32})  # fmt: skip
        preprocess(store, "folder", extract_fer2013(folder / "data", per_class=6), config,
                   scheduler=SYNCHRONOUS, progress=False, echo=lambda _: None)  # fmt: skip
        results = {"intact": [measure("info", store), measure("verify", store)]}
        for index, entry in enumerate(CORPUS):
            copy = folder / f"damaged-{index}"
            copy.mkdir()
            location = make_damaged(store, copy, entry)
            command = "info" if entry.caught_on == "opening" else "verify"
            results[entry.kind] = measure(command, location)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
