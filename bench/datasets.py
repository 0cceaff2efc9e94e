"""Dataset adapters at full size: scanning the official FER-2013 / FERPlus CSVs and reading rows.

The official ``fer2013.csv`` is not in ../shared/data (only its first 1,167 rows), so this script
writes one of the official size and format from the 35,887 images of the FER-2013 archive:
Training images first, then PublicTest, then PrivateTest, as in the official file, so that the real
``fer2013new.csv`` joins it row by row (its labels do not belong to these pixels: this measures
speed only). Prints JSON: seconds to scan each CSV (validation included) and microseconds to
read one row's pixels in a worker, first call (which indexes the file) and after.

    .venv/bin/python bench/datasets.py
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.datasets import get_dataset
from tests.support.shared_data import FER2013_TGZ, SHARED_DATA, require

USAGE_ORDER = {"Training": 0, "PublicTest": 1, "PrivateTest": 2}
CODES = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}


def write_full_csv(destination: Path) -> int:
    """``destination/fer2013.csv`` in the official format from the image archive; returns rows."""
    rows = []
    with tarfile.open(require(FER2013_TGZ)) as archive:
        for member in archive:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 4:
                continue
            usage = parts[3].split("_")[0]
            grey = np.asarray(Image.open(io.BytesIO(archive.extractfile(member).read())).convert("L"))
            rows.append((USAGE_ORDER[usage], parts[3], CODES[parts[2]], " ".join(map(str, grey.reshape(-1))), usage))
    rows.sort()
    with open(destination / "fer2013.csv", "w") as out:
        out.write("emotion,pixels,Usage\n")
        for _, _, code, pixels, usage in rows:
            out.write(f"{code},{pixels},{usage}\n")
    return len(rows)


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-datasets-"))
    try:
        n = write_full_csv(workdir)
        shutil.copy(require(SHARED_DATA / "fer2013" / "fer2013new.csv"), workdir / "fer2013new.csv")
        result = {"rows": n, "csv_mb": round((workdir / "fer2013.csv").stat().st_size / 1e6, 1)}
        for name in ("fer2013", "ferplus"):
            adapter = get_dataset(name)
            began = time.perf_counter()
            manifest = adapter.scan(workdir)
            result[f"{name}_scan_s"] = round(time.perf_counter() - began, 2)
            assert len(manifest) == n
        adapter = get_dataset("fer2013")
        began = time.perf_counter()
        adapter.read(workdir, "fer2013.csv#0")
        result["first_row_read_ms"] = round((time.perf_counter() - began) * 1e3, 1)
        rows = np.random.default_rng(0).choice(n, size=2000, replace=False)
        began = time.perf_counter()
        for row in rows:
            adapter.read(workdir, f"fer2013.csv#{row}")
        result["row_read_us"] = round((time.perf_counter() - began) / len(rows) * 1e6, 1)
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
