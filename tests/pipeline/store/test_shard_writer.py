"""The whole-shard writer writes the bytes zarr-python writes, for tensors and numeric columns."""

from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.config import TENSOR_CODECS
from pipeline.store.schema import ArraySpec
from pipeline.store.shard_writer import write_whole_shard
from pipeline.store.writer import create_array

SPECS = [
    ArraySpec("image", ("sample", "channel", "y", "x"), "uint8", (1, 24, 24), 0, per_sample_chunks=True),
    ArraySpec("landmarks", ("sample", "landmark", "xy"), "float32", (68, 2), 0.0, per_sample_chunks=True),
    ArraySpec("box_src", ("sample", "edge"), "float32", (4,), 0.0, per_sample_chunks=False),
    ArraySpec("faces_detected", ("sample",), "uint8", (), 0, per_sample_chunks=False),
]


def values_of(spec: ArraySpec, rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = (rng.random((rows, *spec.sample_shape)) * 200).astype(spec.dtype)
    values[rows // 2 :] = spec.fill_value  # some inner chunks of nothing but fill value
    return values


@pytest.mark.parametrize("codec", TENSOR_CODECS)
@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_written_shards_are_the_files_zarr_writes(tmp_path: Path, spec: ArraySpec, codec: str):
    n, shard_size = 100, 64  # a whole shard and a last, partial one
    groups = {how: zarr.open_group(str(tmp_path / how), mode="w", zarr_format=3) for how in ("zarr", "fast")}
    arrays = {how: create_array(group, spec, n, shard_size, codec) for how, group in groups.items()}
    for start, seed in ((0, 1), (64, 2)):
        values = values_of(spec, min(shard_size, n - start), seed)
        arrays["zarr"][start : start + len(values)] = values
        assert write_whole_shard(tmp_path / "fast", arrays["fast"], start, values)
    files = {
        how: sorted(
            p.relative_to(tmp_path / how)
            for p in (tmp_path / how).rglob("*")
            if p.is_file() and "c" in p.relative_to(tmp_path / how).parts
        )
        for how in groups
    }
    assert files["zarr"] == files["fast"] and len(files["fast"]) == 2
    for name in files["fast"]:
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "zarr" / name).read_bytes(), name
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "fast" / spec.name))[:], arrays["zarr"][:])


def test_a_shard_of_nothing_but_fill_value_is_no_file_and_other_regions_are_left_to_zarr(tmp_path: Path):
    group = zarr.open_group(str(tmp_path), mode="w", zarr_format=3)
    array = create_array(group, SPECS[0], 100, 64)
    assert write_whole_shard(tmp_path, array, 0, values_of(SPECS[0], 64, 3))
    assert write_whole_shard(tmp_path, array, 0, np.zeros((64, 1, 24, 24), np.uint8))
    assert not [p for p in (tmp_path / "image" / "c").rglob("*") if p.is_file()]
    assert not write_whole_shard(tmp_path, array, 10, np.zeros((54, 1, 24, 24), np.uint8))  # not a whole shard
    strings = create_array(group, ArraySpec("message", ("sample",), str, (), "", per_sample_chunks=False), 100, 64)
    assert not write_whole_shard(tmp_path, strings, 0, np.array([""] * 64, dtype=object))  # zarr's to write
