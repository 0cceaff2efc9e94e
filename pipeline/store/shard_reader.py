"""Reading whole shards at the speed of decompression.

zarr-python owns the format: it writes the stores, and its metadata (checked on opening, see
:mod:`pipeline.store.location`) says how each array is laid out. For reading, though, it spends
about 0.5 ms of Python per inner chunk, several times the cost of decompressing it. This module
reads the files of the chunk layouts this project writes (:mod:`pipeline.store.shard_format`
decodes them) -- a shard of inner chunks, each ``bytes`` -> ``zstd`` or ``blosc`` -> ``crc32c``,
with a ``bytes`` -> ``crc32c`` index at the end; or an unsharded chunk with the same codecs --
and the same without compression, straight from the shard file:

- every file is read through the same zarr store object and so the same checks (a local store
  reads only regular files inside itself); a remote window's files (all fields) are fetched in
  one concurrent round, one request per file;
- every checksum is verified (index and chunks), and each zstd or blosc frame must record exactly
  the chunk's size (a blosc frame, its own length too) before it is decompressed into its place in
  the output (no bomb, no read past the frame);
- the files are read and decoded by a pool of threads (zstd and blosc release the GIL), into
  arrays the caller owns and may reuse, while the caller goes on (:func:`start_reading_shards`):
  a window decodes on every core of the process while the one before it is being used.

An array with any other layout (strings, another codec) is read through zarr-python.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import ByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.sync import sync

from pipeline.errors import StoreError
from pipeline.store.location import ContainedLocalStore
from pipeline.store.recorded_checksums import RecordedChecksums
from pipeline.store.shard_format import (
    NO_CHUNK,
    ChunkLocation,
    ShardLayout,
    samples_per_shard,
)

# Threads decoding shard files, per process: zstd runs without the GIL, so they use every core.
# A DataLoader worker process passes threads=1 (its siblings use the other cores).
DECODE_THREADS = min(8, os.cpu_count() or 1)
_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="shard-decode")
    return _pools[threads]


class PendingShards:
    """Shards being decoded by the pool into arrays the caller owns (see :func:`start_reading_shards`)."""

    def __init__(self, futures: list[Future[list[Future[None]] | None]]):
        self._futures = futures

    def done(self) -> bool:
        """Whether every read has finished (in place, or failed): nothing writes into ``out`` any more."""
        for future in self._futures:
            if not future.done():
                return False
            if future.exception() is None and not all(decode.done() for decode in future.result() or ()):
                return False
        return True

    def wait(self) -> None:
        """Return once every shard is in place; raise the first error of any (StoreError for damage)."""
        for future in self._futures:
            for decode in future.result() or ():  # a remote window's fetch gives its decode jobs
                decode.result()


def start_reading_shards(
    arrays: dict[str, zarr.Array[Any]],
    shards: list[int],
    out: dict[str, np.ndarray],
    threads: int = DECODE_THREADS,
    checksums: RecordedChecksums | None = None,
) -> PendingShards:
    """Start decoding ``shards`` of each array into ``out[name]``, ``(len(shards) * shard_len,
    *sample_shape)``: the i-th shard's samples at rows ``i * shard_len`` on (the rows of a last,
    shorter shard past the array's end hold padding). Returns at once; :meth:`PendingShards.wait`
    before reading ``out``.

    Arrays of one store, all with the same shard length. A local store's files are read and
    decoded by ``threads`` threads, one file per job; a remote store's files are fetched in one
    concurrent round, then decoded the same way. Arrays this module does not decode are read
    through zarr-python, in the same threads. ``checksums``: each shard decoded is checked
    against them, in the same job (None: not checked, for a reader that checks itself).
    """
    pool = _pool(threads)
    layouts = {name: ShardLayout.of(array) for name, array in arrays.items()}
    jobs: list[_DecodeJob] = []
    futures: list[Future[list[Future[None]] | None]] = []
    for name, array in arrays.items():
        length, layout = samples_per_shard(array), layouts[name]
        for i, shard in enumerate(shards):
            rows = _ShardRows(name, shard * length, out[name][i * length : (i + 1) * length], array.shape[0], checksums)
            if layout is not None:
                jobs.append((layout, shard, rows))
            else:
                futures.append(pool.submit(_read_with_zarr, array, rows))
    if jobs:
        store = next(arrays[name] for name in arrays if layouts[name] is not None).store_path.store
        if isinstance(store, ContainedLocalStore):
            futures += [pool.submit(_read_and_decode, store, *job) for job in jobs]
        else:
            futures.append(pool.submit(_fetch_and_decode, store, jobs, pool))
    return PendingShards(futures)


class _ShardRows:
    """Where one shard of array ``name`` is decoded (``into``, ``(shard_len, ...)``), and the
    check of what was decoded (its samples from ``start`` to the array's end ``n``) against
    ``checksums`` (None: not checked)."""

    def __init__(self, name: str, start: int, into: np.ndarray, n: int, checksums: RecordedChecksums | None):
        self.name, self.start, self.into, self.rows = name, start, into, min(len(into), n - start)
        self.checksums = checksums

    def decoded(self) -> None:
        """Check the shard's samples once they are in ``into``."""
        if self.checksums is not None:
            self.checksums.check(self.name, self.start, self.into[: self.rows])


_DecodeJob = tuple[ShardLayout, int, _ShardRows]  # a shard of a layout, and where its samples go


def _read_with_zarr(array: zarr.Array[Any], rows: _ShardRows) -> None:
    rows.into[: rows.rows] = array[rows.start : rows.start + rows.rows]
    rows.decoded()


def _read_and_decode(store: ContainedLocalStore, layout: ShardLayout, shard: int, rows: _ShardRows) -> None:
    _decode(layout, shard, store.read_range(layout.key(shard), 0, None), rows)


def _decode(layout: ShardLayout, shard: int, data: bytes | np.ndarray | None, rows: _ShardRows) -> None:
    layout.decode_into(shard, data, rows.into)
    rows.decoded()


def _fetch_and_decode(store: Store, jobs: list[_DecodeJob], pool: ThreadPoolExecutor) -> list[Future[None]]:
    files = fetch_whole_files(store, [(layout.key(shard), layout.max_file_bytes) for layout, shard, _ in jobs])
    return [pool.submit(_decode, layout, shard, data, rows) for (layout, shard, rows), data in zip(jobs, files)]


def fetch_whole_files(store: Store, requests: list[tuple[str, int]]) -> list[bytes | np.ndarray | None]:
    """Whole files of a remote ``store``, concurrently: ``(key, limit)``, each refused when it is
    larger than ``limit`` bytes, before more is held where the store can say (a bucket's or an
    HTTP store's ``get_bounded``); None where the file is absent.

    Raises:
        StoreError: a file over its limit.
    """
    bounded = getattr(store, "get_bounded", None)
    if bounded is None:
        files = fetch_ranges(store, [(key, 0, None) for key, _ in requests])
        for (key, limit), data in zip(requests, files):
            if data is not None and len(data) > limit:
                raise StoreError(
                    f"{key} is larger than any shard of its array can be ({len(data):,} > {limit:,} bytes)"
                )
        return files

    async def fetch_all() -> list[bytes | None]:
        files: list[bytes | None] = await asyncio.gather(*(bounded(key, limit) for key, limit in requests))
        return files

    return [None if data is None else np.frombuffer(data, np.uint8) for data in sync(fetch_all())]


def read_shards(
    arrays: dict[str, zarr.Array[Any]],
    shards: list[int],
    threads: int = DECODE_THREADS,
    checksums: RecordedChecksums | None = None,
) -> dict[str, list[np.ndarray]]:
    """Every sample of each of ``shards`` of each array: ``{name: [(m, ...) per shard]}``.

    Arrays of one store, all with the same shard length, decoded by ``threads`` threads and
    checked against ``checksums`` (:func:`start_reading_shards`).
    """
    some = next(iter(arrays.values()))
    length, n = samples_per_shard(some), some.shape[0]
    out = {name: np.empty((len(shards) * length, *a.shape[1:]), a.dtype) for name, a in arrays.items()}
    start_reading_shards(arrays, shards, out, threads, checksums).wait()
    return {
        name: [values[i * length : i * length + min(length, n - shard * length)] for i, shard in enumerate(shards)]
        for name, values in out.items()
    }


class SampleReader:
    """Single samples of the arrays of one store, at random, each read from the inner chunk that
    holds it alone and decoded in the calling thread (a pool's hand-offs cost more than they
    save on five chunks: docs/benchmarks.md). The arrays' layouts are worked out once, and each
    shard index read is kept (16 bytes per inner chunk), so a remote store's later samples from
    the same shard take one round of requests instead of two.

    Args:
        arrays: ``{name: zarr.Array}`` of one store, all with the same shard length.
    """

    def __init__(self, arrays: dict[str, zarr.Array[Any]]):
        self.arrays = arrays
        layouts = {name: ShardLayout.of(array) for name, array in arrays.items()}
        # the arrays read from their inner chunks here; the rest through zarr-python
        self.layouts = {name: layout for name, layout in layouts.items() if layout is not None and layout.sharded}
        self.sharded = list(self.layouts)
        self.store = arrays[self.sharded[0]].store_path.store if self.sharded else None
        self._indexes: dict[str, np.ndarray | None] = {}  # shard file key -> its index entries

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        """Every array's values of sample ``index``: ``{name: (*sample_shape)}``. A local store's
        files are opened once each (the index at the end, then the inner chunk); a remote store's
        indexes are fetched in one concurrent round, then their inner chunks in another. Arrays
        this class does not decode, and unsharded columns, are read through zarr-python.

        Raises:
            StoreError: as :meth:`ShardLayout.decode_into`, or an index entry past the end of its
                file.
        """
        values = {name: np.asarray(array[index]) for name, array in self.arrays.items() if name not in self.layouts}
        if self.store is None:
            return values
        shard, row = divmod(index, self.layouts[self.sharded[0]].shard_len)
        if isinstance(self.store, ContainedLocalStore):
            chunks = [self._local_chunk(self.store, self.layouts[name], shard, row, index) for name in self.sharded]
        else:
            chunks = self._remote_chunks(self.store, shard, row, index)

        def decode(name: str, chunk: np.ndarray | None) -> np.ndarray:
            layout = self.layouts[name]
            out = np.empty((layout.inner_len, *layout.sample_shape), layout.dtype)
            layout.decode_inner(chunk, out, ChunkLocation(layout.path, layout.key(shard), index, index))
            return np.asarray(out[row % layout.inner_len])

        values.update(zip(self.sharded, map(decode, self.sharded, chunks)))
        return values

    def _local_chunk(
        self, store: ContainedLocalStore, layout: ShardLayout, shard: int, row: int, index: int
    ) -> np.ndarray | None:
        """The bytes of the inner chunk holding ``row`` of ``shard`` (None: never written), read
        from the shard file opened once (its index first, unless kept from before)."""
        key = layout.key(shard)
        file = store.open_checked(key)
        if file is None:
            return None
        with file:
            if key not in self._indexes:
                try:
                    file.seek(-layout.index_bytes, os.SEEK_END)
                except OSError:  # shorter than its index
                    where = ChunkLocation(layout.path, key, index, index)
                    raise where.damaged("the shard file is too short to hold its index") from None
                self._keep_index(layout, key, file.read(), index)
            entries = self._indexes[key]
            if entries is None:  # the file was absent when its index was read (a remote store only)
                return None
            offset, nbytes = entries[row // layout.inner_len].tolist()
            if offset == NO_CHUNK:
                return None
            file.seek(offset)
            return _whole_chunk(file.read(nbytes), ChunkLocation(layout.path, key, index, index), offset, nbytes)

    def _remote_chunks(self, store: Store, shard: int, row: int, index: int) -> list[np.ndarray | None]:
        """The inner chunks holding ``row`` of ``shard`` of each sharded array (None: never
        written): the indexes not kept from before in one concurrent round, then every chunk in
        another."""
        layouts = {layout.key(shard): layout for layout in (self.layouts[name] for name in self.sharded)}
        missing = [key for key in layouts if key not in self._indexes]
        requests: list[_ByteRange] = [(key, -layouts[key].index_bytes, None) for key in missing]
        for key, index_bytes in zip(missing, fetch_ranges(store, requests)):
            self._keep_index(layouts[key], key, index_bytes, index)
        wanted: list[_ByteRange | None] = []
        for key, layout in layouts.items():
            entries = self._indexes[key]
            offset, nbytes = (NO_CHUNK, 0) if entries is None else entries[row // layout.inner_len].tolist()
            wanted.append(None if offset == NO_CHUNK else (key, offset, nbytes))
        fetched = iter(fetch_ranges(store, [request for request in wanted if request is not None]))
        chunks: list[np.ndarray | None] = []
        for request in wanted:
            if request is None:
                chunks.append(None)
                continue
            key, offset, nbytes = request
            data = next(fetched)
            where = ChunkLocation(layouts[key].path, key, index, index)
            if data is None:
                raise where.damaged("the shard file went missing between reading its index and its chunk")
            chunks.append(_whole_chunk(data, where, offset, nbytes or 0))
        return chunks

    def _keep_index(self, layout: ShardLayout, key: str, index_bytes: bytes | np.ndarray | None, index: int) -> None:
        """Keep the entries of shard file ``key``'s index (None: the file is absent)."""
        self._indexes[key] = (
            None
            if index_bytes is None
            else layout.index_entries(
                np.frombuffer(index_bytes, np.uint8), ChunkLocation(layout.path, key, index, index)
            )
        )


def _whole_chunk(data: bytes | np.ndarray, where: ChunkLocation, offset: int, nbytes: int) -> np.ndarray:
    """``data``, read for an inner chunk at ``offset`` of ``nbytes`` bytes, as a uint8 array."""
    chunk = np.frombuffer(data, np.uint8)
    if len(chunk) != nbytes:
        raise where.damaged(
            f"its index places an inner chunk at bytes {offset}-{offset + nbytes}, past the end of the file"
        )
    return chunk


_ByteRange = tuple[str, int, int | None]  # (key, start, length): see fetch_ranges


def fetch_ranges(store: Store, requests: list[_ByteRange]) -> list[bytes | np.ndarray | None]:
    """Byte ranges of files of ``store``, fetched concurrently (a local store's read directly,
    after the same containment checks): ``(key, start, length)``, ``(key, 0, None)`` for the whole
    file, ``(key, -n, None)`` for its last n bytes. Each as ``bytes`` (local) or a ``uint8``
    array (remote: the fetched buffer itself, not copied); None where the file is absent."""
    if isinstance(store, ContainedLocalStore):
        return [store.read_range(key, start, length) for key, start, length in requests]
    prototype = default_buffer_prototype()

    def byte_range(start: int, length: int | None) -> ByteRequest | None:
        if length is None:
            return None if start == 0 else SuffixByteRequest(-start)
        return RangeByteRequest(start, start + length)

    async def fetch_all() -> list[Buffer | None]:
        return await asyncio.gather(
            *(
                store.get(key, prototype=prototype, byte_range=byte_range(start, length))
                for key, start, length in requests
            )
        )

    return [None if buffer is None else buffer.as_numpy_array() for buffer in sync(fetch_all())]
