"""Writing a whole shard of an array in one piece, the bytes zarr-python writes.

A shard task writes every sample of its shard at once. zarr-python spends about 0.25 ms of
Python per inner chunk it encodes; this module encodes the layout :mod:`pipeline.store.shard_reader`
reads -- inner chunks of ``bytes`` -> ``zstd`` or ``blosc`` (the array's own settings) ->
``crc32c``, then the ``bytes`` -> ``crc32c`` index of (offset, length) pairs at the end --
straight into one file:

- an inner chunk whose values all equal the fill value is not written (its index entry is
  ``2**64 - 1`` twice), as zarr-python does by default, and a shard of nothing but fill value is
  no file at all;
- a last, partial shard is padded with the fill value, like zarr-python's;
- a numeric column (one chunk per shard, not sharded) is its one chunk, with no index;
- the file is written beside its place and renamed into it, so a killed writer never leaves a
  torn shard (zarr-python writes in place).

Arrays with another layout (strings), and regions that are not one whole shard, are written by
zarr-python.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google_crc32c
import numcodecs
import numcodecs.zstd
import numpy as np
import zarr
from zarr.abc.codec import Codec
from zarr.codecs import BloscCodec, ZstdCodec

from pipeline.store.shard_format import NO_CHUNK, ShardLayout, chunk_codecs


def write_whole_shard(root: str | Path, array: zarr.Array[Any], start: int, values: np.ndarray) -> bool:
    """Write ``values`` (``(m, *sample_shape)``, every sample of the shard starting at ``start``)
    into ``array`` of the local store at ``root``.

    Returns:
        True when written; False when this module does not write that array (not sharded in this
        project's layout, or strings) or that region (not one whole shard), for zarr-python.
    """
    layout = ShardLayout.of(array)
    if layout is None or start % layout.shard_len:
        return False
    rows = min(layout.shard_len, layout.n - start)
    if values.shape != (rows, *layout.sample_shape):
        return False
    encode = _encoder(chunk_codecs(array)[1])
    if encode is None:
        return False
    padded = np.full((layout.shard_len, *layout.sample_shape), layout.fill_value, layout.dtype)
    padded[:rows] = values
    chunks, index = [], np.full((layout.inner_count, 2), NO_CHUNK, dtype="<u8")
    offset = 0
    fill = np.asarray(layout.fill_value, layout.dtype)
    for i in range(layout.inner_count):
        chunk = padded[i * layout.inner_len : (i + 1) * layout.inner_len]
        if np.array_equal(chunk, np.broadcast_to(fill, chunk.shape), equal_nan=chunk.dtype.kind == "f"):
            continue
        encoded = _with_crc32c(encode(np.ascontiguousarray(chunk)))
        index[i] = (offset, len(encoded))
        chunks.append(encoded)
        offset += len(encoded)
    path = Path(root, layout.key(start // layout.shard_len))
    if not layout.sharded:  # a column of one chunk per shard: the chunk alone, no index
        _replace(path, chunks)
        return True
    if not chunks:
        path.unlink(missing_ok=True)
        return True
    _replace(path, [*chunks, _with_crc32c(index.tobytes())])
    return True


def _encoder(codec: Codec) -> Callable[[np.ndarray], bytes] | None:
    """What compresses a chunk as zarr-python's ``codec`` does (the same bytes), or None for a
    codec this module does not write."""
    if isinstance(codec, ZstdCodec):
        if codec.checksum:  # a zstd frame checksum: not what this project writes
            return None
        level = codec.level
        return lambda chunk: bytes(numcodecs.zstd.compress(chunk, level))
    if isinstance(codec, BloscCodec):
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[codec.shuffle.value]
        blosc = numcodecs.Blosc(codec.cname.value, codec.clevel, shuffle, codec.blocksize, codec.typesize)
        return lambda chunk: bytes(blosc.encode(chunk))
    return None


def _replace(path: Path, pieces: list[bytes]) -> None:
    """Make ``path`` hold ``pieces`` (none: no file), through a file renamed into place."""
    if not pieces:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as file:
        for piece in pieces:
            file.write(piece)
    os.replace(partial, path)


def _with_crc32c(data: bytes) -> bytes:
    checksum: int = google_crc32c.value(data)
    return data + checksum.to_bytes(4, "little")
