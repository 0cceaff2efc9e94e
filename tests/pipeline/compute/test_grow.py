"""Adding guidance types to a complete store from its stored aligned faces and landmarks."""

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from fer_models.data.selection import select_samples
from fer_models.data.stream import StoreBatches
from pipeline import store
from pipeline.compute.model_files import ModelFiles
from pipeline.compute.run import SYNCHRONOUS, grow, preprocess
from pipeline.config import build_config
from pipeline.datasets import get_dataset
from pipeline.errors import ConfigError, GuidanceFailedError, ModelFileError, StoreError, StoreMismatchError
from pipeline.store import schema
from pipeline.store.growth import begin_growth
from pipeline.store.schema import GROWTH_MARK
from pipeline.store.writer import prepare_store
from pipeline.tools.verify import verify_store
from tests.support.onnx_networks import export_dimming_network
from tests.support.stores import fer2013_build_options, files_of, usable_face_means

VENV_BIN = Path(sys.executable).parent
ADDED = ("heatmap_landmarks", "saliency_network", "regions")


def build(path, guidance, **kwargs):
    config = build_config(get_dataset("sample").config_defaults, {"guidance": {"types": guidance}})
    return preprocess(path, "sample", None, config, scheduler=SYNCHRONOUS, **kwargs)


def add(path, guidance, **kwargs):
    kwargs.setdefault("scheduler", SYNCHRONOUS)
    return grow(path, guidance, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory, saliency_onnx):
    """The sample dataset built twice: with the default guidance only, and with the default
    guidance plus ``ADDED`` from the start."""
    folder = tmp_path_factory.mktemp("grow")
    build(folder / "default.zarr", "heatmap,saliency,mask_soft")
    build(folder / "everything.zarr", "heatmap,saliency,mask_soft," + ",".join(ADDED), saliency_model=saliency_onnx)
    return folder


def test_a_store_of_smaller_inner_chunks_grows_and_reads_as_one(tmp_path, monkeypatch):
    """A store written with fewer samples per inner chunk (as before they grew to 64 for small
    samples) is grown with the current layout; arrays of both layouts stream and verify as one."""
    path = tmp_path / "older.zarr"
    with monkeypatch.context() as older:
        older.setattr(schema, "MAX_SAMPLES_PER_INNER_CHUNK", 2)
        build(path, "heatmap,saliency,mask_soft")
    add(path, "mask_hull")
    group = store.open_store(path)
    assert group["heatmap"].chunks[0] == 2 and group["mask_hull"].chunks[0] > 2
    fields = ("image", "heatmap", "mask_hull", "landmarks")
    selection = select_samples(path, "sample")
    batches = list(StoreBatches(path, selection, fields, 16, shuffle=False, in_memory=False))
    for name in fields:
        streamed = np.concatenate([batch[name].numpy() for batch in batches])
        np.testing.assert_array_equal(streamed, group[name][:][selection.index], err_msg=name)
    assert verify_store(str(path)) == []


def test_a_grown_store_holds_what_a_full_build_would_have(built, tmp_path, saliency_onnx):
    grown = tmp_path / "grown.zarr"
    shutil.copytree(built / "default.zarr", grown)
    summary = add(grown, ",".join(ADDED), saliency_model=saliency_onnx)
    assert summary.guidance_added == ("heatmap_landmarks", "saliency_network", "regions")
    assert summary.processed == 204 and summary.complete and not summary.failed_shards

    group = zarr.open_group(str(grown), mode="r")  # consolidated metadata lists the new arrays
    full = store.open_store(built / "everything.zarr")
    assert sorted(group.array_keys()) == sorted(full.array_keys())  # no growth marks left behind
    assert store.stored_guidance(group) == store.stored_guidance(full)
    for name in group.array_keys():
        np.testing.assert_array_equal(group[name][:], full[name][:], err_msg=name)
        assert dict(group[name].attrs) == dict(full[name].attrs), name
        assert group[name].chunks == full[name].chunks and group[name].shards == full[name].shards, name
    assert group["saliency_network"][:][group["status"][:] == store.Status.OK].max() == 255

    provenance = group.attrs[store.ATTRS_KEY]
    assert "growing" not in provenance and provenance["complete"]
    assert provenance["config"] == store.read_provenance(built / "default.zarr").config  # the build's own
    (record,) = provenance["guidance_added"]
    assert record["types"] == list(ADDED)
    assert record["models"] == ModelFiles.locate(saliency_network=saliency_onnx, need_landmarks=False).sha256()
    assert record["versions"]["zarr"] == zarr.__version__ and record["started"] <= record["finished"]

    again = add(grown, "regions")
    assert again.processed == 0 and again.guidance_added == ()
    resumed_build = build(grown, "heatmap,saliency,mask_soft")  # the build command still resumes
    assert resumed_build.processed == 0 and resumed_build.complete


def test_growth_refuses_what_it_cannot_do_before_any_work(built, tmp_path, saliency_onnx):
    default = built / "default.zarr"
    with pytest.raises(ConfigError, match="saliency_network guidance type needs --saliency-model"):
        add(default, "saliency_network")
    with pytest.raises(ConfigError, match="--saliency-model is only used by the saliency_network"):
        add(default, "regions", saliency_model=saliency_onnx)
    with pytest.raises(ConfigError, match="unknown guidance type 'mask'"):
        add(default, "mask")

    template = tmp_path / "template.zarr"  # a build stopped before any shard was written
    config = build_config(get_dataset("sample").config_defaults)
    manifest = get_dataset("sample").scan(None)
    prepare_store(template, manifest, config, ModelFiles.locate().sha256())
    with pytest.raises(StoreError, match=r"not complete \(204 of 204 samples pending\); finish it first"):
        add(template, "regions")

    without_images = tmp_path / "no-images.zarr"
    shutil.copytree(default, without_images)
    del zarr.open_group(str(without_images), mode="r+", use_consolidated=False)["image"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's note that consolidated metadata is not in the v3 spec
        zarr.consolidate_metadata(str(without_images))  # a store slimmed down by hand
    with pytest.raises(
        StoreError, match="saliency_fine_grained renders from the stored 'image', which this store lacks"
    ):
        add(without_images, "saliency_fine_grained,regions")
    assert add(without_images, "regions").guidance_added == ("regions",)  # landmarks are enough

    with pytest.raises(
        StoreMismatchError, match=r"To add regions to this store, run `fer-preprocess .* --guidance regions`"
    ):
        build(default, "heatmap,saliency,mask_soft,regions")
    assert store.stored_guidance(store.open_store(default)) == ("heatmap", "saliency", "mask_soft")


def test_an_unfinished_growth_is_finished_before_another_starts(built, tmp_path):
    path = tmp_path / "growing.zarr"
    shutil.copytree(built / "default.zarr", path)
    begin_growth(path, ("mask_hull",), {})  # as a growth killed before its first shard leaves it
    group = store.open_store(path)
    assert "mask_hull" in group and store.stored_guidance(group) == ("heatmap", "saliency", "mask_soft")
    with pytest.raises(
        StoreError, match=r"still adding mask_hull; finish that first with `fer-preprocess .* --guidance mask_hull`"
    ):
        add(path, "regions")
    summary = add(path, "mask_hull", scheduler=None, workers=2)  # a real local cluster
    assert summary.guidance_added == ("mask_hull",) and summary.processed == 204
    assert "mask_hull" in store.stored_guidance(store.open_store(path))


@pytest.mark.slow
def test_a_killed_growth_resumes_to_the_same_arrays(tmp_path, fer2013_2k):
    base = tmp_path / "base.zarr"
    subprocess.run(
        [VENV_BIN / "fer-preprocess", base, *fer2013_build_options(fer2013_2k), "--scheduler", "synchronous"],
        check=True,
        capture_output=True,
    )
    killed, whole = tmp_path / "killed.zarr", tmp_path / "whole.zarr"
    shutil.copytree(base, killed)
    shutil.copytree(base, whole)
    command = ["--guidance", "mask_hull,saliency_fine_grained", "--no-progress"]
    process = subprocess.Popen(
        [VENV_BIN / "fer-preprocess", killed, *command, "--scheduler", "synchronous"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marks = killed / GROWTH_MARK / "c"
    total_shards = len(store.shard_bounds(store.open_store(base)["status"].shape[0], 64))
    deadline, done = time.monotonic() + 120, 0
    while time.monotonic() < deadline:
        done = len(list(marks.glob("*"))) if marks.exists() else 0
        if done >= 3:
            break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 3 <= done < total_shards, "the growth should have been killed part-way"
    assert store.stored_guidance(store.open_store(killed)) == ("heatmap", "saliency", "mask_soft")

    resumed = subprocess.run(
        [VENV_BIN / "fer-preprocess", killed, *command, "--workers", "2"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming adding saliency_fine_grained, mask_hull" in resumed.stderr
    assert "guidance   added saliency_fine_grained, mask_hull" in resumed.stdout
    subprocess.run(
        [VENV_BIN / "fer-preprocess", whole, *command, "--scheduler", "synchronous"], check=True, capture_output=True
    )
    a, b = store.open_store(killed), store.open_store(whole)
    assert sorted(a.array_keys()) == sorted(b.array_keys())
    for name in ("saliency_fine_grained", "mask_hull", "status"):
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def test_a_type_that_fails_on_many_faces_is_not_added_and_the_store_is_as_it_was(built, tmp_path, saliency_onnx):
    path = tmp_path / "store.zarr"
    shutil.copytree(built / "default.zarr", path)
    usable, means = usable_face_means(path)
    network = export_dimming_network(tmp_path / "dimming.onnx", float(np.median(means[1:])))
    assert means[0] > np.median(means[1:])  # the start-up check on the first face passes
    before = files_of(path)
    with pytest.raises(
        GuidanceFailedError, match=r"saliency_network failed on 44 of 89 usable samples \(49%\)"
    ) as raised:
        add(path, "saliency_network", saliency_model=network)
    assert "non-finite values" in str(raised.value) and "as it was before this run" in str(raised.value)
    assert files_of(path) == before  # every file, byte for byte
    assert verify_store(str(path)) == []
    assert add(path, "saliency_network", saliency_model=saliency_onnx).guidance_added == ("saliency_network",)


def test_a_type_that_fails_on_a_few_faces_is_added_with_each_failure_recorded_apart(built, tmp_path):
    path = tmp_path / "store.zarr"
    shutil.copytree(built / "default.zarr", path)
    usable, means = usable_face_means(path)
    darkest, second = np.sort(means)[:2]
    network = export_dimming_network(tmp_path / "dimming.onnx", float(darkest + second) / 2)
    failed = int(usable[np.argmin(means)])
    group = store.open_store(path)
    status, message = group["status"][:], group["message"][:]
    summary = add(path, "saliency_network", saliency_model=network)
    assert summary.guidance_added == ("saliency_network",)
    group = store.open_store(path)
    np.testing.assert_array_equal(group["status"][:], status)  # adding guidance never changes these
    np.testing.assert_array_equal(group["message"][:], message)
    errors = group["guidance_errors"][:]
    assert np.flatnonzero(errors != "").tolist() == [failed]
    assert errors[failed].startswith("saliency_network: ValueError: the saliency network gave")
    assert not group["saliency_network"][failed].any() and group["saliency_network"][usable[0]].any()
    assert store.provenance_of(group).guidance_added[-1].failed == {"saliency_network": 1}
    assert failed not in select_samples(path, "sample").index and len(select_samples(path, "sample")) == 88
    assert verify_store(str(path)) == []


def test_a_network_that_fails_on_the_stores_faces_is_refused_before_any_work(built, tmp_path):
    path = tmp_path / "store.zarr"
    shutil.copytree(built / "default.zarr", path)
    before = files_of(path)
    with pytest.raises(ModelFileError, match=r"gives non-finite values on a 64x64x3 face"):
        add(path, "saliency_network", saliency_model=export_dimming_network(tmp_path / "dark.onnx", 2.0))
    assert files_of(path) == before
