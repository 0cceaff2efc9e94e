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


def concatenated_checksum(checksums: np.ndarray, sample_bytes: int) -> np.ndarray:
    """The checksum of consecutive samples' bytes taken together, from their own checksums.

    What ``zlib.crc32(b"".join(samples), CRC_START)`` returns, without the samples: a reader
    that decoded a whole shard checks it with one CRC over its buffer (zlib runs at several GB/s
    without the GIL) against this, instead of one Python call per sample. CRC-32 is affine over
    GF(2): each sample's raw register ``checksum ^ CRC_START`` is carried past the bytes after
    it by a 32x32 bit matrix (zlib's ``crc32_combine``), and the carried registers XOR together.

    Args:
        checksums: ``(..., n) uint32``, each from :func:`sample_checksums` of ``n`` consecutive
            samples of ``sample_bytes`` bytes each (numeric samples: every one the same length).
        sample_bytes: bytes of one sample.

    Returns:
        ``(...) uint32``.
    """
    registers = np.asarray(checksums, np.uint32) ^ np.uint32(CRC_START)
    n = registers.shape[-1]
    width = 1 << max(0, n - 1).bit_length()
    # leading registers of 0 carry nothing, so padding in front to a power of two changes nothing
    padding = np.zeros((*registers.shape[:-1], width - n), np.uint32)
    registers = np.concatenate([padding, registers], axis=-1)
    carry = _carry_columns(sample_bytes)
    while registers.shape[-1] > 1:  # pairs of equal lengths: (left carried past right) ^ right
        registers = _carried(carry, registers[..., 0::2]) ^ registers[..., 1::2]
        carry = _carried(carry, carry)  # past twice as many bytes
    return registers[..., 0] ^ np.uint32(CRC_START)


def _carry_columns(length: int) -> np.ndarray:
    """``(32,) uint32``: column ``j`` is the raw CRC register ``1 << j`` after ``length`` zero bytes."""
    zeros = bytes(length)
    return np.array([zlib.crc32(zeros, (1 << j) ^ CRC_START) ^ CRC_START for j in range(32)], np.uint32)


def _carried(columns: np.ndarray, registers: np.ndarray) -> np.ndarray:
    """The bit matrix ``columns`` (``(32,) uint32``) times each of ``registers`` over GF(2)."""
    out = np.zeros_like(registers)
    for j in range(32):
        out ^= columns[j] * ((registers >> np.uint32(j)) & np.uint32(1))
    return out
