"""fer-predict on real faces: the store's chain rebuilt from a checkpoint gives the run's own test
predictions back; several faces, none, unreadable inputs and videos become rows."""

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fer_models.prediction.chain import PredictionChain
from fer_models.prediction.predictor import RunPredictor, chain_outcome, cropped_faces, predict
from fer_models.prediction.sources import Picture
from fer_models.training.checkpoint import load_checkpoint
from fer_models.training.config import TrainConfig
from fer_models.training.run_directory import train
from pipeline.compute.image_chain import process_image
from pipeline.compute.model_files import ModelFiles, thread_models
from pipeline.config import PreprocessConfig
from pipeline.errors import ConfigError
from pipeline.progress import Lines
from pipeline.run_predictions import Predictions
from pipeline.stages.decode import decode_image
from pipeline.stages.landmarks import predict_landmarks
from pipeline.store import open_store, provenance_of, read_array
from pipeline.store.schema import SOURCE, STATUS, Status
from tests.support.stores import SMALL_FAMILIES as FAMILIES
from tests.support.stores import build_fer_store

BIN = Path(sys.executable).parent


def source_files(store: Path, indices: np.ndarray) -> list[str]:
    """The source files of samples ``indices`` of ``store``."""
    group = open_store(store)
    root = Path(provenance_of(group).root)
    return [str(root / str(read_array(group, SOURCE, int(i)))) for i in indices]


@pytest.mark.parametrize("model", FAMILIES)
def test_predicting_the_test_files_gives_the_run_s_own_test_predictions(runs, fer_store, model):
    written = Predictions.read_csv(runs / model / "test_predictions.csv")
    files = source_files(fer_store, written.index)
    predictor = RunPredictor(runs / model / "best.pt", device="cpu")
    rows = list(predict(predictor, files, largest=True, batch_size=10))
    assert [row.source for row in rows] == files and {row.status for row in rows} <= {"ok", "ok_prior"}
    assert [predictor.class_names.index(row.predicted) for row in rows] == list(written.predicted)
    confidence = [max(row.probabilities) for row in rows]
    assert np.allclose(confidence, written.confidence, atol=1e-4)


def test_every_face_of_a_group_photo_largest_first_the_first_the_one_a_store_keeps(dlib_faces, fer_store):
    recorded = PreprocessConfig.from_dict(provenance_of(open_store(fer_store)).config)
    config = dataclasses.replace(recorded, detect=dataclasses.replace(recorded.detect, prior="none"))
    files = ModelFiles.locate()
    photo = str(dlib_faces / "bald_guys.jpg")
    _, faces = chain_outcome(Picture(photo), config=config, files=files, largest=False)
    assert isinstance(faces, list) and len(faces) >= 3
    areas = [(f.box_src[2] - f.box_src[0]) * (f.box_src[3] - f.box_src[1]) for f in faces]
    assert areas == sorted(areas, reverse=True) and {f.faces_detected for f in faces} == {len(faces)}
    kept = process_image(decode_image(Path(photo).read_bytes(), max_pixels=10**8), None, config, thread_models(files))
    assert np.array_equal(kept.image, faces[0].image) and np.array_equal(kept.box_src, faces[0].box_src)
    _, largest = chain_outcome(Picture(photo), config=config, files=files, largest=True)
    assert len(largest) == 1 and np.array_equal(largest[0].image, faces[0].image)
    _, none = chain_outcome(Picture(str(dlib_faces / "dogs.jpg")), config=config, files=files, largest=False)
    assert none.status == "no_face" and "no face found" in none.message


def test_fer_predict_writes_a_row_per_face_and_per_failure(dlib_faces, runs, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    shutil.copy(dlib_faces / "bald_guys.jpg", folder / "group.jpg")
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    (folder / "notes.txt").write_text("not an input")
    video = tmp_path / "clip.avi"
    face = cv2.imread(str(dlib_faces / "Tom_Cruise_avp_2014_4.jpg"))
    face = cv2.resize(face, (face.shape[1] // 4 * 2, face.shape[0] // 4 * 2))  # even sides, half size
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (face.shape[1], face.shape[0]))
    for _ in range(5):
        writer.write(face)
    writer.release()
    out, as_json = tmp_path / "preds.csv", tmp_path / "preds.json"
    command = [BIN / "fer-predict", "--run", runs / "cnn", folder, video, tmp_path / "missing.png"]
    done = subprocess.run(
        [*map(str, command), "--out", str(out), "--json", str(as_json), "--every", "2", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    classes = load_checkpoint(runs / "cnn" / "best.pt").class_names
    assert list(rows[0])[-len(classes) :] == classes and list(rows[0])[:3] == ["source", "frame", "face"]
    by_source = {}
    for row in rows:
        by_source.setdefault(Path(row["source"]).name, []).append(row)
    assert [r["status"] for r in by_source["broken.jpg"]] == ["unreadable"]
    assert [r["status"] for r in by_source["missing.png"]] == ["unreadable"] and "no such file" in by_source[
        "missing.png"
    ][0]["message"]
    group = by_source["group.jpg"]
    assert len(group) >= 3 and [r["face"] for r in group] == [str(i) for i in range(len(group))]
    assert all(r["predicted"] in classes and abs(sum(float(r[c]) for c in classes) - 1) < 1e-4 for r in group)
    assert [r["frame"] for r in by_source["clip.avi"]] == ["0", "2", "4"]
    assert "notes.txt" not in by_source and "1 files under the folders given are neither" in done.stderr
    assert json.loads(as_json.read_text())[0]["source"] == rows[0]["source"]
    assert f"faces predicted; unreadable 2 -> {out}" in done.stdout


def test_a_landmark_model_of_another_hash_is_refused_naming_it(runs, tmp_path):
    other = tmp_path / "shape_predictor_68_face_landmarks.dat"
    other.write_bytes(b"another model")
    with pytest.raises(
        ConfigError,
        match="placed its landmarks with shape_predictor_68_face_landmarks.dat of sha256 .* pass --landmark-model",
    ):
        RunPredictor(runs / "cnn" / "best.pt", device="cpu", landmark_model=str(other))


def test_a_checkpoint_without_the_chain_reads_it_from_its_store_or_says_what_to_do(runs, tmp_path):
    data = torch.load(runs / "cnn" / "best.pt", weights_only=True)
    recorded = data["store"]
    old = {key: recorded[key] for key in ("location", "dataset", "config_sha256", "manifest_sha256")}
    torch.save({**data, "store": old}, tmp_path / "old.pt")
    fresh = PredictionChain.of_checkpoint(load_checkpoint(runs / "cnn" / "best.pt"), "best.pt")
    assert PredictionChain.of_checkpoint(load_checkpoint(tmp_path / "old.pt"), "old.pt") == fresh
    torch.save({**data, "store": {**old, "location": str(tmp_path / "gone.zarr")}}, tmp_path / "moved.pt")
    with pytest.raises(
        ConfigError,
        match="before checkpoints recorded their store's preprocessing, and its store .*gone.zarr cannot be opened",
    ):
        PredictionChain.of_checkpoint(load_checkpoint(tmp_path / "moved.pt"), "moved.pt")


def test_a_run_on_kept_crops_takes_each_picture_as_one_crop_and_gives_its_test_predictions(
    dlib_faces, fer2013_small, tmp_path
):
    store = build_fer_store(tmp_path / "crops.zarr", fer2013_small, align="crop")
    train(TrainConfig(store=str(store), model="cnn", epochs=1, batch_size=16, seed=3), tmp_path / "run")
    predictor = RunPredictor(tmp_path / "run" / "best.pt", device="cpu")
    said: list[str] = []
    rows = list(predict(predictor, [str(dlib_faces / "bald_guys.jpg")], progress=Lines(said.append)))
    assert [row.face for row in rows] == [0] and any("taken as one face crop" in line for line in said)
    written = Predictions.read_csv(tmp_path / "run" / "test_predictions.csv")
    rows = list(predict(predictor, source_files(store, written.index)))
    assert [predictor.class_names.index(row.predicted) for row in rows] == list(written.predicted)

    # --crop-faces: a crop four times enlarged inside a larger photo is cut out again where the
    # store's crops put their faces (the framing fitted on the store's detected faces' landmarks).
    framing = predictor.chain.crop_framing
    assert framing is not None and framing.source_size == 48 and framing.faces >= 20
    group = open_store(store)
    detected = np.flatnonzero(read_array(group, STATUS) == int(Status.OK))[:16]
    models = thread_models(predictor.chain.files)
    sides, overlaps = [], []
    for source in source_files(store, detected):
        crop = decode_image(Path(source).read_bytes(), max_pixels=10**8)
        photo = np.full((400, 500), 128, np.uint8)
        photo[50:242, 150:342] = cv2.resize(crop, (192, 192), interpolation=cv2.INTER_CUBIC)
        faces = cropped_faces(photo, predictor.chain.config, models, framing, largest=True)
        if faces[0].image is None:
            continue  # the detector misses this face at the larger size
        assert faces[0].image.shape == (1, 48, 48) and 130 < faces[0].box_src[0] < faces[0].box_src[2] < 362
        left, top, right, bottom = framing.crop_box(predict_landmarks(models.predictor, photo, faces[0].box_src))
        inter = max(0, min(right, 342) - max(left, 150)) * max(0, min(bottom, 242) - max(top, 50))
        overlaps.append(inter / ((right - left) * (bottom - top) + 192**2 - inter))
        sides.append((right - left) / 192)
    assert len(sides) >= 10 and 0.9 < np.median(sides) < 1.1 and np.median(overlaps) > 0.75, (sides, overlaps)


def test_crop_faces_is_refused_for_a_run_that_finds_faces_itself(dlib_faces, runs):
    predictor = RunPredictor(runs / "cnn" / "best.pt", device="cpu")
    with pytest.raises(
        ConfigError, match="--crop-faces .* needs a run on a store that keeps them .* aligns by similarity"
    ):
        list(predict(predictor, [str(dlib_faces / "bald_guys.jpg")], crop_faces=True))


def test_a_model_reading_a_saliency_network_needs_the_store_s_own(runs, saliency_onnx, tmp_path):
    data = torch.load(runs / "guided-stn" / "best.pt", weights_only=True)
    config = {**data["config"], "options": {**data["config"]["options"], "guidance": "saliency_network"}}
    network = {"file": "msinet.onnx", "sha256": "0" * 64}
    store = {**data["store"], "models": {**data["store"]["models"], "saliency_network": network}}
    torch.save({**data, "config": config, "store": store}, tmp_path / "saliency.pt")
    checkpoint = load_checkpoint(tmp_path / "saliency.pt")
    with pytest.raises(ConfigError, match=r"reads saliency_network maps: pass --saliency-model .* \(msinet.onnx\)"):
        PredictionChain.of_checkpoint(checkpoint, "saliency.pt")
    with pytest.raises(ConfigError, match=r"msinet.onnx has sha256 000000000000; .*saliency.onnx hashes to"):
        PredictionChain.of_checkpoint(checkpoint, "saliency.pt", saliency_model=str(saliency_onnx))
