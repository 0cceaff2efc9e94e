"""Per-sample content checksums: what lets ``fer-store verify`` find a chunk file that was deleted,
replaced by another store's or moved to another shard's place.

Zarr's crc32c guards each chunk's bytes, but a missing chunk reads as its fill value and a chunk
file moved between shards is intact in itself. So every writer of a shard also records, per
sample and per array, the CRC-32 of the values it wrote (:func:`sample_checksums`); verify
recomputes them from what it reads. The checksums cover values, not file bytes: a store rewritten
with another chunk layout or compressor still verifies, and a chunk never written because it
holds nothing but the fill value checks as the fill value it reads as.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

# The CRC starts from this value rather than 0, so that no sample (not even an empty string, whose
# plain CRC-32 is 0) sums to the 0 that the ``checksum`` array holds where nothing was recorded.
CRC_START = 0xFFFFFFFF


def sample_checksums(values: np.ndarray) -> np.ndarray:
    """The CRC-32 of each sample's values (started from :data:`CRC_START`).

    Args:
        values: ``(n, ...)`` numeric values (their little-endian bytes are summed up), or ``(n,)``
            strings (their UTF-8 bytes).

    Returns:
        ``(n,) uint32``.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, np.uint32)
    if values.dtype.kind in "OTU":
        return np.fromiter((zlib.crc32(str(v).encode("utf-8"), CRC_START) for v in values), np.uint32, n)
    rows = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<")).reshape(n, -1).view(np.uint8)
    return np.fromiter((zlib.crc32(row.data, CRC_START) for row in rows), np.uint32, n)


def fill_checksum(sample_shape: tuple[int, ...], dtype: np.dtype[Any] | str | type, fill_value: object) -> int:
    """The CRC-32 of one sample holding nothing but ``fill_value`` (a chunk never written)."""
    if dtype is str:
        return int(sample_checksums(np.array([fill_value], dtype=object))[0])
    return int(sample_checksums(np.full((1, *sample_shape), fill_value, dtype=dtype))[0])
