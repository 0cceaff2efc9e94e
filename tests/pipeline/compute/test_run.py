"""The whole pipeline on real images: real dlib, real Zarr on disk, real Dask clusters."""

import os
import re
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
from pipeline.errors import DatasetError, ModelFileError, StoreError, StoreMismatchError
from pipeline.store import ATTRS_KEY, Status, array_specs, read_provenance
from tests.support.stores import expected_tree, fer2013_build_options, stores_equal

VENV_BIN = Path(sys.executable).parent


def run(store, root, config, **kwargs):
    kwargs.setdefault("scheduler", SYNCHRONOUS)
    return preprocess(store, "folder", root, config, **kwargs)


@pytest.fixture
def mixed_folder(tmp_path, dlib_faces) -> Path:
    """Faces, a photo with no face, and broken files, in class folders."""
    root = tmp_path / "mixed"
    (root / "faces").mkdir(parents=True)
    (root / "broken").mkdir()
    (root / "none").mkdir()
    for name in ("Tom_Cruise_avp_2014_4.jpg", "2008_001009.jpg"):
        shutil.copy(dlib_faces / name, root / "faces" / name)
    good = (dlib_faces / "2008_001322.jpg").read_bytes()
    (root / "broken" / "empty.jpg").write_bytes(b"")
    (root / "broken" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "broken" / "notes.jpg").write_text("not an image\n")
    (root / "broken" / "error-page.jpg").write_text("<html><body>502 Bad Gateway</body></html>")
    shutil.copy(dlib_faces / "dogs.jpg", root / "none" / "dogs.jpg")
    return root


def test_bad_inputs_get_statuses_and_messages_and_the_rest_is_written(tmp_path, mixed_folder):
    config = build_config({"align": {"size": 64}, "shard_size": 4})
    summary = run(tmp_path / "s.zarr", mixed_folder, config)
    assert summary.complete and summary.counts["total"] == 7
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    by_source = dict(zip(group["source"][:].tolist(), zip(group["status"][:], group["message"][:])))
    for name in ("empty.jpg", "truncated.jpg", "notes.jpg", "error-page.jpg"):
        status, message = by_source[f"broken/{name}"]
        assert status == Status.UNREADABLE and message, name
    assert by_source["broken/empty.jpg"][1] == "empty file (0 bytes)"
    assert by_source["none/dogs.jpg"][0] == Status.NO_FACE
    assert "no face" in by_source["none/dogs.jpg"][1]
    assert by_source["faces/Tom_Cruise_avp_2014_4.jpg"] == (Status.OK, "")
    assert by_source["faces/2008_001009.jpg"][0] == Status.OK  # two people: see the next test
    ok = group["status"][:] == Status.OK
    assert group["image"][:][ok].std(axis=(1, 2, 3)).min() > 10  # real faces were written
    assert not group["image"][:][~ok].any()  # failed samples hold zeroed guidance
    assert not group["heatmap"][:][~ok].any()


def test_a_photo_of_two_people_records_the_face_count_the_score_and_says_which_was_kept(tmp_path, mixed_folder):
    store = tmp_path / "s.zarr"
    run(store, mixed_folder, build_config({"align": {"size": 64}, "shard_size": 4}))
    group = zarr.open_group(str(store), mode="r")
    index = {source: i for i, source in enumerate(group["source"][:].tolist())}
    faces, score, message = group["faces_detected"][:], group["face_score"][:], group["message"][:]
    two, one = index["faces/2008_001009.jpg"], index["faces/Tom_Cruise_avp_2014_4.jpg"]
    assert (faces[two], faces[one], faces[index["none/dogs.jpg"]], faces[index["broken/empty.jpg"]]) == (2, 1, 0, 0)
    assert score[one] > 0 and score[two] > 0 and np.isnan(score[index["none/dogs.jpg"]])
    assert message[two] == (
        f"several faces found (2); the largest was kept (detector score {score[two]:.2f}), "
        "as no dataset box says which person is meant"
    )
    info = subprocess.run([VENV_BIN / "fer-store", "info", store], capture_output=True, text=True, check=True).stdout
    counts = dict(
        re.findall(r"\n  (none \(or not run\)|one|several|several, largest kept \(no box to choose\)) +(\d+)", info)
    )
    assert counts == {
        "none (or not run)": "5",
        "one": "1",
        "several": "1",
        "several, largest kept (no box to choose)": "1",
    }
    listed = subprocess.run(
        [VENV_BIN / "fer-store", "show", store, "--several-faces", "--list"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert listed == [f"{two}\tok\t2 faces, score {score[two]:.2f}\tfaces/2008_001009.jpg\t{message[two]}"]


def test_a_store_from_before_the_face_counts_still_reads_and_verifies(tmp_path, mixed_folder):
    from pipeline.store.writer import finalize_store
    from pipeline.tools.describe import describe_store
    from pipeline.tools.verify import verify_store

    store = tmp_path / "s.zarr"
    config = build_config({"align": {"size": 64}, "shard_size": 4})
    run(store, mixed_folder, config)
    group = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    del group["faces_detected"], group["face_score"]  # as an earlier fer-preprocess wrote it
    finalize_store(store)
    assert verify_store(str(store)) == []
    assert "faces found by the detector: not recorded" in describe_store(store)
    assert run(store, mixed_folder, config).processed == 0  # complete: nothing to write, nothing refused
    group["status"][:4] = np.zeros(4, dtype=np.uint8)  # a shard left pending
    with pytest.raises(StoreMismatchError, match="without the arrays faces_detected, face_score"):
        run(store, mixed_folder, config)


def test_rerun_does_nothing_and_other_inputs_are_refused_without_changes(tmp_path, mixed_folder):
    store = tmp_path / "s.zarr"
    config = build_config({"align": {"size": 48}, "shard_size": 4})
    run(store, mixed_folder, config)
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file() and "zarr.json" not in p.name}
    again = run(store, mixed_folder, config)
    assert again.processed == 0 and again.skipped_shards == 2 and again.complete

    with pytest.raises(StoreMismatchError, match=r"align\.size: 48 != 64"):
        run(store, mixed_folder, build_config({"align": {"size": 64}, "shard_size": 4}))
    with pytest.raises(StoreMismatchError, match="codec: 'zstd' != 'lz4'"):
        run(store, mixed_folder, build_config({"align": {"size": 48}, "shard_size": 4, "codec": "lz4"}))
    (mixed_folder / "none" / "extra.jpg").write_bytes(b"")
    with pytest.raises(StoreMismatchError, match="manifest differs"):
        run(store, mixed_folder, config)
    after = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file() and "zarr.json" not in p.name}
    assert after == before  # no chunk was touched
    assert read_provenance(store).complete is True


def test_wrong_root_missing_model_and_foreign_directory_are_clear_errors(tmp_path, mixed_folder):
    config = build_config({})
    with pytest.raises(DatasetError, match="does not exist"):
        run(tmp_path / "s.zarr", tmp_path / "nowhere", config)
    with pytest.raises(ModelFileError, match="--landmark-model"):
        run(tmp_path / "s.zarr", mixed_folder, config, landmark_model=tmp_path / "missing.dat")
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("precious")
    with pytest.raises(StoreError, match="not a Zarr store"):
        run(foreign, mixed_folder, config)
    with pytest.raises(StoreError):
        run(foreign, mixed_folder, config, overwrite=True)
    assert (foreign / "chapter1.tex").read_text() == "precious"
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.slow
def test_two_thousand_fer2013_images_through_a_local_cluster(tmp_path, fer2013_2k):
    config = build_config({"detect": {"prior": "full-frame"}, "align": {"size": 48, "color": "gray"}})
    summary = run(tmp_path / "fer.zarr", fer2013_2k, config, scheduler=None, workers=2)
    tree = expected_tree(fer2013_2k)
    assert len(tree) >= 2000
    assert summary.complete and summary.processed == len(tree) and not summary.failed_shards

    group = zarr.open_group(str(tmp_path / "fer.zarr"), mode="r")  # consolidated metadata
    prov = group.attrs[ATTRS_KEY]
    n = len(tree)
    for spec in array_specs(config):
        array = group[spec.name]
        assert array.shape == (n, *spec.sample_shape), spec.name
        assert tuple(array.metadata.dimension_names) == spec.dims, spec.name
        if spec.dtype is not str:
            assert array.dtype == np.dtype(spec.dtype), spec.name
    assert group["image"].shape == (n, 1, 48, 48) and group["heatmap"].shape == (n, 1, 48, 48)
    status = group["status"][:]
    assert set(np.unique(status)) <= {Status.OK, Status.OK_PRIOR}
    detected = float(np.mean(status == Status.OK))
    assert 0.5 < detected < 0.9  # dlib HOG finds about 69% of 48x48 FER faces at upsampling 1
    assert prov["splits"] == ["train", "test"]
    assert prov["label_names"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    stored = sorted(
        zip(
            group["source"][:].tolist(),
            [prov["label_names"][i] for i in group["label"][:]],
            [prov["splits"][i] for i in group["split"][:]],
        )
    )
    assert stored == tree
    assert prov["counts"]["ok"] + prov["counts"]["ok_prior"] == n
    assert prov["models"]["landmarks"]["sha256"] and prov["manifest_sha256"] and prov["config_sha256"]


def kill_when(process: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` is true."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run ended before the moment it was to be killed at"
        assert time.monotonic() < deadline, "the moment to kill the run at never came"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


@pytest.mark.slow
def test_a_run_killed_at_five_moments_resumes_to_the_same_store(tmp_path, fer2013_2k):
    """SIGKILL while the store is being created, after the first shard, at a third, at two thirds
    and one shard before the end; each time the next run resumes the store, and the last one
    completes it. The result equals an uninterrupted run's, array by array."""
    options = fer2013_build_options(fer2013_2k)
    killed = tmp_path / "killed.zarr"
    total_shards = -(-len(expected_tree(fer2013_2k)) // 64)

    def shards_done() -> int:
        chunks = killed / "status" / "c"
        return len(list(chunks.iterdir())) if chunks.exists() else 0

    moments = [
        lambda: killed.exists() or killed.with_name("killed.zarr.partial").exists(),
        lambda: shards_done() >= 1,
        lambda: shards_done() >= total_shards // 3,
        lambda: shards_done() >= 2 * total_shards // 3,
        lambda: shards_done() >= total_shards - 1,
    ]
    done_at_kill = []
    for ready in moments:
        process = subprocess.Popen(
            [VENV_BIN / "fer-preprocess", killed, *options, "--scheduler", "synchronous"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        kill_when(process, ready)
        done_at_kill.append(shards_done())
    assert done_at_kill[-1] < total_shards and done_at_kill == sorted(done_at_kill)
    assert read_provenance(killed).complete is False

    resumed = subprocess.run(
        [VENV_BIN / "fer-preprocess", killed, *options, "--workers", "2"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and not killed.with_name("killed.zarr.partial").exists()

    fresh = tmp_path / "fresh.zarr"
    subprocess.run(
        [VENV_BIN / "fer-preprocess", fresh, *options, "--scheduler", "synchronous"], check=True, capture_output=True
    )
    stores_equal(killed, fresh)


def test_a_template_left_half_written_is_replaced(tmp_path, mixed_folder):
    """A run killed while writing the template leaves ``<store>.partial``, never a half-made
    store; the next run deletes it and starts again."""
    partial = tmp_path / "s.zarr.partial"
    (partial / "image").mkdir(parents=True)
    (partial / "zarr.json").write_text("{")  # cut off mid-write
    summary = run(tmp_path / "s.zarr", mixed_folder, build_config({"align": {"size": 64}, "shard_size": 4}))
    assert summary.complete and not partial.exists()


def test_an_affectnet_sized_plan_has_one_task_per_shard_whose_size_does_not_grow_with_the_dataset():
    """300,000 rows (AffectNet's size) plan into one task per shard, each carrying only its own
    rows: a task pickles to the same size as one planned from 3,000 rows."""
    import pickle

    from pipeline.compute.model_files import ModelFiles
    from pipeline.compute.run import plan_tasks
    from pipeline.datasets import Manifest
    from pipeline.store import shard_bounds

    config, models = build_config({"shard_size": 256}), ModelFiles.locate()

    def plan(n):
        manifest = Manifest(
            dataset="affectnet",
            label_names=("a", "b"),
            splits=("train",),
            source=tuple(f"{i // 1000}/{i:06d}.jpg" for i in range(n)),
            label=np.zeros(n),
            split=np.zeros(n),
            prior_box=np.zeros((n, 4)),
            prior_landmarks=np.zeros((n, 68, 2)),
        )
        return plan_tasks("s.zarr", manifest, Path("root"), config, models, shard_bounds(n, 256))

    large, small = plan(300_000), plan(3_000)
    assert len(large) == 1172 and len(small) == 12
    assert all(len(t.sources) == t.prior_landmarks.shape[0] == t.stop - t.start <= 256 for t in large)
    assert len(pickle.dumps(large[5])) == len(pickle.dumps(small[5]))


def test_a_shard_whose_task_keeps_failing_is_recorded_and_the_next_run_retries_it(tmp_path, fer2013_small):
    from pipeline.compute.model_files import ModelFiles
    from pipeline.datasets import get_dataset
    from pipeline.store.schema import SHARD_FAILURE_PREFIX
    from pipeline.store.writer import prepare_store

    config = build_config({"detect": {"prior": "full-frame"}, "align": {"size": 48, "color": "gray"}, "shard_size": 32})
    store = tmp_path / "s.zarr"
    prepare_store(store, get_dataset("folder").scan(fer2013_small), config, ModelFiles.locate().sha256())
    blocker = store / "image" / "c" / "1" / "0" / "0" / "0"
    blocker.mkdir(parents=True)  # shard 1's image file cannot be written: its task fails for real
    summary = run(store, fer2013_small, config, scheduler=None, workers=2)  # a real cluster, with retries
    assert len(summary.failed_shards) == 1 and summary.failed_shards[0].startswith("samples 32-63: ")
    assert summary.counts["failed"] == 32 and summary.counts["pending"] == 0 and summary.counts["ok"] > 0
    group = zarr.open_group(str(store), mode="r")
    status, message = group["status"][:], group["message"][:]
    assert np.all(status[32:64] == Status.FAILED) and all(m.startswith(SHARD_FAILURE_PREFIX) for m in message[32:64])
    assert np.all(np.isin(status[:32], [Status.OK, Status.OK_PRIOR])) and np.all(status[64:] != Status.FAILED)

    blocker.rmdir()
    again = run(store, fer2013_small, config)
    assert again.processed == 32 and not again.failed_shards and again.counts["failed"] == 0
    fresh = tmp_path / "fresh.zarr"
    run(fresh, fer2013_small, config)
    stores_equal(store, fresh)
