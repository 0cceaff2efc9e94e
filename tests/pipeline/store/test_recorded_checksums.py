"""Reads checked against recorded checksums: the checksum of samples taken together equals
zlib's over their bytes, and a reader's check finds each sample that differs, whatever shard
boundaries the read crosses (synthetic store: no data or dlib model needed)."""

import shutil
import zlib

import numpy as np
import pytest

from pipeline.store import open_store, read_array
from pipeline.store.checksums import CRC_START, concatenated_checksum, sample_checksums
from pipeline.store.recorded_checksums import RecordedChecksums
from pipeline.store.shard_format import ChunkDamagedError
from pipeline.store.shard_reader import read_shards
from tests.support.damaged_stores import chunk_file


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 64, 255, 256, 1000])
@pytest.mark.parametrize("dtype", ["uint8", "<f4", "<i2"])
def test_the_checksum_of_samples_together_is_zlibs_over_their_bytes(n, dtype):
    values = np.random.default_rng(n).integers(0, 200, (n, 3, 5)).astype(dtype)
    combined = concatenated_checksum(sample_checksums(values), values[0].nbytes if n else 15)
    assert int(combined) == zlib.crc32(values.tobytes(), CRC_START)


def test_a_batch_of_shards_gives_each_its_own_checksum():
    values = np.random.default_rng(0).integers(0, 255, (6, 32, 11), dtype=np.uint8)
    per_sample = np.stack([sample_checksums(shard) for shard in values])
    expected = [zlib.crc32(shard.tobytes(), CRC_START) for shard in values]
    assert concatenated_checksum(per_sample, 11).tolist() == expected


def test_reads_of_an_intact_store_check_and_a_changed_sample_is_named(synthetic_store):
    group = open_store(synthetic_store)
    checksums = RecordedChecksums.of(group, ("image", "label", "landmarks"))
    assert set(checksums.recorded) == {"image", "label", "landmarks"}
    image, label = read_array(group, "image"), read_array(group, "label")
    n, shard_len = len(image), checksums.shard_len
    checksums.check("image", 0, image)  # every shard whole
    checksums.check("image", 5, image[5:40])  # parts of shards at both ends
    checksums.check_samples("image", np.array([40, 3]), image[[40, 3]])
    checksums.check("label", 0, label)
    assert read_shards({"image": group["image"]}, [0, 2], checksums=checksums)["image"][1].shape[0] == shard_len
    changed = image.copy()
    changed[shard_len + 2, 0, 0, 0] ^= 1
    with pytest.raises(
        ChunkDamagedError, match=rf"samples {shard_len}-{2 * shard_len - 1}\).*first: sample {shard_len + 2}"
    ):
        checksums.check("image", 0, changed)
    with pytest.raises(ChunkDamagedError, match="1 of 2 samples"):
        checksums.check_samples("image", np.array([1, shard_len + 2]), changed[[1, shard_len + 2]])
    assert n > 2 * shard_len


def test_a_shard_read_of_a_deleted_chunk_file_is_refused(synthetic_store, tmp_path):
    store = tmp_path / "damaged.zarr"
    shutil.copytree(synthetic_store, store)
    chunk_file(store, "image", 1).unlink()
    group = open_store(store)
    checksums = RecordedChecksums.of(group, ("image",))
    assert read_shards({"image": group["image"]}, [0, 1])["image"][1].max() == 0  # unchecked: zeros, no word
    with pytest.raises(ChunkDamagedError, match=r"image/c/1/0/0/0 \(samples 16-31\): 16 of 16 samples read differ"):
        read_shards({"image": group["image"]}, [0, 1], checksums=checksums)
