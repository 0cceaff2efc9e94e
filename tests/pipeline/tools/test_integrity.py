"""Verify, pack, refusal of hostile stores, read-only opening, xarray."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from fer_models.data.selection import select_samples
from fer_models.data.stream import StoreBatches
from pipeline.errors import StoreError
from pipeline.store import open_store
from pipeline.tools.describe import describe_store, diff_stores
from pipeline.tools.pack import pack_store
from pipeline.tools.verify import verify_store

BIN = Path(sys.executable).parent


def chunk_files(store: Path, name: str) -> list[Path]:
    return sorted(p for p in (store / name).rglob("*") if p.is_file() and p.name != "zarr.json")


def test_verify_finds_a_flipped_byte_in_every_array(fer_store, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(fer_store, store)
    assert verify_store(str(store)) == []
    names = sorted(zarr.open_group(str(store), mode="r").array_keys())
    checked = 0
    for name in names:
        files = chunk_files(store, name)
        if not files:  # an array still all at its fill value has no chunk to damage (split here)
            continue
        target = files[len(files) // 2]
        original = target.read_bytes()
        damaged = bytearray(original)
        damaged[len(damaged) // 3] ^= 0x10
        target.write_bytes(bytes(damaged))
        faults = verify_store(str(store))
        assert faults and all(f.where.startswith(f"{name}/") for f in faults), (name, faults)
        assert "checksum" in str(faults[0]) or "Error" in str(faults[0])
        target.write_bytes(original)
        checked += 1
    group = zarr.open_group(str(store), mode="r")
    unwritten = [name for name in names if not chunk_files(store, name)]
    for name in unwritten:  # only arrays holding nothing but their fill value have no chunk file
        values, fill = group[name][:], group[name].metadata.fill_value
        assert np.all(np.isnan(values)) if values.dtype.kind == "f" and np.isnan(fill) else np.all(values == fill), name
    assert checked == len(names) - len(unwritten) >= 15
    verified = subprocess.run([BIN / "fer-store", "verify", store], capture_output=True, text=True)
    assert verified.returncode == 0 and "intact and complete" in verified.stdout


def test_verify_lists_every_metadata_objection_and_reads_nothing_then(fer_store, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(fer_store, store)
    own = json.loads((store / "label" / "zarr.json").read_text())
    own["attributes"] = {"edited": True}
    (store / "label" / "zarr.json").write_text(json.dumps(own))
    root = json.loads((store / "zarr.json").read_text())
    root["attributes"]["fer_store"]["config"]["align"]["size"] = 64  # the arrays no longer fit the config
    (store / "zarr.json").write_text(json.dumps(root))
    faults = [str(f) for f in verify_store(str(store))]
    assert faults == [
        "metadata: array 'label': its own label/zarr.json is missing or differs from the consolidated metadata in the root zarr.json",
        "metadata: array 'image': field 'shape' is [84, 1, 48, 48]; the store's 84 samples and its config call for [84, 1, 64, 64]",
    ]
    result = subprocess.run([BIN / "fer-store", "verify", store], capture_output=True, text=True)
    assert result.returncode == 1 and "FAULT metadata: array 'image'" in result.stdout


def test_verify_reports_a_config_that_does_not_match_its_hash(fer_store, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(fer_store, store)
    root = json.loads((store / "zarr.json").read_text())
    root["attributes"]["fer_store"]["config"]["detect"]["upsample"] = 3
    (store / "zarr.json").write_text(json.dumps(root))
    assert [str(f) for f in verify_store(str(store))] == [
        "provenance: config_sha256 does not match the recorded config"
    ]


def test_pack_then_open_the_zip_and_unpack_it(fer_store, tmp_path):
    packed = tmp_path / "fer.zarr.zip"
    files = pack_store(fer_store, packed)
    assert files == len([p for p in fer_store.rglob("*") if p.is_file()])
    assert verify_store(str(packed)) == []
    batches = StoreBatches(str(packed), select_samples(str(packed), "train"), ("image", "mask_soft"), 16)
    reference = StoreBatches(fer_store, select_samples(fer_store, "train"), ("image", "mask_soft"), 16)
    for a, b in zip(batches, reference):
        torch.testing.assert_close(a["mask_soft"], b["mask_soft"], rtol=0, atol=0)
    unpacked = tmp_path / "unpacked.zarr"
    with zipfile.ZipFile(packed) as archive:
        archive.extractall(unpacked)
    assert verify_store(str(unpacked)) == []
    with pytest.raises(StoreError, match="exists"):
        pack_store(fer_store, packed)
    listed = subprocess.run([BIN / "fer-store", "ls", packed], capture_output=True, text=True)
    assert listed.returncode == 0 and "mask_soft" in listed.stdout


def test_pack_refuses_links_and_anything_but_regular_files(fer_store, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the archive")
    for make_link, kind in (
        (lambda store: (store / "label" / "c" / "9").symlink_to(secret), r"symbolic link \(to "),
        (lambda store: (store / "notes").symlink_to(tmp_path, target_is_directory=True), r"symbolic link \(to "),
        (lambda store: os.mkfifo(store / "label" / "c" / "9"), "is not a regular file"),
    ):
        store = tmp_path / "store.zarr"
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(fer_store, store)
        make_link(store)
        packed = tmp_path / "out.zarr.zip"
        with pytest.raises(StoreError, match=kind):
            pack_store(store, packed)
        assert not packed.exists() and not (tmp_path / "out.zarr.zip.partial").exists()


def edit_array_metadata(store: Path, name: str, change) -> None:
    """Apply ``change`` to array ``name``'s metadata, in its zarr.json and the consolidated copy."""
    own = json.loads((store / name / "zarr.json").read_text())
    change(own)
    (store / name / "zarr.json").write_text(json.dumps(own))
    root = json.loads((store / "zarr.json").read_text())
    change(root["consolidated_metadata"]["metadata"][name])
    (store / "zarr.json").write_text(json.dumps(root))


@pytest.mark.parametrize(
    "hostile, message",
    [
        (lambda m: m["codecs"].insert(1, {"name": "numcodecs.pickle"}), "uses the codec 'numcodecs.pickle'"),
        (lambda m: m.update(data_type="object"), "has data type 'object'"),
        (
            lambda m: m["codecs"][0]["configuration"]["codecs"].append({"name": "my.custom"}),
            "uses the codec 'my.custom'",
        ),
    ],
)
def test_stores_asking_for_unsafe_types_or_codecs_are_refused(fer_store, tmp_path, hostile, message):
    store = tmp_path / "hostile.zarr"
    shutil.copytree(fer_store, store)
    name = "image" if "my.custom" in message else "label"
    edit_array_metadata(store, name, hostile)
    with pytest.raises(StoreError, match=message):
        open_store(store)
    result = subprocess.run([BIN / "fer-store", "info", store], capture_output=True, text=True)
    assert result.returncode == 1 and "refused" in result.stderr and "Traceback" not in result.stderr


def test_a_future_schema_version_is_refused(fer_store, tmp_path):
    store = tmp_path / "future.zarr"
    shutil.copytree(fer_store, store)
    root = json.loads((store / "zarr.json").read_text())
    root["attributes"]["fer_store"]["schema_version"] = 2
    (store / "zarr.json").write_text(json.dumps(root))
    with pytest.raises(StoreError, match="schema version 2; this version of the software reads version 1"):
        open_store(store)


def test_reading_a_store_never_writes_to_it(fer_store, tmp_path):
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in fer_store.rglob("*")}
    describe_store(fer_store)
    verify_store(str(fer_store))
    list(StoreBatches(fer_store, select_samples(fer_store, "test"), ("image", "heatmap", "regions"), 8))
    for command in (["info"], ["ls"], ["show", "--n", "2", "--out", str(tmp_path / "s.png")]):
        subprocess.run([BIN / "fer-store", command[0], fer_store, *command[1:]], check=True, capture_output=True)
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in fer_store.rglob("*")}
    assert after == before


def test_diff_marks_what_differs(fer_store, tmp_path, fer2013_small):
    from pipeline.compute.run import SYNCHRONOUS, preprocess
    from pipeline.config import build_config

    other = tmp_path / "other.zarr"
    config = build_config({"detect": {"prior": "full-frame"}, "align": {"size": 40, "color": "gray"}, "shard_size": 32})
    preprocess(other, "folder", fer2013_small, config, scheduler=SYNCHRONOUS)
    text = diff_stores(fer_store, other)
    assert "*  config_sha256" in text and "   manifest_sha256" in text  # marked, unmarked
    assert "* align.size: 48 != 40" in text


def test_a_store_opens_in_xarray_with_named_dimensions(fer_store):
    dataset = xr.open_zarr(fer_store, consolidated=True)
    assert dataset["image"].dims == ("sample", "channel", "y", "x")
    assert dataset["heatmap_regions"].dims == ("sample", "heatmap_regions_channel", "gy", "gx")
    assert dataset.sizes["sample"] == 84
    np.testing.assert_array_equal(dataset["status"].values, open_store(fer_store)["status"][:])
    assert dataset.attrs["fer_store"]["dataset"] == "folder"
    checked = xr.open_zarr(open_store(fer_store).store, consolidated=True)  # docs/sharing.md: after the checks
    np.testing.assert_array_equal(checked["image"].values, dataset["image"].values)


def test_verify_tells_an_unfinished_build_from_damage(fer_store, tmp_path, fer2013_small):
    from click.testing import CliRunner

    from cli.store import main as store_cli
    from pipeline.compute.model_files import ModelFiles
    from pipeline.datasets import get_dataset
    from pipeline.store import provenance_of
    from pipeline.store.writer import prepare_store

    store = tmp_path / "unfinished.zarr"  # a build stopped after making its template
    config = provenance_of(open_store(fer_store)).preprocess_config
    prepare_store(store, get_dataset("folder").scan(fer2013_small), config, ModelFiles.locate().sha256())
    faults = verify_store(str(store))
    assert [fault.unfinished for fault in faults] == [True], faults
    assert "incomplete: 84 of 84 samples pending" in str(faults[0]) and "run the same fer-preprocess" in str(faults[0])
    result = CliRunner().invoke(store_cli, ["verify", str(store)])
    assert result.exit_code == 1 and "INCOMPLETE build: incomplete" in result.output and "FAULT" not in result.output
    assert "no damage found, but the build did not finish" in result.output
    damaged = tmp_path / "damaged.zarr"
    shutil.copytree(fer_store, damaged)
    next(p for p in sorted((damaged / "mask_soft" / "c").rglob("*")) if p.is_file()).unlink()
    assert not any(fault.unfinished for fault in verify_store(str(damaged)))
