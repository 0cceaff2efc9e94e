"""A read-only zarr store over HTTP(S) whose every answer is bounded, retried and named.

What any web server may do, and what this store does about it:

- **Ignore Range** (answer 200 with the whole file): the body is streamed and only the bytes
  asked for are kept (for a suffix, the last ones), so memory stays at the size asked for; a
  whole-file read (:meth:`HttpStore.get_bounded`, and :meth:`HttpStore.get` up to
  ``response_limit``) refuses a body larger than its bound as soon as it is known (from
  ``Content-Length``) or read, before holding more.
- **Stall or drop the connection, or answer 5xx** (a busy server's 503, a proxy's 502): each
  request is tried :data:`ATTEMPTS` times with a growing pause (a ``Retry-After`` of up to
  :data:`MAX_RETRY_AFTER` seconds is honoured); the last failure raises
  :class:`~pipeline.errors.StoreNetworkError`, which says it is the network or the server, not
  damage to the store.
- **Answer 404**: the file is absent (None), as for every zarr store; the readers' recorded
  checksums then tell whether it should exist.

Responses are read with one ``aiohttp`` session per event loop (keep-alive: a reader fetches many
small ranges).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiohttp
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype

from pipeline.errors import StoreError, StoreNetworkError

ATTEMPTS = 4
MAX_RETRY_AFTER = 10.0
# Seconds without a byte (connecting, or reading an answer) before a try counts as failed.
READ_TIMEOUT = 30.0
# A whole-file answer of :meth:`HttpStore.get` larger than this is refused (shards are read with
# their own, tighter bound through get_bounded).
RESPONSE_LIMIT = 4 << 30
_RETRIED_STATUSES = frozenset({500, 502, 503, 504})
_STREAM_BLOCK = 1 << 20


class HttpStore(Store):
    """The store at ``url`` (a directory served over HTTP(S)), read-only; see the module
    docstring. ``read_timeout`` and ``response_limit`` are for tests and unusual servers."""

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = False

    def __init__(self, url: str, *, read_timeout: float = READ_TIMEOUT, response_limit: int = RESPONSE_LIMIT):
        super().__init__(read_only=True)
        self.url = url.rstrip("/")
        self.read_timeout = read_timeout
        self.response_limit = response_limit
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HttpStore) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __repr__(self) -> str:
        return f"HttpStore({self.url!r})"

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        data = await self._fetch(key, byte_range, self.response_limit)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_bounded(self, key: str, limit: int) -> bytes | None:
        """The whole file at ``key`` (None if absent), refused when it is larger than ``limit``
        bytes before more than that is held.

        Raises:
            StoreError: larger than ``limit``.
            StoreNetworkError: no answer after :data:`ATTEMPTS` tries.
        """
        return await self._fetch(key, None, limit)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return await asyncio.gather(*(self.get(key, prototype, byte_range) for key, byte_range in key_ranges))

    async def exists(self, key: str) -> bool:
        return await self._fetch(key, RangeByteRequest(0, 1), 1) is not None

    async def set(self, key: str, value: Buffer) -> None:
        raise StoreError(f"{self.url} is read-only over HTTP")

    async def delete(self, key: str) -> None:
        raise StoreError(f"{self.url} is read-only over HTTP")

    def list(self) -> AsyncIterator[str]:
        raise StoreError(f"{self.url}: an HTTP store cannot be listed (its metadata is consolidated)")

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        return self.list()

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        return self.list()

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if loop not in self._sessions:
            timeout = aiohttp.ClientTimeout(sock_connect=self.read_timeout, sock_read=self.read_timeout)
            session = aiohttp.ClientSession(timeout=timeout)
            self._sessions[loop] = session
            weakref.finalize(self, _close_session, loop, session)
        return self._sessions[loop]

    async def _fetch(self, key: str, byte_range: ByteRequest | None, limit: int) -> bytes | None:
        """The bytes of ``key`` in ``byte_range`` (None if absent), trying again on what a
        network or a busy server does; see the module docstring."""
        url = f"{self.url}/{key}"
        headers = {"Range": _range_header(byte_range)} if byte_range is not None else {}
        for attempt in range(ATTEMPTS):
            last = attempt == ATTEMPTS - 1
            try:
                async with self._session().get(url, headers=headers) as response:
                    if response.status == 404:
                        return None
                    if response.status == 416:  # a range past the end: nothing there
                        return b""
                    if response.status in _RETRIED_STATUSES:
                        if last:
                            raise StoreNetworkError(
                                f"cannot read {url}: the server answered {response.status} {response.reason} "
                                f"{ATTEMPTS} times; it is busy or failing, which is not damage to the store: run "
                                "the same command again later"
                            )
                        await asyncio.sleep(_pause(attempt, response.headers.get("Retry-After")))
                        continue
                    if response.status not in (200, 206):
                        raise StoreError(f"cannot read {url}: the server answered {response.status} {response.reason}")
                    if response.status == 206:
                        return await _read_bounded(response, url, _range_length(byte_range, limit))
                    return await _from_whole_body(response, url, byte_range, limit)
            except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as error:
                if last:
                    raise StoreNetworkError(
                        f"cannot read {url}: {_network_fault(error, self.read_timeout)} after {ATTEMPTS} tries; "
                        "this is the network or the server, not damage to the store: run the same command "
                        "again once the server answers"
                    ) from None
                await asyncio.sleep(_pause(attempt, None))
        raise AssertionError("unreachable: the last try returns or raises")


def _range_header(byte_range: ByteRequest) -> str:
    if isinstance(byte_range, RangeByteRequest):
        return f"bytes={byte_range.start}-{byte_range.end - 1}"
    if isinstance(byte_range, OffsetByteRequest):
        return f"bytes={byte_range.offset}-"
    assert isinstance(byte_range, SuffixByteRequest)
    return f"bytes=-{byte_range.suffix}"


def _range_length(byte_range: ByteRequest | None, limit: int) -> int:
    """The most bytes an answer to ``byte_range`` may hold."""
    if isinstance(byte_range, RangeByteRequest):
        return min(limit, byte_range.end - byte_range.start)
    if isinstance(byte_range, SuffixByteRequest):
        return min(limit, byte_range.suffix)
    return limit


async def _read_bounded(response: aiohttp.ClientResponse, url: str, limit: int) -> bytes:
    """The body of ``response``, refused once it is known or read to be over ``limit`` bytes."""
    if response.content_length is not None and response.content_length > limit:
        raise _too_large(url, response.content_length, limit)
    parts, held = [], 0
    async for block in response.content.iter_chunked(_STREAM_BLOCK):
        held += len(block)
        if held > limit:
            raise _too_large(url, held, limit)
        parts.append(block)
    return b"".join(parts)


async def _from_whole_body(
    response: aiohttp.ClientResponse, url: str, byte_range: ByteRequest | None, limit: int
) -> bytes:
    """What ``byte_range`` asked for, out of a 200 answer carrying the whole file: streamed,
    keeping only those bytes (and stopping once they are read)."""
    if byte_range is None:
        return await _read_bounded(response, url, limit)
    if isinstance(byte_range, SuffixByteRequest):  # the last bytes: the whole body passes through
        total = response.content_length
        if total is not None and total > limit:
            raise _too_large(url, total, limit)
        tail, seen = bytearray(), 0
        async for block in response.content.iter_chunked(_STREAM_BLOCK):
            seen += len(block)
            if seen > limit:
                raise _too_large(url, seen, limit)
            tail += block
            del tail[: max(0, len(tail) - byte_range.suffix)]
        return bytes(tail)
    start = byte_range.start if isinstance(byte_range, RangeByteRequest) else byte_range.offset
    stop = byte_range.end if isinstance(byte_range, RangeByteRequest) else start + limit + 1
    kept, position = bytearray(), 0
    async for block in response.content.iter_chunked(_STREAM_BLOCK):
        kept += block[max(0, start - position) : max(0, stop - position)]
        position += len(block)
        if position >= stop:
            break  # the rest of the file is never read (the connection is closed with it)
    if isinstance(byte_range, OffsetByteRequest) and len(kept) > limit:
        raise _too_large(url, len(kept), limit)
    return bytes(kept)


def _too_large(url: str, size: int, limit: int) -> StoreError:
    return StoreError(
        f"{url} is larger than {limit:,} bytes ({size:,} or more), more than the store can hold there; "
        "the store is damaged or hostile, or its server ignores Range requests: refused"
    )


def _pause(attempt: int, retry_after: str | None) -> float:
    """Seconds before try ``attempt + 2``: 0.5, 1, 2, ..., or the server's Retry-After (capped)."""
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(retry_after))) if retry_after else 0.5 * 2.0**attempt
    except ValueError:  # an HTTP date: not worth parsing for a pause of seconds
        return 0.5 * 2.0**attempt


def _network_fault(error: BaseException, read_timeout: float) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return f"no answer for {read_timeout:g} s"
    return f"the connection failed ({type(error).__name__}: {error})"


def _close_session(loop: asyncio.AbstractEventLoop, session: Any) -> None:
    """Close a session when its store is gone: on its loop if that still runs, else its
    connector directly (as fsspec does), so no "Unclosed client session" is printed at exit."""
    if loop.is_running() and not loop.is_closed():
        if asyncio._get_running_loop() is loop:  # collected on the loop itself: it closes it soon
            loop.create_task(session.close())
        else:
            with contextlib.suppress(Exception):  # a loop stopping meanwhile: nothing left to close
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=5)
    else:
        connector = getattr(session, "_connector", None)
        if connector is not None:
            connector._close()
