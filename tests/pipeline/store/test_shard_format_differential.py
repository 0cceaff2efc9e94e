"""The project's shard reader and writer against zarr-python, the format's owner, over random
layouts: shapes, dtypes, shard and inner-chunk lengths, codecs, fill values and chunks left
unwritten. No real data is needed."""

import tempfile
from pathlib import Path

import numpy as np
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.store.location import ContainedLocalStore
from pipeline.store.shard_reader import SampleReader, read_shards
from pipeline.store.shard_writer import write_whole_shard
from pipeline.store.writer import chunk_compressors

DTYPES = ("uint8", "int16", "uint16", "int32", "float32", "float64")


@st.composite
def layouts(draw):
    """``(shape, dtype, shard_len, inner_len, sharded, codec, fill_value, values)``."""
    dtype = draw(st.sampled_from(DTYPES))
    sample_shape = tuple(draw(st.lists(st.integers(1, 5), max_size=2)))
    shard_len = draw(st.integers(1, 12))
    inner_len = draw(st.sampled_from([d for d in range(1, shard_len + 1) if shard_len % d == 0]))
    n = draw(st.integers(1, 3 * shard_len + 2))
    sharded = draw(st.booleans())
    codec = draw(st.sampled_from(("zstd", "lz4", "none")))
    fill_value = draw(st.sampled_from((0, 7)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.integers(0, 100, (n, *sample_shape)) if dtype != "float64" else rng.normal(size=(n, *sample_shape))
    values = values.astype(dtype)
    blank = rng.random(n) < draw(st.sampled_from((0.0, 0.5)))  # samples left at the fill value
    values[blank] = fill_value
    return (n, *sample_shape), dtype, shard_len, inner_len, sharded, codec, fill_value, values


def create(root: Path, name: str, shape, dtype, shard_len, inner_len, sharded, codec, fill_value) -> zarr.Array:
    compressors = chunk_compressors(codec, np.dtype(dtype))[-1:] if codec == "none" else chunk_compressors(codec, dtype)
    group = zarr.open_group(str(root), mode="a")
    sample = tuple(shape[1:])
    chunks, shards = ((inner_len, *sample), (shard_len, *sample)) if sharded else ((shard_len, *sample), None)
    return group.create_array(
        name, shape=shape, dtype=dtype, chunks=chunks, shards=shards, compressors=compressors, fill_value=fill_value
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts())
def test_the_reader_and_writer_agree_with_zarr(layout):
    shape, dtype, shard_len, inner_len, sharded, codec, fill_value, values = layout
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "s.zarr"
        by_zarr = create(root, "by_zarr", shape, dtype, shard_len, inner_len, sharded, codec, fill_value)
        by_zarr[:] = values
        ours = create(root, "ours", shape, dtype, shard_len, inner_len, sharded, codec, fill_value)
        for start in range(0, shape[0], shard_len):
            if not write_whole_shard(root, ours, start, values[start : start + shard_len]):
                ours[start : start + shard_len] = values[start : start + shard_len]  # zarr writes what we do not

        for name in ("by_zarr", "ours"):  # the writer's files: zarr-python reads them back
            np.testing.assert_array_equal(zarr.open_array(str(root / name), mode="r")[:], values, err_msg=name)
        for file in sorted((root / "by_zarr").rglob("c/**/*")):  # and they are zarr's own bytes
            if file.is_file():
                twin = root / "ours" / file.relative_to(root / "by_zarr")
                assert twin.read_bytes() == file.read_bytes(), file.relative_to(root)

        group = zarr.open_group(store=ContainedLocalStore(root), mode="r")
        shards = list(range(-(-shape[0] // shard_len)))
        read = read_shards({"by_zarr": group["by_zarr"]}, shards, threads=2)["by_zarr"]
        np.testing.assert_array_equal(np.concatenate(read), values)
        sample = SampleReader({"by_zarr": group["by_zarr"]})
        for index in {0, shape[0] // 2, shape[0] - 1}:
            np.testing.assert_array_equal(sample(index)["by_zarr"], values[index])
