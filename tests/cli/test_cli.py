"""The console scripts as a user runs them."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.landmark_scheme import FLIP_PERMUTATION
from pipeline.store import open_store, stored_guidance
from pipeline.tools.contact_sheet import HEADER
from tests.support.stores import fer2013_build_options

BIN = Path(sys.executable).parent


def cli(*args, check=True):
    result = subprocess.run([BIN / args[0], *map(str, args[1:])], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("cli") / "sample.zarr"
    cli("fer-preprocess", store, "--dataset", "sample", "--scheduler", "synchronous", "--no-progress")
    return store


def test_info_describes_counts_arrays_and_provenance(sample_store):
    out = cli("fer-store", "info", sample_store).stdout
    assert "dataset   sample   samples 204   complete True" in out
    for name in ("image", "heatmap", "saliency", "mask_soft", "landmarks", "status", "message"):
        assert f"\n  {name} " in out
    assert "shape_predictor_68_face_landmarks.dat" in out and "config_sha256" in out
    assert "\n  classes  label  face, non-face" in out


def test_show_writes_a_readable_png_including_failed_samples(sample_store, tmp_path):
    out = tmp_path / "sheet.png"
    result = cli("fer-store", "show", sample_store, "--n", "6", "--out", out)
    assert "6 samples" in result.stdout
    sheet = np.asarray(Image.open(out))
    assert sheet.shape == (HEADER + 2 * (112 + 30), 3 * 4 * 112, 3)
    failed = tmp_path / "failed.png"
    cli("fer-store", "show", sample_store, "--status", "no_face", "--n", "3", "--out", failed)
    assert np.asarray(Image.open(failed)).shape == (HEADER + 112 + 30, 3 * 4 * 112, 3)


def test_preprocess_errors_name_what_to_change(tmp_path):
    missing = cli(
        "fer-preprocess", tmp_path / "s.zarr", "--dataset", "folder", "--root", tmp_path / "nope", check=False
    )
    assert missing.returncode == 1 and "DATA_ROOT" in missing.stderr and "Traceback" not in missing.stderr
    bad_size = cli("fer-preprocess", tmp_path / "s.zarr", "--dataset", "sample", "--size", "4", check=False)
    assert bad_size.returncode == 1 and "aligned size must be between 16 and 1024" in bad_size.stderr
    no_store = cli("fer-store", "info", tmp_path / "nothing.zarr", check=False)
    assert no_store.returncode == 1 and "no store at" in no_store.stderr


def test_preprocess_reports_a_summary_as_json(tmp_path):
    import json

    result = cli(
        "fer-preprocess",
        tmp_path / "s.zarr",
        "--dataset",
        "sample",
        "--scheduler",
        "synchronous",
        "--size",
        "32",
        "--no-progress",
        "--json",
    )
    summary = json.loads(result.stdout)
    assert summary["complete"] and summary["counts"]["total"] == 204
    assert summary["counts"]["ok"] > 50 and summary["counts"]["no_face"] > 100


def test_a_store_holds_exactly_the_guidance_asked_for(tmp_path):
    store = tmp_path / "some.zarr"
    cli(
        "fer-preprocess",
        store,
        "--dataset",
        "sample",
        "--scheduler",
        "synchronous",
        "--no-progress",
        "--guidance",
        "regions,mask_hull,heatmap_landmarks",
        "--guidance-size",
        "32",
    )
    group = open_store(store)
    assert stored_guidance(group) == ("heatmap_landmarks", "mask_hull", "regions")
    assert "heatmap" not in group and "saliency" not in group and "mask_soft" not in group
    assert group["heatmap_landmarks"].shape == (204, 68, 32, 32)
    assert group["heatmap_landmarks"].attrs["flip_permutation"] == FLIP_PERMUTATION.tolist()
    assert group["regions"].attrs["channels"][:2] == ["right_eye", "left_eye"]
    assert group["regions"].attrs["flip_permutation"][:2] == [1, 0]
    assert group.attrs["fer_store"]["landmark_flip_permutation"] == FLIP_PERMUTATION.tolist()
    ok = group["status"][:] == 1
    boxes = group["regions"][:][ok]
    assert np.all(boxes[..., 2] > boxes[..., 0]) and boxes.max() <= 64  # sample dataset: S = 64
    sheet = tmp_path / "sheet.png"
    cli("fer-store", "show", store, "--n", "3", "--out", sheet)
    assert np.asarray(Image.open(sheet)).shape == (HEADER + 112 + 30, 3 * 4 * 112, 3)
    bad = cli("fer-preprocess", tmp_path / "x.zarr", "--dataset", "sample", "--guidance", "heatmaps", check=False)
    assert bad.returncode == 1 and "unknown guidance type 'heatmaps'; choose from" in bad.stderr


def test_preprocess_without_dataset_adds_guidance_to_a_store(sample_store, tmp_path):
    import shutil

    store = tmp_path / "grown.zarr"
    shutil.copytree(sample_store, store)
    result = cli(
        "fer-preprocess", store, "--guidance", "regions,mask_hull", "--scheduler", "synchronous", "--no-progress"
    )
    assert "adding mask_hull, regions to" in result.stderr and "guidance   added mask_hull, regions" in result.stdout
    assert "added            mask_hull, regions (" in cli("fer-store", "info", store).stdout
    with_size = cli("fer-preprocess", store, "--guidance", "heatmap_regions", "--size", "48", check=False)
    assert with_size.returncode == 2 and "--size needs --dataset" in with_size.stderr
    nothing = cli("fer-preprocess", store, check=False)
    assert nothing.returncode == 2 and "pass --dataset to build a store, or --guidance LIST" in nothing.stderr


def test_make_preprocess_passes_every_store_option_as_its_variable(tmp_path):
    store = tmp_path / "made.zarr"
    repository = Path(__file__).resolve().parents[2]
    venv = Path(sys.executable).parent.parent
    result = subprocess.run(
        ["make", "-C", repository, f"VENV={venv}", "-o", f"{venv}/.installed", "preprocess", "DATASET=sample"]
        + [f"STORE={store}", "ALIGN=arcface", "SIZE=32", "GUIDANCE=heatmap", "SHARD_SIZE=64", "SCHEDULER=synchronous"]
        + ["PREPROCESS_ARGS=--no-progress"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    config = open_store(store).attrs["fer_store"]["config"]
    assert config["align"] == {"mode": "arcface", "size": 32, "color": "rgb"}
    assert config["guidance"]["types"] == ["heatmap"] and config["shard_size"] == 64


def test_ctrl_c_stops_a_build_in_one_line_and_the_same_command_resumes_it(tmp_path, fer2013_2k):
    store = tmp_path / "s.zarr"
    command = [BIN / "fer-preprocess", store, *fer2013_build_options(fer2013_2k), "--workers", "1"]
    build = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's foreground job has it
    )
    assert build.stderr.readline().startswith("created")
    deadline = time.monotonic() + 120
    while not (open_store(store)["status"][:] != 0).any():  # the workers are writing shards
        assert time.monotonic() < deadline and build.poll() is None
        time.sleep(0.2)
    os.killpg(build.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group, workers too
    stdout, stderr = build.communicate(timeout=120)
    assert build.returncode == 130 and "Traceback" not in stderr + stdout, stderr
    assert stderr.strip().splitlines() == [
        "interrupted: the shards already written are kept; run the same command again to go on from there "
        "(until then fer-store verify calls the store INCOMPLETE)"
    ]
    assert (open_store(store)["status"][:] == 0).any()  # stopped before the end
    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0 and "resuming" in resumed.stderr and "complete)" in resumed.stdout
