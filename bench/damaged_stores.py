"""Time and peak memory of refusing each damaged or hostile store of the test corpus.

Builds the tests' store (84 FER-2013 faces from ../shared/data, 48x48 gray, shards of 32), damages
a copy of it per corpus entry (tests/support/damaged_stores.py) and runs, in a fresh process,
``fer-store info`` on the ones refused on opening and ``fer-store verify`` on the ones verify
finds, recording wall time (interpreter start included), peak resident memory and exit status.
The intact store's ``info`` and ``verify`` are the baseline. Prints JSON.

    .venv/bin/python bench/damaged_stores.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.damaged_stores import CORPUS, make_damaged
from tests.support.shared_data import extract_fer2013
from tests.support.stores import build_fer_store

# fer-store in a fresh interpreter that prints its peak resident memory (VmHWM, which exec resets;
# the child's ru_maxrss would include the memory of this process it was forked from) on exit.
FER_STORE = """
import atexit, sys
def peak():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    sys.stderr.write(f"\\nPEAK_KB {line.split()[1]}\\n")
atexit.register(peak)
from cli.store import main
main(sys.argv[1:], prog_name="fer-store")
"""


def measure(command: str, location: Path) -> dict:
    began = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", FER_STORE, command, str(location)], capture_output=True, text=True)
    seconds = time.perf_counter() - began
    output = run.stdout + run.stderr
    peak_kb = int(output.rsplit("PEAK_KB ", 1)[1].split()[0])
    return {
        "command": command,
        "exit": run.returncode,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "traceback": "Traceback" in output,
        "message": next(
            (line.strip() for line in output.splitlines() if "FAULT" in line or "Error" in line or "refusing" in line),
            output.strip()[:200],
        )[:200],
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        store = build_fer_store(folder / "fer.zarr", extract_fer2013(folder / "data", per_class=6))
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
