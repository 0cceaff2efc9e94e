"""zarr's zstd and blosc codecs, refusing a chunk that would decompress to more than the chunk
can hold.

A zstd frame of 32 KB can decompress to a gigabyte of zeros; zarr's own codecs allocate whatever
the frame's header asks for. :class:`BoundedZstdCodec` reads the decompressed size from the frame
header first and refuses the chunk (raising :class:`~pipeline.errors.StoreError`) by
:func:`check_recorded_size`, the policy the project's shard reader applies too: the frame must
record its size (a streamed frame, which zarr never writes, does not), and the size must be the
chunk's raw size (at most that, for variable-length strings). :class:`BoundedBloscCodec` does the
same with a blosc frame's header, and also refuses a frame whose header gives another compressed
length than the chunk's (blosc reads as far as the header says). They apply to FER stores only: :func:`bounded_codecs` makes
them zarr's ``zstd`` and ``blosc`` while :func:`~pipeline.store.location.open_group_readonly`
opens a store (whose arrays keep the codecs they were opened with); elsewhere in the process
zarr's own codecs stay in place, so other stores (a tensorstore-written one, whose zstd frames
do not record their size) read as zarr reads them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import zarr
from zarr.codecs import BloscCodec, ZstdCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.buffer import Buffer

from pipeline.errors import StoreError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BLOSC_HEADER_BYTES = 16
# A variable-length string item may take this many bytes (paths and messages take a few hundred).
MAX_STRING_ITEM_BYTES = 64 * 1024


def frame_content_size(frame: bytes) -> int | None:
    """The decompressed size a zstd frame's header records (RFC 8878, 3.1.1.1), or None when the
    header records none.

    Raises:
        StoreError: the bytes do not start with a zstd frame header.
    """
    if len(frame) < 6 or frame[:4] != ZSTD_MAGIC:
        raise StoreError("a chunk is not zstd-compressed data (no zstd frame header)")
    descriptor = frame[4]
    size_flag, single_segment, dictionary_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    offset = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dictionary_flag]
    width = (1 if single_segment else 0, 2, 4, 8)[size_flag]
    if width == 0:
        return None
    if len(frame) < offset + width:
        raise StoreError("a chunk's zstd frame header is cut off")
    size = int.from_bytes(frame[offset : offset + width], "little")
    return size + 256 if width == 2 else size


def blosc_size(header: bytes, frame_bytes: int) -> int:
    """The decompressed bytes that a blosc (version 1) frame of ``frame_bytes`` bytes records in
    its 16-byte ``header``.

    Raises:
        StoreError: too short to hold a blosc header, or a header that gives the frame another
            length (blosc reads as far as its header says).
    """
    if len(header) < BLOSC_HEADER_BYTES:
        raise StoreError("a chunk is not blosc-compressed data (shorter than a blosc header)")
    length = int.from_bytes(header[12:16], "little")
    if length != frame_bytes:
        raise StoreError(
            f"a blosc header says the frame takes {length:,} bytes where it has {frame_bytes:,} "
            "(damaged or forged); refusing it"
        )
    return int.from_bytes(header[4:8], "little")


def chunk_raw_bytes(chunk_spec: ArraySpec) -> tuple[int, bool]:
    """The bytes a chunk of ``chunk_spec`` takes before compression, and whether exactly that
    many (fixed-size values) or at most that many (variable-length strings)."""
    items = math.prod(chunk_spec.shape)
    native = chunk_spec.dtype.to_native_dtype()
    if native.kind in "OTU":  # variable-length strings: a 4-byte count, then length and text per item
        return 4 + items * (4 + MAX_STRING_ITEM_BYTES), False
    return items * native.itemsize, True


def check_recorded_size(size: int | None, chunk_bytes: int, codec: str, exact: bool = True) -> None:
    """The one bomb policy, of the shard reader and of zarr's codecs alike: a ``codec`` frame
    must record the size it decompresses to (``size``; None when it records none), and that size
    must be the ``chunk_bytes`` its chunk holds (no more than that, when not ``exact``).

    Raises:
        StoreError: a frame that records no size, or another than its chunk's.
    """
    if size is None:
        raise StoreError(f"a {codec} frame does not record its size, which zarr always writes; refusing it")
    if size > chunk_bytes or (exact and size != chunk_bytes):
        bound = "" if exact else "at most "
        raise StoreError(
            f"a {codec} frame would decompress to {size:,} bytes where the chunk holds {bound}{chunk_bytes:,}; "
            "refusing it (damaged, or a decompression bomb)"
        )


class BoundedZstdCodec(ZstdCodec):
    """``zstd`` that checks a frame's recorded size against the chunk before decompressing it."""

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        size = frame_content_size(chunk_bytes[:18].to_bytes())  # the longest frame header
        raw_bytes, exact = chunk_raw_bytes(chunk_spec)
        check_recorded_size(size, raw_bytes, "zstd", exact)
        return super()._decode_sync(chunk_bytes, chunk_spec)


class BoundedBloscCodec(BloscCodec):
    """``blosc`` that checks a frame's recorded sizes against the chunk before decompressing it."""

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> Buffer:
        size = blosc_size(chunk_bytes[:BLOSC_HEADER_BYTES].to_bytes(), len(chunk_bytes))
        raw_bytes, exact = chunk_raw_bytes(chunk_spec)
        check_recorded_size(size, raw_bytes, "blosc", exact)
        return super()._decode_sync(chunk_bytes, chunk_spec)


zarr.registry.register_codec("zstd", BoundedZstdCodec)  # offered; zarr's config still picks its own
zarr.registry.register_codec("blosc", BoundedBloscCodec)


@contextlib.contextmanager
def bounded_codecs() -> Iterator[None]:
    """While it is active, zarr parses ``zstd`` and ``blosc`` in array metadata as the bounded
    codecs; arrays opened meanwhile keep them."""
    with zarr.config.set(
        {"codecs.zstd": f"{__name__}.BoundedZstdCodec", "codecs.blosc": f"{__name__}.BoundedBloscCodec"}
    ):
        yield
