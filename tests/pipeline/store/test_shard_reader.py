"""The fast shard reader gives exactly what zarr-python reads, from every kind of location, and
refuses damage with the chunk's name."""

import logging
import shutil
import warnings
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec

from pipeline.errors import StoreError
from pipeline.store import open_store
from pipeline.store.shard_format import ShardLayout
from pipeline.store.shard_reader import SampleReader, read_shards
from pipeline.tools.pack import pack_store
from pipeline.tools.verify import verify_store
from tests.support.damaged_stores import index_past_the_end
from tests.support.servers import put_in_bucket, rclone_s3, s3_server, store_server
from tests.support.stores import build_fer_store


def same_as_zarr(location) -> int:
    """Compare every array, every shard; returns how many arrays the fast path decoded."""
    group = open_store(location)
    arrays = {name: group[name] for name in group.array_keys()}
    length = (arrays["image"].shards or arrays["image"].chunks)[0]
    shards = list(range(-(-arrays["image"].shape[0] // length)))[::-1]  # the partial last shard first
    read = read_shards(arrays, shards)
    for name, array in arrays.items():
        for shard, values in zip(shards, read[name]):
            expected = array[shard * length : (shard + 1) * length]
            np.testing.assert_array_equal(values, expected, err_msg=f"{location} {name} shard {shard}")
            assert values.dtype == expected.dtype
    sample_reader = SampleReader(arrays)
    for index in (0, 15, 16, 33, arrays["image"].shape[0] - 1):  # inner chunk edges, the last sample
        for name, values in sample_reader(index).items():
            np.testing.assert_array_equal(values, arrays[name][index], err_msg=f"{location} {name} sample {index}")
    return sum(ShardLayout.of(array) is not None for array in arrays.values())


def test_every_array_and_sample_from_disk_zip_http_and_s3_equals_zarr_python(fer_store, tmp_path, monkeypatch):
    fast = same_as_zarr(fer_store)
    assert fast == len(list(open_store(fer_store).array_keys())) - 2  # all but the strings: source, message
    pack_store(fer_store, tmp_path / "fer.zarr.zip")
    assert same_as_zarr(tmp_path / "fer.zarr.zip") == fast
    with store_server(fer_store) as url:
        assert same_as_zarr(url) == fast
    (tmp_path / "buckets" / "lab").mkdir(parents=True)
    (tmp_path / "buckets" / "lab" / "fer.zarr").symlink_to(fer_store)
    with rclone_s3(tmp_path / "buckets", monkeypatch):
        assert same_as_zarr("s3://lab/fer.zarr") == fast


def test_a_shard_file_from_s3_takes_one_request(fer_store, monkeypatch, caplog):
    """One GET for each whole file, and no request before it (s3fs, the client before obstore, sent a HEAD)."""
    with s3_server(monkeypatch):
        put_in_bucket(fer_store, "s3://lab/fer.zarr")
        group = open_store("s3://lab/fer.zarr")
        arrays = {name: group[name] for name in ("image", "heatmap")}
        caplog.set_level(logging.INFO, logger="werkzeug")  # moto logs each request it answers
        read = read_shards(arrays, [0, 1])
    requests = [record.getMessage() for record in caplog.records if record.name == "werkzeug"]
    assert len(requests) == 4 and all('"GET /lab/fer.zarr/' in request for request in requests), requests
    np.testing.assert_array_equal(read["image"][1], open_store(fer_store)["image"][32:64])


def test_later_samples_of_a_shard_from_s3_take_one_request_per_array(fer_store, monkeypatch, caplog):
    """The first sample of a shard takes two rounds (each array's index, then its chunk); the
    reader keeps the indexes, so later ones take only the chunks."""
    with s3_server(monkeypatch):
        put_in_bucket(fer_store, "s3://lab/fer.zarr")
        group = open_store("s3://lab/fer.zarr")
        arrays = {name: group[name] for name in ("image", "heatmap")}
        read_sample = SampleReader(arrays)
        caplog.set_level(logging.INFO, logger="werkzeug")  # moto logs each request it answers
        first = read_sample(33)
        requests_first = sum(record.name == "werkzeug" for record in caplog.records)
        later = read_sample(50)
    requests_later = sum(record.name == "werkzeug" for record in caplog.records) - requests_first
    assert (requests_first, requests_later) == (4, 2)
    local = open_store(fer_store)
    np.testing.assert_array_equal(first["heatmap"], local["heatmap"][33])
    np.testing.assert_array_equal(later["image"], local["image"][50])


def test_an_array_opened_at_its_own_folder_reads_the_same(fer_store):
    """Its path in the store is empty: no key may start with '/' (which read as missing files)."""
    array = zarr.open_array(str(fer_store / "heatmap"), mode="r")
    np.testing.assert_array_equal(read_shards({"heatmap": array}, [0, 1])["heatmap"][1], array[32:64])


def test_missing_files_and_inner_chunks_read_as_the_fill_value(fer_store, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(fer_store, store)
    (store / "mask_soft" / "c" / "1" / "0" / "0" / "0").unlink()
    group = open_store(store)
    values = read_shards({"mask_soft": group["mask_soft"], "face_score": group["face_score"]}, [1])
    assert not values["mask_soft"][0].any() and values["mask_soft"][0].shape == (32, 1, 48, 48)
    same_as_zarr(store)  # zarr-python reads the missing file as the fill value too


@pytest.mark.parametrize("damage", ["truncate", "truncate below the index", "flip", "index past the end"])
def test_damage_is_named(fer_store, tmp_path, damage):
    store = tmp_path / "copy.zarr"
    shutil.copytree(fer_store, store)
    path = store / "image" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "truncate below the index":
        path.write_bytes(bytes(data[:10]))
    elif damage == "flip":
        data[len(data) // 4] ^= 1
        path.write_bytes(bytes(data))
    else:
        index_past_the_end(store)
    image = {"image": open_store(store)["image"]}
    with pytest.raises(StoreError, match=r"image/c/0/0/0/0 \(samples 0-31\).*(crc32c|outside the file|too short)"):
        read_shards(image, [0])
    with pytest.raises(StoreError, match=r"image/c/0/0/0/0 \(sample 3\).*(crc32c|past the end|too short)"):
        SampleReader(image)(3)


def test_uncompressed_inner_chunks_read_the_same(synthetic_store, tmp_path):
    """Tensors written without zstd (``bytes`` -> ``crc32c`` inner chunks) take the same fast path."""
    store = tmp_path / "uncompressed.zarr"
    shutil.copytree(synthetic_store, store)
    group = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    for name in ("image", "heatmap", "landmarks"):
        array = group[name]
        values, attrs = array[:], dict(array.attrs)
        del group[name]
        copy = group.create_array(
            name,
            shape=array.shape,
            dtype=array.dtype,
            chunks=array.chunks,
            shards=array.shards,
            compressors=[Crc32cCodec()],
            fill_value=array.metadata.fill_value,
        )
        copy.attrs.update(attrs)
        copy[:] = values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's note that consolidated metadata is not in the v3 spec
        zarr.consolidate_metadata(str(store))
    assert ShardLayout.of(open_store(store)["image"]).codec is None
    assert same_as_zarr(store) == same_as_zarr(synthetic_store)


@pytest.fixture(scope="module")
def lz4_store(tmp_path_factory, fer2013_small) -> Path:
    """The faces of ``fer_store``, built the same way with ``--codec lz4``."""
    return build_fer_store(tmp_path_factory.mktemp("lz4") / "fer.zarr", fer2013_small, codec="lz4")


def test_an_lz4_store_holds_the_values_of_the_zstd_store(lz4_store, fer_store):
    lz4, zstd = open_store(lz4_store), open_store(fer_store)
    assert {ShardLayout.of(lz4[name]).codec for name in ("image", "landmarks", "heatmap")} == {"blosc"}
    assert ShardLayout.of(lz4["label"]).codec == "zstd"  # columns stay zstd
    for name in zstd.array_keys():  # checksums too: they are of the values, not the bytes
        np.testing.assert_array_equal(lz4[name][:], zstd[name][:], err_msg=name)
    assert same_as_zarr(lz4_store) == same_as_zarr(fer_store)
    assert verify_store(str(lz4_store)) == []
    with store_server(lz4_store) as url:
        assert same_as_zarr(url) == same_as_zarr(fer_store)


@pytest.mark.parametrize("forgery", ["decompressed size", "frame length"])
def test_a_forged_blosc_header_is_refused_before_decompressing(lz4_store, tmp_path, forgery):
    """A blosc header is trusted for nothing: the sizes it records must be the chunk's."""
    store = tmp_path / "copy.zarr"
    shutil.copytree(lz4_store, store)
    path = store / "image" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(path.read_bytes())
    index_bytes = ShardLayout.of(open_store(store)["image"]).index_bytes
    offset, nbytes = np.frombuffer(bytes(data[-index_bytes:-4]), "<u8")[:2].tolist()  # inner chunk 0
    field = slice(offset + 4, offset + 8) if forgery == "decompressed size" else slice(offset + 12, offset + 16)
    data[field] = (int.from_bytes(data[field], "little") * 64).to_bytes(4, "little")
    crc = google_crc32c.value(bytes(data[offset : offset + nbytes - 4]))  # the chunk's checksum made valid again
    data[offset + nbytes - 4 : offset + nbytes] = crc.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    image = {"image": open_store(store)["image"]}
    expected = "would decompress to" if forgery == "decompressed size" else "says the frame takes"
    with pytest.raises(StoreError, match=rf"image/c/0/0/0/0 \(samples 0-31\), inner chunk 0: a blosc.*{expected}"):
        read_shards(image, [0])
    with pytest.raises(StoreError, match=f"a blosc.*{expected}"):
        image["image"][0]  # zarr-python's own path: the same policy and message


def test_shard_keys_are_zarrs_own_and_damage_is_reported_as_data(synthetic_store, tmp_path):
    """The reader's shard keys are those of zarr's chunk-key encoding; a damaged chunk raises an
    error that carries where and what (also across processes), which verify reports as it is."""
    import pickle
    import shutil

    from pipeline.store import open_store
    from pipeline.store.shard_format import ChunkDamagedError
    from pipeline.tools.verify import shard_key, verify_store

    group = open_store(synthetic_store)
    for name in group.array_keys():
        layout = ShardLayout.of(group[name])
        if layout is not None:
            assert [layout.key(shard) for shard in range(3)] == [shard_key(group[name], shard) for shard in range(3)]
    store = tmp_path / "damaged.zarr"
    shutil.copytree(synthetic_store, store)
    shard_file = store / shard_key(group["image"], 1)
    data = bytearray(shard_file.read_bytes())
    data[10] ^= 0xFF  # a byte of the first inner chunk
    shard_file.write_bytes(bytes(data))
    with pytest.raises(ChunkDamagedError) as raised:
        read_shards({"image": open_store(store)["image"]}, [1])
    error = raised.value
    assert (error.location.key, error.location.first, error.location.part) == ("image/c/1/0/0/0", 16, "inner chunk 0")
    assert "crc32c checksum does not match" in error.problem
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.location, copy.problem, str(copy)) == (error.location, error.problem, str(error))
    faults = verify_store(str(store))
    assert [(fault.where, fault.problem) for fault in faults] == [(str(error.location), error.problem)]
