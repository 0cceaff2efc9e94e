"""AffectNet at the speed of its boxes: what ``--detect auto`` and ``--detect-min-face`` buy, and
what they cost in landmarks and in faces found.

The tree is AffectNet's layout made from the dlib example photos: one row per face of dlib's XML
files (43 faces in 9 photos), each its own JPEG, the photo upscaled ``--scale`` times (AffectNet's
photos are large and their faces fill a good part of them: here faces of 148-436 px in photos of
1300-2000 px at the default 4), the box given in another framing than dlib's (taller, wider and
higher, as another detector frames faces), the tree repeated ``--copies`` times. A ``folder`` tree
of the same photos has no boxes.

Prints JSON: images per second of one process (the shard work; calibration apart) for
``--detect always`` (the detector on every photo, today's AffectNet path) and ``auto`` (the mapped
dataset box, no detector), and without boxes for the detector at full size and with
``--detect-min-face 112`` (S); the landmark agreement of the two AffectNet paths (mean landmark distance
over the inter-ocular distance, per face) beside the detector's agreement with itself on the same
photos shifted by a few pixels; and the faces the detector finds at full size and with
``--detect-min-face`` (a face counts when a detection overlaps its XML box by IoU 0.5).

    .venv/bin/python bench/affectnet.py [--scale 4] [--copies 3] [--min-face 112]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.compute import image_chain
from pipeline.compute.image_chain import reduction_allowed
from pipeline.compute.model_files import ModelFiles, thread_models
from pipeline.compute.run import preprocess
from pipeline.config import build_config
from pipeline.datasets import get_dataset
from pipeline.stages.decode import decode_image
from pipeline.stages.detect import box_iou, detect_boxes, detect_face
from pipeline.stages.landmarks import predict_landmarks
from pipeline.store import open_store, provenance_of, read_array
from pipeline.store.schema import LANDMARKS_SRC, STATUS, USABLE_STATUSES
from tests.support.dataset_trees import write_affectnet_photos
from tests.support.landmarks import relative_distances


def run(store: Path, dataset: str, root: Path, **detect) -> dict:
    """Build a store in this process; images per second of the shard work."""
    config = build_config(get_dataset(dataset).config_defaults, {"detect": detect, "guidance": {"types": "heatmap"}})
    began = time.perf_counter()
    summary = preprocess(store, dataset, root, config, scheduler="synchronous")
    total = time.perf_counter() - began
    shard_seconds = sum(summary.stage_seconds.values())
    return {
        "detect": {**config.to_dict()["detect"]},
        "samples": summary.processed,
        "usable": sum(summary.counts[status.label] for status in USABLE_STATUSES),
        "images_per_second": round(summary.processed / shard_seconds, 2),
        "stage_ms": {stage: round(1000 * s / summary.processed, 2) for stage, s in summary.stage_seconds.items()},
        "seconds_outside_shards": round(total - shard_seconds, 2),
        "box_mapping": None if (m := provenance_of(open_store(store)).box_mapping) is None else str(m),
    }


def full_size_decoding(measure: Callable[[], dict]) -> dict:
    """``measure()`` with JPEGs decoded at full size whatever the face's size (to tell what the
    reduced decoding costs in landmarks)."""
    kept = image_chain.MIN_DECODED_FACE
    image_chain.MIN_DECODED_FACE = 10**9
    try:
        return measure()
    finally:
        image_chain.MIN_DECODED_FACE = kept


def agreement(store_a: Path, store_b: Path) -> dict:
    """Per sample usable in both, mean landmark distance over the inter-ocular distance of ``a``."""
    a, b = open_store(store_a), open_store(store_b)
    usable = [int(s) for s in USABLE_STATUSES]
    both = np.isin(read_array(a, STATUS), usable) & np.isin(read_array(b, STATUS), usable)
    return spread(relative_distances(read_array(a, LANDMARKS_SRC)[both], read_array(b, LANDMARKS_SRC)[both]))


def spread(values: np.ndarray) -> dict:
    return {
        "faces": len(values),
        "mean": round(float(values.mean()), 4),
        "median": round(float(np.median(values)), 4),
        "p90": round(float(np.percentile(values, 90)), 4),
        "max": round(float(values.max()), 4),
    }


def detector_against_itself(affectnet: Path, upsample: int) -> dict:
    """The detector path on each AffectNet photo against the same on the photo cut by 7 px on the
    left and 5 on top (the detector's grid falls elsewhere): its own noise, for comparison."""
    models = thread_models(ModelFiles.locate())
    adapter = get_dataset("affectnet")
    manifest = adapter.scan(affectnet)
    reference, shifted = [], []
    for source, box in list(zip(manifest.source, manifest.prior_box))[: len(manifest) // 3 or 1]:
        pixels = decode_image(adapter.read(affectnet, source), max_pixels=10**9)
        moved = np.ascontiguousarray(pixels[5:, 7:])
        offset = np.array([7, 5, 7, 5], np.float32)
        found = detect_face(models.detector, pixels, upsample, box)
        found_moved = detect_face(models.detector, moved, upsample, box - offset)
        if found.box is None or found_moved.box is None:
            continue
        reference.append(predict_landmarks(models.predictor, pixels, found.box))
        shifted.append(predict_landmarks(models.predictor, moved, found_moved.box) + offset[:2])
    return spread(relative_distances(np.array(reference), np.array(shifted)))


def faces_found(folder: Path, faces: list[tuple[str, np.ndarray]], upsample: int, min_face: int) -> dict:
    """How many of the XML faces the detector finds in the photos, and its milliseconds a photo;
    for each face found both at full size and on the scaled copy, the agreement of the landmarks
    placed in the two detections (the pipeline's detect_face, the XML box choosing the face)."""
    models = thread_models(ModelFiles.locate())
    pixels = {file: decode_image((folder / "faces" / f"0_{file}").read_bytes(), max_pixels=10**9) for file, _ in faces}
    found, began = 0, time.perf_counter()
    detections = {file: detect_boxes(models.detector, image, upsample, min_face)[0] for file, image in pixels.items()}
    milliseconds = 1000 * (time.perf_counter() - began) / len(pixels)
    full, scaled = [], []
    for file, box in faces:
        found += any(box_iou(box, detected) >= 0.5 for detected in detections[file])
        at_full = detect_face(models.detector, pixels[file], upsample, box)
        at_scale = detect_face(models.detector, pixels[file], upsample, box, min_face=min_face)
        if at_full.box is not None and at_scale.box is not None:
            full.append(predict_landmarks(models.predictor, pixels[file], at_full.box))
            scaled.append(predict_landmarks(models.predictor, pixels[file], at_scale.box))
    return {
        "faces": len(faces),
        "found": found,
        "ms_per_photo": round(milliseconds, 1),
        "landmarks_against_full_size": spread(relative_distances(np.array(full), np.array(scaled))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--min-face", type=int, default=112, help="--detect-min-face of the runs without boxes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        affectnet, folder, faces = write_affectnet_photos(work, args.scale, args.copies)
        manifest = get_dataset("affectnet").scan(affectnet)
        config = build_config(get_dataset("affectnet").config_defaults, {"detect": {"mode": "auto"}})
        reduced = [reduction_allowed(box, None, config) for box in manifest.prior_box]
        results = {
            "machine": {"python": platform.python_version(), "cores": os.cpu_count()},
            "tree": {
                "rows": len(manifest),
                "scale": args.scale,
                "face_sides_px": [int(min(b[2] - b[0], b[3] - b[1])) for _, b in faces[:: max(1, len(faces) // 8)]],
                "rows_by_jpeg_reduction_allowed": {str(k): reduced.count(k) for k in sorted(set(reduced))},
            },
            "with_boxes": {
                "always": run(work / "always.zarr", "affectnet", affectnet, mode="always"),
                "auto": run(work / "auto.zarr", "affectnet", affectnet, mode="auto"),
                "auto_full_size_decoding": full_size_decoding(
                    lambda: run(work / "auto_full.zarr", "affectnet", affectnet, mode="auto")
                ),
            },
            "without_boxes": {
                "full_size": run(work / "full.zarr", "folder", folder),
                f"min_face_{args.min_face}": run(work / "min_face.zarr", "folder", folder, min_face=args.min_face),
            },
        }
        results["landmark_agreement"] = {
            "auto_against_always": agreement(work / "always.zarr", work / "auto.zarr"),
            "detector_against_itself_shifted": detector_against_itself(affectnet, upsample=0),
            "auto_full_size_decoding_against_always": agreement(work / "always.zarr", work / "auto_full.zarr"),
        }
        results["faces_found_upsample_1"] = {
            "full_size": faces_found(folder, faces, 1, 0),
            f"min_face_{args.min_face}": faces_found(folder, faces, 1, args.min_face),
        }
        for key, value in (("with_boxes", "always"), ("without_boxes", "full_size")):
            base = results[key][value]["images_per_second"]
            for figures in results[key].values():
                figures["speedup"] = round(figures["images_per_second"] / base, 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
