"""What each guidance type costs: milliseconds per sample to render and bytes per sample on disk.

Builds one store with every guidance type (``--guidance all``) from real FER-2013 faces at
S = H = 48 (the dataset's native size) and at S = H = 112 (the same faces upscaled by the
alignment, as AffectNet-size crops would be), in this process (no Dask, so the timings are the
workers' per-sample stage times), and prints JSON: per guidance type, ms per sample (usable
samples only; failed ones render nothing) and bytes per sample of its array on disk.

It also grows a store built with the default guidance by three more types
(``fer-preprocess STORE --guidance ...``, no --dataset) and compares the time with the build's:
growing reads the stored faces and landmarks instead of decoding, detecting and aligning again.

    .venv/bin/python bench/guidance.py [--fer-images 600]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.compute.run import SYNCHRONOUS, grow, preprocess
from pipeline.config import build_config
from pipeline.guidance import resolve_guidance
from pipeline.store import bytes_on_disk
from tests.support.shared_data import extract_fer2013


def measure(root: Path, size: int, workdir: Path) -> dict:
    store = workdir / f"s{size}.zarr"
    config = build_config(
        {
            "detect": {"prior": "full-frame"},
            "align": {"size": size, "color": "gray"},
            "guidance": {"types": ("all",)},
        }
    )
    summary = preprocess(store, "fer2013", root, config, scheduler=SYNCHRONOUS)
    usable = summary.counts["ok"] + summary.counts["ok_prior"]
    n = summary.counts["total"]
    per_type = {
        name: {
            "ms_per_sample": round(summary.stage_seconds.get(name, 0.0) / usable * 1e3, 3),
            "bytes_per_sample": round(bytes_on_disk(store / name) / n),
        }
        for name in resolve_guidance("all")
    }
    return {
        "samples": n,
        "usable": usable,
        "image_bytes_per_sample": round(bytes_on_disk(store / "image") / n),
        "guidance": per_type,
    }


GROWN = "heatmap_regions,saliency_fine_grained,mask_hull"


def measure_growth(root: Path, size: int, workdir: Path) -> dict:
    store = workdir / f"grow{size}.zarr"
    config = build_config({"detect": {"prior": "full-frame"}, "align": {"size": size, "color": "gray"}})
    built = preprocess(store, "fer2013", root, config, scheduler=SYNCHRONOUS)
    grown = grow(store, GROWN, scheduler=SYNCHRONOUS)
    return {
        "build_seconds": round(built.seconds, 2),
        "added": GROWN,
        "grow_seconds": round(grown.seconds, 2),
        "grow_stage_seconds": {k: round(v, 3) for k, v in grown.stage_seconds.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fer-images", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-guidance-") as workdir:
        workdir = Path(workdir)
        root = extract_fer2013(workdir / "fer", per_class=max(1, args.fer_images // 14))
        result = {str(size): measure(root, size, workdir) for size in (48, 112)}
        result["growth"] = {str(size): measure_growth(root, size, workdir) for size in (48, 112)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
