"""Hostile input: every kind in the generated corpus ends as a status and a message, nothing
crashes, and the good samples come out exactly as they do on their own."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.compute.run import SYNCHRONOUS, preprocess
from pipeline.config import build_config
from pipeline.datasets import get_dataset
from pipeline.errors import DatasetError
from pipeline.store import Status
from tests.support.dataset_trees import AFFECTNET_HEADER, write_affectnet
from tests.support.hostile_corpus import huge_png, write_image_corpus, write_row_corpus

VENV_BIN = Path(sys.executable).parent

FACE, NO_FACE, CROWD = "Tom_Cruise_avp_2014_4.jpg", "dogs.jpg", "bald_guys.jpg"
COMPARED = ("image", "landmarks", "landmarks_src", "heatmap", "saliency", "mask_soft")


def build(store, dataset, root, config):
    summary = preprocess(store, dataset, root, config, scheduler=SYNCHRONOUS)
    assert summary.complete and not summary.failed_shards
    group = zarr.open_group(str(store), mode="r")
    return group, {source: i for i, source in enumerate(group["source"][:].tolist())}


def test_every_hostile_file_kind_gets_a_status_and_message(tmp_path, dlib_faces):
    root = tmp_path / "corpus"
    kinds = write_image_corpus(root, dlib_faces / FACE, dlib_faces / NO_FACE, dlib_faces / CROWD)
    assert len(kinds) >= 27
    config = build_config({"detect": {"prior": "none"}, "align": {"size": 64}, "shard_size": 8})
    group, index = build(tmp_path / "corpus.zarr", "folder", root, config)
    assert sorted(index) == sorted(kind.source for kind in kinds)
    status, message = group["status"][:], group["message"][:]
    for kind in kinds:
        i = index[kind.source]
        assert status[i] in kind.statuses, (kind.name, Status(status[i]).label, message[i])
        assert kind.message in message[i], (kind.name, message[i])
        if kind.statuses == (Status.OK,):  # ok with no message, but for a photo of several people
            assert bool(message[i]) == bool(kind.message) and group["image"][i].std() > 10, kind.name

    control = index["good/control.jpg"]
    for copy in ("names/duplicate-a.jpg", "names/duplicate-b.jpg", "names/Émotion été — face 01.jpg"):
        for name in COMPARED:
            np.testing.assert_array_equal(group[name][index[copy]], group[name][control], err_msg=f"{copy} {name}")
    upright = group["landmarks_src"][index["formats/exif-rotated.jpg"]]
    np.testing.assert_allclose(upright, group["landmarks_src"][control], atol=3.0)  # EXIF applied before detection

    # The control face alone, in a store of its own, comes out bit for bit the same.
    alone = tmp_path / "alone"
    (alone / "good").mkdir(parents=True)
    (alone / "good" / "control.jpg").write_bytes((root / "good" / "control.jpg").read_bytes())
    single, _ = build(tmp_path / "alone.zarr", "folder", alone, config)
    for name in COMPARED:
        np.testing.assert_array_equal(group[name][control], single[name][0], err_msg=name)


def test_every_malformed_list_row_is_recorded_and_the_good_rows_are_processed(tmp_path, dlib_faces):
    rows = write_row_corpus(tmp_path / "affectnet", dlib_faces / FACE)
    config = build_config({"detect": {"prior": "dataset"}, "align": {"size": 64}, "shard_size": 4})
    group, _ = build(tmp_path / "rows.zarr", "affectnet", tmp_path / "affectnet", config)
    status, message, label = group["status"][:], group["message"][:], group["label"][:]
    assert len(status) == len(rows) + 1  # validation.csv's one good row follows
    for i, row in enumerate(rows):
        assert status[i] in row.status, (row.name, Status(status[i]).label, message[i])
        assert row.message in message[i], (row.name, message[i])
        if row.status == (Status.FAILED,):
            assert f"training.csv, line {i + 2}" in message[i] and label[i] == -1, row.name
    good = [i for i, row in enumerate(rows) if row.name.startswith("good")]
    for name in COMPARED:
        np.testing.assert_array_equal(group[name][good[0]], group[name][good[1]], err_msg=name)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda text: text.replace("1/face.jpg", "1/face\xff.jpg", 1),
            r"training\.csv, line 2: byte 0xff is not UTF-8",
        ),
        (lambda text: text.replace("1/face.jpg", "1/" + "f" * 200_000, 1), r"training\.csv, line 2: field larger"),
    ],
    ids=["non-UTF-8 byte", "200 KB field"],
)
def test_a_list_file_that_cannot_be_read_as_text_is_named_with_its_line(tmp_path, dlib_faces, damage, message):
    rows = write_row_corpus(tmp_path / "affectnet", dlib_faces / FACE)
    listed = tmp_path / "affectnet" / "Manually_Annotated_file_lists" / "training.csv"
    listed.write_bytes(damage(listed.read_text(encoding="latin-1")).encode("latin-1"))
    assert rows
    with pytest.raises(DatasetError, match=message):
        get_dataset("affectnet").scan(tmp_path / "affectnet")


def test_file_and_folder_names_that_are_not_utf8_are_samples_shown_escaped(tmp_path, dlib_faces):
    root = tmp_path / "photos"
    (root / "happy").mkdir(parents=True)
    shutil.copy(dlib_faces / FACE, root / "happy" / "good.jpg")
    shutil.copy(dlib_faces / FACE, os.fsdecode(bytes(root / "happy") + b"/bad\xff.jpg"))
    os.mkdir(os.fsdecode(bytes(root) + b"/sad\xfe"))
    shutil.copy(dlib_faces / FACE, os.fsdecode(bytes(root) + b"/sad\xfe/x.jpg"))
    config = build_config({"align": {"size": 64}})
    group, index = build(tmp_path / "names.zarr", "folder", root, config)
    assert sorted(index) == ["happy/bad\\xff.jpg", "happy/good.jpg", "sad\\xfe/x.jpg"]
    assert (group["status"][:] == Status.OK).all()
    assert group.attrs["fer_store"]["label_names"] == ["happy", "sad\\xfe"]
    for name in COMPARED:  # the same photo under any name
        np.testing.assert_array_equal(group[name][index["happy/bad\\xff.jpg"]], group[name][index["happy/good.jpg"]])


@pytest.mark.slow
def test_a_file_that_kills_its_process_costs_only_itself(tmp_path, dlib_faces):
    """A real fer-preprocess process is killed with SIGKILL (as the kernel's OOM killer or a
    worker's nanny ends it) while it decodes a 400-megapixel PNG, twice; the run started again
    leaves that file out and writes the rest of its shard. (A worker killed once mid-shard for
    another reason loses nothing: tests/pipeline/compute/test_cluster_faults.py.)"""
    root = tmp_path / "photos"
    photos = root / "neutral"
    photos.mkdir(parents=True)
    for name in (FACE, "2008_002470.jpg", "2009_004587.jpg"):
        shutil.copy(dlib_faces / name, photos / f"a-{name}")
    (photos / "b-huge.png").write_bytes(huge_png(20000))
    for name in ("2008_001322.jpg", "2008_004176.jpg"):
        shutil.copy(dlib_faces / name, photos / f"c-{name}")
    store = tmp_path / "s.zarr"
    command = [VENV_BIN / "fer-preprocess", store, "--dataset", "folder", "--root", root, "--max-pixels", "500000000"]
    command += ["--scheduler", "synchronous", "--size", "64"]
    in_progress = tmp_path / "s.zarr.in-progress" / "0"
    for deaths in range(2):  # a file that kills its process kills it every time; one death proves nothing
        run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        # on b-huge.png (sample 3), in this run: the record lists the earlier deaths after it
        while not (in_progress.exists() and in_progress.read_text().split() == ["3"] * (deaths + 1)):
            assert run.poll() is None and time.monotonic() < deadline, "the run never reached the huge file"
            time.sleep(0.005)
        run.send_signal(signal.SIGKILL)
        assert run.wait() == -signal.SIGKILL

    finished = subprocess.run(command, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    group = zarr.open_group(str(store), mode="r")
    sources, status, message = group["source"][:].tolist(), group["status"][:], group["message"][:]
    huge = sources.index("neutral/b-huge.png")
    assert status[huge] == Status.FAILED and "the worker processing this sample died" in message[huge]
    others = [i for i in range(len(sources)) if i != huge]
    assert all(status[i] in (Status.OK, Status.NO_FACE) for i in others) and (status == Status.OK).sum() >= 3
    assert not in_progress.parent.exists()


def test_dataset_boxes_and_landmarks_that_cannot_be_a_face_are_the_samples_fault(tmp_path, dlib_faces):
    """Landmarks off the photo used to give an all-black ``ok_prior`` face, and a box of 1e30
    pixels was clipped to the whole photo; both are now recorded as failed, saying why."""
    root = tmp_path / "affectnet"
    train = [row for row in write_affectnet(root, dlib_faces) if row.split == "train"]
    off_the_photo = dataclasses.replace(train[1], landmarks=train[1].landmarks + 10_000)
    huge_box = dataclasses.replace(train[2], box=np.array([0, 0, 1e30, 1e30], np.float32))
    rows = [train[0], off_the_photo, huge_box, *train[3:]]
    (root / "Manually_Annotated_file_lists" / "training.csv").write_text(
        "\n".join([AFFECTNET_HEADER, *(row.csv_line() for row in rows)]) + "\n"
    )
    config = build_config({"detect": {"prior": "dataset"}, "landmarks": {"source": "dataset"}, "align": {"size": 64}})
    group, _ = build(tmp_path / "rows.zarr", "affectnet", root, config)
    status, message = group["status"][:], group["message"][:]
    assert status[0] == Status.OK_PRIOR and group["image"][0].std() > 10
    assert status[1] == Status.FAILED and "the dataset's landmarks lie outside the" in message[1], message[1]
    assert "(0 of 68 on it)" in message[1]
    assert status[2] == Status.FAILED and "pixels, over 2 times the" in message[2], message[2]
    assert all(s == Status.OK_PRIOR for s in status[3 : len(rows)]), status
