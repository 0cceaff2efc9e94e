"""``fer-store view``: the images written for a store, the FiftyOne dataset built from real stores,
the App on 127.0.0.1 seen by headless Chromium, and the errors a user can meet.

The FiftyOne tests need the ``[viewer]`` extra (``make viewer``, which ``make test`` runs) and skip,
saying so, without it; the screenshot needs Debian's ``chromium``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_models.training.config import TrainConfig
from fer_models.training.run_directory import train
from pipeline.compute.run import SYNCHRONOUS, preprocess
from pipeline.config import build_config
from pipeline.errors import StoreError, ViewerError
from pipeline.landmark_scheme import SKELETON_EDGES
from pipeline.store import open_store, provenance_of
from pipeline.tools import viewer_database
from pipeline.tools.pack import pack_store
from pipeline.tools.viewer_media import store_digest, write_sample_views
from tests.support.browser import chromium, screenshot
from tests.support.servers import free_port, store_server

pytestmark = pytest.mark.viewer
FER_STORE = Path(sys.executable).parent / "fer-store"

FACE, NO_FACE, CROWD = "Tom_Cruise_avp_2014_4.jpg", "dogs.jpg", "bald_guys.jpg"
GUIDANCE = "heatmap,saliency,mask_binary,regions"
SIZE, GUIDANCE_SIZE = 64, 32


def needs_fiftyone():
    from pipeline.tools.fiftyone_view import import_fiftyone

    try:
        return import_fiftyone()
    except ViewerError:
        pytest.skip("the [viewer] extra is not installed (make viewer)")


@pytest.fixture(scope="module")
def photo_store(tmp_path_factory, dlib_faces) -> Path:
    """A folder store of three real photos (one face, a group, dogs) and a file that is no image."""
    root = tmp_path_factory.mktemp("photos") / "tree"
    for split, emotion, name in (("train", "happy", FACE), ("train", "happy", CROWD), ("test", "sad", NO_FACE)):
        (root / split / emotion).mkdir(parents=True, exist_ok=True)
        shutil.copy(dlib_faces / name, root / split / emotion / name)
    (root / "test" / "sad" / "broken.jpg").write_bytes(b"this is not a JPEG")
    config = build_config(
        {
            "detect": {"prior": "none"},
            "align": {"size": SIZE},
            "guidance": {"types": GUIDANCE, "size": GUIDANCE_SIZE},
            "shard_size": 2,
        }
    )
    store = root.parent / "photos.zarr"
    preprocess(store, "folder", root, config, scheduler=SYNCHRONOUS)
    return store


def by_source(views):
    return {Path(view.source).name: view for view in views}


def test_the_images_and_records_of_every_kind_of_sample(photo_store, tmp_path):
    group = open_store(photo_store)
    views = by_source(write_sample_views(group, np.arange(4), tmp_path))
    face, crowd, dogs, broken = views[FACE], views[CROWD], views[NO_FACE], views["broken.jpg"]
    assert (face.status, crowd.status, dogs.status, broken.status) == ("ok", "ok", "no_face", "unreadable")
    assert crowd.faces_detected > 1 and crowd.message.startswith("several faces found")

    for usable in (face, crowd):
        assert cv2.imread(str(usable.face_image), cv2.IMREAD_UNCHANGED).shape[:2] == (SIZE, SIZE)
        assert set(usable.guidance) == {"heatmap", "saliency", "mask_binary"}
        for path in usable.guidance.values():
            assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (GUIDANCE_SIZE, GUIDANCE_SIZE)
        assert usable.landmarks.shape == (68, 2) and 0 < usable.landmarks.min() and usable.landmarks.max() < 1
        assert [name for name, _ in usable.regions] and all(0 <= v <= 1 for _, box in usable.regions for v in box)
        # The landmarks in the source frame lie in the face box, both normalised to the photo.
        x, y, w, h = usable.source_box
        inside = (usable.source_landmarks >= [x - 0.1 * w, y - 0.1 * h]) & (
            usable.source_landmarks <= [x + 1.1 * w, y + 1.1 * h]
        )
        assert inside.all(axis=1).mean() > 0.9

    # Not usable: the source image stands in for the face; with no image to show, the message does.
    assert dogs.face_image == dogs.source_image and dogs.landmarks is None and not dogs.guidance
    assert broken.source_image is None and broken.face_image.parent.name == "message"
    assert cv2.imread(str(broken.face_image)).std() > 5  # the message is drawn

    written = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.*")}
    again = by_source(write_sample_views(group, np.arange(4), tmp_path))
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*.*")} == written  # nothing written twice
    assert again[FACE].face_image == face.face_image


def test_the_digest_follows_the_provenance(photo_store):
    provenance = provenance_of(open_store(photo_store))
    assert store_digest(provenance) == store_digest(provenance_of(open_store(photo_store)))
    assert store_digest(provenance.replace(complete=not provenance.complete)) != store_digest(provenance)


@pytest.fixture(scope="module")
def fiftyone_database(tmp_path_factory):
    needs_fiftyone()
    from pipeline.tools.fiftyone_view import viewer_database

    cache = tmp_path_factory.mktemp("viewer-cache")
    with viewer_database(cache) as uri:
        yield cache, uri


def test_a_store_becomes_a_grouped_dataset_with_its_labels(photo_store, fiftyone_database):
    from pipeline.tools.fiftyone_view import FACE_SLICE, SOURCE_SLICE, build_view_dataset

    cache, _ = fiftyone_database
    dataset = build_view_dataset(photo_store, name="photos", cache=cache)
    faces, sources = dataset.select_group_slices(FACE_SLICE), dataset.select_group_slices(SOURCE_SLICE)
    assert faces.count() == 4 and sources.count() == 3  # the file that is no image has no source image
    assert faces.count_values("status") == {"ok": 2, "no_face": 1, "unreadable": 1}
    assert faces.match({"several_faces": True}).count() == 1

    crowd = faces.match({"source": f"train/happy/{CROWD}"}).first()
    assert crowd.label.label == "happy" and crowd.faces_detected > 1
    assert len(crowd.landmarks.keypoints[0].points) == 68
    assert dataset.skeletons["landmarks"].edges == [list(edge) for edge in SKELETON_EDGES]
    assert cv2.imread(crowd.heatmap.map_path, cv2.IMREAD_UNCHANGED).shape == (GUIDANCE_SIZE, GUIDANCE_SIZE)
    assert crowd.mask_binary.mask_path and len(crowd.regions.detections) >= 4
    source = sources.match({"store_index": crowd.store_index}).first()
    assert len(source.box.detections) == 1 and len(source.landmarks.keypoints[0].points) == 68

    broken = faces.match({"status": "unreadable"}).first()
    assert "message" in broken.filepath and broken.message

    # Built again from the same store and selection: the same dataset, not rebuilt.
    again = build_view_dataset(photo_store, name="photos", cache=cache)
    assert again._doc.id == dataset._doc.id
    only_ok = build_view_dataset(photo_store, name="photos", cache=cache, statuses=("ok",))
    assert only_ok.select_group_slices(FACE_SLICE).count_values("status") == {"ok": 2}


def test_a_store_opened_by_url_or_zip_gives_the_same_view(photo_store, fiftyone_database, tmp_path):
    from pipeline.tools.fiftyone_view import FACE_SLICE, build_view_dataset

    cache, _ = fiftyone_database
    local = build_view_dataset(photo_store, name="photos-local", cache=cache)
    fields = ["store_index", "status", "filepath", "landmarks.keypoints.points"]
    expected = local.select_group_slices().values(fields)
    zipped = tmp_path / "photos.zarr.zip"
    pack_store(photo_store, zipped)
    with store_server(photo_store) as url:
        for location in (url, zipped):
            dataset = build_view_dataset(location, name="photos-remote", cache=cache)
            assert dataset.select_group_slices().values(fields) == expected, location
            assert dataset.select_group_slices(FACE_SLICE).count() == 4
    assert {p.name for p in cache.iterdir()} == {"mongodb", store_digest(provenance_of(open_store(photo_store)))}


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, fer_store):
    """A finished one-epoch ``cnn`` run on the tests' FER-2013 store, and its summary."""
    run = tmp_path_factory.mktemp("runs") / "cnn"
    return run, train(TrainConfig(store=str(fer_store), model="cnn", epochs=1, batch_size=16, seed=3), run)


def test_a_runs_predictions_are_evaluated_on_its_test_samples(fer_store, fiftyone_database, cnn_run):
    from pipeline.tools.fiftyone_view import EVAL_KEY, FACE_SLICE, build_view_dataset

    cache, _ = fiftyone_database
    run, summary = cnn_run
    dataset = build_view_dataset(fer_store, name="fer-predictions", cache=cache, predictions=run)
    faces = dataset.select_group_slices(FACE_SLICE)
    assert faces.count() == 42 and faces.count_values("split") == {"test": 42}
    assert faces.count("prediction") == 42
    confidences = np.array(faces.values("prediction.confidence"))
    assert ((confidences > 0) & (confidences <= 1)).all()
    results = faces.load_evaluation_results(EVAL_KEY)
    assert results.metrics()["accuracy"] == pytest.approx(summary.test.accuracy)
    assert faces.count_values(EVAL_KEY)[True] == round(summary.test.accuracy * 42)


def test_predictions_of_another_store_are_refused(photo_store, fiftyone_database, cnn_run, tmp_path):
    from pipeline.tools.fiftyone_view import build_view_dataset

    cache, _ = fiftyone_database
    run, _ = cnn_run
    with pytest.raises(ViewerError, match="has 4 samples: the run was trained on another store"):
        build_view_dataset(photo_store, cache=cache, predictions=run)
    with pytest.raises(ViewerError, match="has no summary.json"):
        build_view_dataset(photo_store, cache=cache, predictions=tmp_path)
    with pytest.raises(StoreError, match="no split 'validation'"):
        build_view_dataset(photo_store, cache=cache, split="validation")


def test_the_app_answers_and_headless_chromium_sees_the_faces(photo_store, fiftyone_database, tmp_path):
    from pipeline.tools.fiftyone_view import build_view_dataset, launch_view, port_in_use

    cache, _ = fiftyone_database
    dataset = build_view_dataset(photo_store, name="photos-app", cache=cache)
    port = free_port()
    session = launch_view(dataset, port=port)
    try:
        with pytest.raises(ViewerError, match=f"port {port} .* in use"):
            launch_view(dataset, port=port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200
        if chromium() is None:
            pytest.skip("Debian's chromium is not installed: no screenshot")
        shot = screenshot(f"http://127.0.0.1:{port}/datasets/{dataset.name}", tmp_path / "app.png")
    finally:
        session.close()
    deadline = time.monotonic() + 30
    while port_in_use(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not port_in_use(port), "the App still answers after session.close()"

    image = cv2.imread(str(shot))
    grid = image[160:800, 320:1380]  # right of the sidebar, below the toolbar
    background = np.median(grid.reshape(-1, 3), axis=0)
    assert (np.abs(grid.astype(int) - background).max(axis=2) > 30).mean() > 0.05, "the samples grid is empty"


def test_fer_store_view_builds_the_dataset_and_stops_its_database(photo_store, tmp_path):
    needs_fiftyone()
    command = [str(FER_STORE), "view", str(photo_store), "--no-launch", "--cache", str(tmp_path), "--name", "cli"]
    own_database = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_DATABASE")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=own_database)
    assert done.returncode == 0, done.stderr
    assert "dataset cli: 4 samples, 3 of them with their source image" in done.stdout
    digest = store_digest(provenance_of(open_store(photo_store)))
    assert {p.name for p in tmp_path.iterdir()} == {"mongodb", digest}  # the images, and the database
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert f"--dbpath {tmp_path / 'mongodb'}" not in processes, "the viewer's mongod outlived fer-store view"


def test_ctrl_c_stops_the_app_and_its_database_in_seconds(photo_store, tmp_path):
    needs_fiftyone()
    own_database = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_DATABASE")}
    for _ in range(3):  # a port found free may be taken before the App binds it (its own mongod's, say)
        command = [str(FER_STORE), "view", str(photo_store), "--cache", str(tmp_path), "--port", str(free_port())]
        view = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=own_database,
            start_new_session=True,
        )
        said = []
        for line in view.stderr:
            said.append(line)
            if "FiftyOne App at" in line:
                break
        if not any("is in use: pass another --port" in line for line in said):
            break
        view.communicate(timeout=60)
    os.killpg(view.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground group
    began = time.monotonic()
    said.append(view.communicate(timeout=300)[1])
    assert view.returncode == 0, "".join(said)[-3000:]
    assert time.monotonic() - began < 30  # it took 126 s when mongod got it too
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert f"--dbpath {tmp_path / 'mongodb'}" not in processes, "the viewer's mongod outlived fer-store view"


def test_a_mongod_that_cannot_start_is_reported_with_what_to_do(tmp_path, monkeypatch):
    (tmp_path / "first").mkdir()
    monkeypatch.setenv(viewer_database.MONGOD_ENV, str(tmp_path / "missing"))
    with pytest.raises(ViewerError, match="is not an executable file"):
        viewer_database.find_mongod()
    monkeypatch.setenv(viewer_database.MONGOD_ENV, shutil.which("false"))
    with pytest.raises(ViewerError, match="exited with status 1 before it started"):
        with viewer_database.running_mongod(tmp_path / "first"):
            pass
    monkeypatch.delenv(viewer_database.MONGOD_ENV)
    needs_fiftyone()
    with viewer_database.running_mongod(tmp_path / "shared") as uri:
        with pytest.raises(ViewerError, match="another viewer's MongoDB is using"):
            with viewer_database.running_mongod(tmp_path / "shared"):
                pass
    port = int(uri.rsplit(":", 1)[1])
    assert not viewer_database._accepts(port), "mongod still runs after its block ended"


def test_without_the_viewer_extra_the_message_says_how_to_install_it():
    program = (
        "import sys; sys.modules['fiftyone'] = None\n"  # what Python does for a package that is absent
        "from pipeline.tools.fiftyone_view import import_fiftyone\n"
        "try:\n    import_fiftyone()\nexcept Exception as error:\n    print(type(error).__name__, error)\n"
    )
    printed = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True).stdout
    assert printed.startswith("ViewerError") and "make viewer" in printed
