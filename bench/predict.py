"""fer-predict's speed on this machine: faces per second, and where the time goes.

Builds a store of real FER-2013 faces (aligned by similarity at S = 48, gray, so that photos are
aligned as the faces were), trains each measured model one epoch on it (the weights do not change
the cost), then predicts with :func:`fer_models.prediction.predictor.predict`:

- ``fer2013_folder``: a folder of FER-2013 images (48 x 48 crops, one face each);
- ``dlib_photos``: dlib's example photos (../shared/data/dlib-faces: portraits and groups, up to
  1986 x 1545), every face of each.

For each, ``faces_per_second`` end to end in one process (reading, decoding, the chain, the model,
batches of 64), and the stage seconds per face measured by running the same steps one by one:
``decode``, ``detect``, ``landmarks``, ``align``, the guidance the model reads, and ``model``.
Prints JSON.

    .venv/bin/python bench/predict.py [--fer-images 700] [--models guided-stn,resnet18]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_models.prediction.predictor import RunPredictor, predict
from fer_models.prediction.sources import expand_inputs, read_image
from fer_models.training.config import TrainConfig
from fer_models.training.run_directory import train
from pipeline.compute.image_chain import StageTimer, process_faces
from pipeline.compute.model_files import thread_models
from tests.support.shared_data import DLIB_FACES, extract_fer2013
from tests.support.stores import build_fer_store

OPTIONS = {"guided-stn": {"guidance": "mask_soft"}, "resnet18": {"width": 16}, "local-nonlocal": {"width": 16}}


def stage_seconds(predictor: RunPredictor, files: list[str]) -> dict[str, float]:
    """Seconds per face of each step, the steps run one by one on ``files``."""
    seconds: defaultdict[str, float] = defaultdict(float)
    faces = []
    for source in files:
        began = time.perf_counter()
        pixels = read_image(source, predictor.chain.config.decode.max_pixels)
        seconds["decode"] += time.perf_counter() - began
        timer = StageTimer()
        found = process_faces(pixels, predictor.chain.config, thread_models(predictor.chain.files), timer)
        for stage, value in timer.seconds.items():
            seconds[stage] += value
        faces += [face for face in found if face.image is not None]
    began = time.perf_counter()
    for first in range(0, len(faces), 64):
        predictor.probabilities(faces[first : first + 64])
    seconds["model"] += time.perf_counter() - began
    return {stage: round(value / max(len(faces), 1) * 1e3, 3) for stage, value in seconds.items()} | {
        "faces": len(faces)
    }


def end_to_end(predictor: RunPredictor, inputs: list[str]) -> dict[str, float]:
    began = time.perf_counter()
    rows = list(predict(predictor, inputs))
    seconds = time.perf_counter() - began
    faces = sum(row.predicted is not None for row in rows)
    return {
        "pictures": len(expand_inputs(inputs)[0]),
        "faces": faces,
        "seconds": round(seconds, 2),
        "faces_per_second": round(faces / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fer-images", type=int, default=700)
    parser.add_argument("--models", default="guided-stn,resnet18")
    args = parser.parse_args()
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as workdir:
        work = Path(workdir)
        root = extract_fer2013(work / "fer", per_class=max(1, args.fer_images // 14))
        store = build_fer_store(work / "fer.zarr", root)
        folder = [str(root / "test")]
        photos = sorted(str(p) for p in DLIB_FACES.glob("*.jpg"))
        for model in args.models.split(","):
            config = TrainConfig(store=str(store), model=model, options=OPTIONS.get(model, {}), epochs=1, threads=2)
            train(config, work / model)
            predictor = RunPredictor(work / model / "best.pt", device="cpu")
            result[model] = {
                "fer2013_folder": end_to_end(predictor, folder),
                "fer2013_folder_ms_per_face": stage_seconds(predictor, expand_inputs(folder)[0]),
                "dlib_photos": end_to_end(predictor, photos),
                "dlib_photos_ms_per_face": stage_seconds(predictor, photos),
            }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
