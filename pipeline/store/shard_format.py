"""The shard layout this project writes, as a pure format: no files, no threads, no network.

A tensor array is sharded along its samples: one file per shard, holding inner chunks of a few
whole samples, each ``bytes`` -> ``zstd`` or ``blosc`` -> ``crc32c``, then an index at the end
(``(offset, length)`` ``uint64`` pairs, ``bytes`` -> ``crc32c``); a small column is one such chunk
per shard, unsharded. :class:`ShardLayout` says how an array is laid out (from its zarr
metadata) and decodes a shard file's bytes, checking every checksum and every frame's recorded
size before decompressing it; damage is a :class:`ChunkDamagedError` that says where
(:class:`ChunkLocation`) and what. Reading the files is :mod:`pipeline.store.shard_reader`'s job,
writing them :mod:`pipeline.store.shard_writer`'s.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numcodecs.blosc
import numpy as np
import zarr
import zstandard
from zarr.abc.codec import Codec
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec, ShardingCodecIndexLocation, ZstdCodec
from zarr.core.metadata import ArrayV3Metadata

from pipeline.errors import StoreError
from pipeline.store.bounded_codecs import BLOSC_HEADER_BYTES, blosc_size, check_recorded_size, frame_content_size

NO_CHUNK = 2**64 - 1  # a shard index entry of an inner chunk never written (all fill value)


def samples_per_shard(array: zarr.Array[Any]) -> int:
    """Samples in one shard file of ``array`` (one chunk, where it is not sharded)."""
    return (array.shards or array.chunks)[0]


def chunk_codecs(array: zarr.Array[Any]) -> Sequence[Codec]:
    """The codecs of each chunk of ``array`` (of each inner chunk, where it is sharded); empty for
    Zarr v2 metadata."""
    if not isinstance(array.metadata, ArrayV3Metadata):
        return ()
    codecs = array.metadata.codecs
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        return codecs[0].codecs
    return codecs


@dataclass(frozen=True)
class ChunkLocation:
    """Where in a store some bytes lie: a shard file ``key`` of ``array``, the samples ``first``
    to ``last`` it holds (or the one being read), and the ``part`` of the file (``inner chunk 3``,
    ``shard index``; empty for the whole file)."""

    array: str
    key: str
    first: int
    last: int
    part: str = ""

    def within(self, part: str) -> ChunkLocation:
        return ChunkLocation(self.array, self.key, self.first, self.last, part)

    def __str__(self) -> str:
        samples = f"sample {self.first}" if self.first == self.last else f"samples {self.first}-{self.last}"
        return f"{self.key} ({samples})" + (f", {self.part}" if self.part else "")

    def damaged(self, problem: str) -> ChunkDamagedError:
        return ChunkDamagedError(self, problem)


class ChunkDamagedError(StoreError):
    """Bytes of a store that are not what was written: ``location`` (a :class:`ChunkLocation`)
    says where, ``problem`` what is wrong."""

    def __init__(self, location: ChunkLocation, problem: str):
        self.location, self.problem = location, problem
        super().__init__(f"{location}: {problem}")

    def __reduce__(self) -> tuple[type[ChunkDamagedError], tuple[ChunkLocation, str]]:
        return type(self), (self.location, self.problem)


@dataclass(frozen=True)
class ShardLayout:
    """How one array's shards are laid out on disk.

    path: the array's path in the store. shard_len: samples per shard (the chunk grid's first
    extent). inner_len: samples per inner chunk (``shard_len`` when not sharded).
    """

    path: str
    n: int
    sample_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fill_value: object
    shard_len: int
    inner_len: int
    sharded: bool
    codec: str | None  # the compressor between bytes and crc32c: "zstd", "blosc" or None

    @classmethod
    def of(cls, array: zarr.Array[Any]) -> ShardLayout | None:
        """The layout of ``array``, or None when it is not one this module decodes."""
        if not isinstance(array.metadata, ArrayV3Metadata):
            return None
        codecs: Sequence[Codec] = array.metadata.codecs
        sharding = codecs[0] if len(codecs) == 1 else None
        sharded = isinstance(sharding, ShardingCodec)
        if isinstance(sharding, ShardingCodec):
            if sharding.index_location != ShardingCodecIndexLocation.end or not _is_bytes_crc(sharding.index_codecs):
                return None
            codecs, inner_len = sharding.codecs, sharding.chunk_shape[0]
            if tuple(sharding.chunk_shape[1:]) != tuple(array.shape[1:]):
                return None
        else:
            inner_len = array.chunks[0]
        dtype = array.dtype
        codec = _compressor(codecs)
        if dtype.kind not in "uif" or codec == "other" or tuple(array.chunks[1:]) != tuple(array.shape[1:]):
            return None
        shard_len = samples_per_shard(array)
        return cls(
            array.path,
            array.shape[0],
            tuple(array.shape[1:]),
            np.dtype(dtype).newbyteorder("<"),
            array.metadata.fill_value,
            shard_len,
            inner_len,
            sharded,
            codec,
        )

    @property
    def max_file_bytes(self) -> int:
        """The most bytes one shard file of this layout can hold: every inner chunk at its
        compressor's worst case (zstd's and blosc's bounds are the raw size plus under 1/128 and a
        header) with its checksum, and the index. A larger file is not a shard of this array."""
        raw = self.inner_len * int(np.prod(self.sample_shape, dtype=np.int64)) * self.dtype.itemsize
        chunk = raw + (raw // 128 + 1024 if self.codec else 0) + 4
        inner_chunks = -(-self.shard_len // self.inner_len) if self.sharded else 1
        return inner_chunks * chunk + (inner_chunks * 16 + 4 if self.sharded else 0)

    def key(self, shard: int) -> str:
        """The store key of shard ``shard``'s file (no leading ``/`` for an array at the store's root)."""
        return "/".join([self.path] * bool(self.path) + ["c", str(shard)] + ["0"] * len(self.sample_shape))

    def decode_into(self, shard: int, data: bytes | np.ndarray | None, out: np.ndarray) -> None:
        """Decode shard ``shard`` from the bytes of its file (None: never written, all fill value)
        into ``out``, ``(shard_len, *sample_shape)`` of :attr:`dtype` (in the last shard, the rows
        past the array's end hold what the padded inner chunks hold).

        Raises:
            ChunkDamagedError: a checksum that does not match, an index entry outside the file, or
                a zstd or blosc frame that does not hold exactly its chunk.
        """
        if data is None:
            out[...] = self.fill_value
            return
        start = shard * self.shard_len
        where = ChunkLocation(self.path, self.key(shard), start, min(start + self.shard_len, self.n) - 1)
        view = np.frombuffer(data, np.uint8)
        if not self.sharded:
            self.decode_inner(view, out, where)
            return
        data_end = len(view) - self.index_bytes
        if data_end < 0:
            raise where.damaged(f"the shard file is {len(view)} bytes, too short to hold its index")
        entries = self.index_entries(view[data_end:], where)
        for i, (offset, nbytes) in enumerate(entries.tolist()):
            chunk = None if offset == NO_CHUNK else view[offset : offset + nbytes]
            if chunk is not None and (offset + nbytes > data_end or nbytes < 4):
                raise where.damaged(
                    f"its index places inner chunk {i} at bytes {offset}-{offset + nbytes}, "
                    f"outside the file's {len(view)} bytes"
                )
            self.decode_inner(
                chunk, out[i * self.inner_len : (i + 1) * self.inner_len], where.within(f"inner chunk {i}")
            )

    @property
    def inner_count(self) -> int:
        """Inner chunks per shard."""
        return self.shard_len // self.inner_len

    @property
    def index_bytes(self) -> int:
        """Bytes of the index at the end of a shard file: (offset, length) ``uint64`` pairs, then a crc32c."""
        return 16 * self.inner_count + 4

    def index_entries(self, index: np.ndarray, where: ChunkLocation) -> np.ndarray:
        """``(inner_count, 2) uint64`` (offset, length) of each inner chunk, from the index bytes
        at the end of a shard file (its crc32c checked)."""
        return _checked(index, where.within("shard index")).view("<u8").reshape(self.inner_count, 2)

    def decode_inner(self, chunk: np.ndarray | None, out: np.ndarray, where: ChunkLocation) -> None:
        """Decode one inner chunk's bytes (None: never written) into ``out``, ``(inner_len, ...)``."""
        if chunk is None:
            out[...] = self.fill_value
            return
        data, raw = _checked(chunk, where), out.reshape(-1).view(np.uint8)
        if self.codec == "zstd":
            _zstd_into(data, raw, where)
        elif self.codec == "blosc":
            _blosc_into(data, raw, where)
        elif len(data) != raw.size:
            raise where.damaged(f"an uncompressed chunk of {len(data):,} bytes where the chunk holds {raw.size:,}")
        else:
            raw[:] = data


def _little_bytes(codec: Codec) -> bool:
    return isinstance(codec, BytesCodec) and (codec.endian is None or codec.endian.value == "little")


def _is_bytes_crc(codecs: Sequence[Codec]) -> bool:
    return len(codecs) == 2 and _little_bytes(codecs[0]) and isinstance(codecs[1], Crc32cCodec)


def _compressor(codecs: Sequence[Codec]) -> str | None:
    """``"zstd"`` or ``"blosc"`` for ``bytes`` -> that -> ``crc32c``; None for ``bytes`` ->
    ``crc32c``; ``"other"`` for any other chain."""
    if _is_bytes_crc(codecs):
        return None
    if len(codecs) == 3 and _little_bytes(codecs[0]) and isinstance(codecs[2], Crc32cCodec):
        if isinstance(codecs[1], ZstdCodec):
            return "zstd"
        if isinstance(codecs[1], BloscCodec):
            return "blosc"
    return "other"


def _checked(data: np.ndarray, where: ChunkLocation) -> np.ndarray:
    """``data`` without its trailing crc32c, which must match."""
    if len(data) < 4 or google_crc32c.value(data[:-4]) != int.from_bytes(data[-4:].tobytes(), "little"):
        raise where.damaged("the crc32c checksum does not match (the bytes are damaged)")
    return data[:-4]


def _zstd_into(frame: np.ndarray, out: np.ndarray, where: ChunkLocation) -> None:
    try:
        size = frame_content_size(frame[:18].tobytes())
        check_recorded_size(size, out.size, "zstd")
    except StoreError as error:
        raise where.damaged(str(error)) from None
    try:
        data = _decompressor().decompress(frame.data)
    except zstandard.ZstdError as error:
        raise where.damaged(f"the zstd frame is damaged ({error})") from None
    if len(data) != size:
        raise where.damaged(f"a zstd frame decompressed to {len(data):,} bytes where its header says {size:,}")
    out[:] = np.frombuffer(data, np.uint8)


def _blosc_into(frame: np.ndarray, out: np.ndarray, where: ChunkLocation) -> None:
    try:
        check_recorded_size(blosc_size(frame[:BLOSC_HEADER_BYTES].tobytes(), len(frame)), out.size, "blosc")
    except StoreError as error:
        raise where.damaged(str(error)) from None
    try:
        numcodecs.blosc.decompress(frame, out)
    except RuntimeError as error:
        raise where.damaged(f"the blosc frame is damaged ({error})") from None


# One zstd decompression context per thread (a context serves one thread at a time): numcodecs'
# decompress spends about 10 us of set-up on every call, a third of the time of a 48x48 chunk of
# 16 samples; a kept context about 0.2 us. The GIL is released while it runs.
_contexts = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_contexts, "decompressor", None)
    if decompressor is None:
        decompressor = _contexts.decompressor = zstandard.ZstdDecompressor()
    return decompressor
