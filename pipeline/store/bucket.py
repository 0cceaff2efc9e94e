"""S3 buckets, read-only, through obstore.

obstore is the Python binding of Rust's ``object_store``; zarr-python 3 wraps it as
:class:`zarr.storage.ObjectStore`. It spends far less Python per request than s3fs and botocore
did (streams up to 2x faster, docs/benchmarks.md). Only ``s3://`` locations import this module,
so reading local and HTTP stores needs no obstore.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from urllib.parse import urlparse

import obstore
import obstore.exceptions
import obstore.store
from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import ObjectStore

from pipeline.errors import StoreError


class BucketStore(ObjectStore[obstore.store.S3Store]):
    """A read-only zarr store of ``s3://bucket/prefix``, with the endpoint and credentials from
    the ``AWS_*`` environment variables (``AWS_ANON=1``: unsigned requests, for public buckets).

    obstore's errors leave it as :class:`OSError` (their first line: obstore appends a debug
    dump), which every reader of a store already handles. Some S3 servers answer a range request
    with the range but status 200 instead of 206 (rclone's ``serve s3`` and other gateways built
    on gofakes3; lakeFS), which obstore refuses; from then on this store fetches each ranged
    read's whole file and slices it (the training stream reads whole files anyway).
    """

    _ranges_refused = False

    @classmethod
    def open_url(cls, url: str) -> BucketStore:
        """The bucket at ``url`` (``s3://bucket/prefix``); nothing is requested yet.

        Raises:
            StoreError: obstore refuses the settings (an AWS_* variable it cannot parse).
        """
        parsed = urlparse(url)
        anonymous = os.environ.get("AWS_ANON", "").lower() in ("1", "true", "yes")
        try:
            bucket = obstore.store.S3Store(
                parsed.netloc,
                prefix=parsed.path.strip("/") or None,
                # an AWS_ENDPOINT_URL of http:// (MinIO on a lab network) is the user's own choice
                client_options={"allow_http": True},
                config={"skip_signature": True} if anonymous else None,
            )
        except (obstore.exceptions.BaseError, ValueError) as error:
            raise StoreError(f"cannot open {url}: {_first_line(error)}") from None
        return cls(bucket, read_only=True)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        try:
            if byte_range is None or not self._ranges_refused:
                try:
                    return await super().get(key, prototype, byte_range)
                except obstore.exceptions.GenericError as error:
                    if byte_range is None or "non-partial response" not in str(error):
                        raise
                    self._ranges_refused = True
            whole = await super().get(key, prototype)
        except obstore.exceptions.BaseError as error:
            raise OSError(_first_line(error)) from None
        if whole is None:
            return None
        if isinstance(byte_range, RangeByteRequest):
            return whole[byte_range.start : byte_range.end]
        if isinstance(byte_range, OffsetByteRequest):
            return whole[byte_range.offset :]
        return whole[max(0, len(whole) - byte_range.suffix) :]

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return await asyncio.gather(*(self.get(key, prototype, byte_range) for key, byte_range in key_ranges))

    async def get_bounded(self, key: str, limit: int) -> bytes | None:
        """The whole file at ``key`` in one GET (None if absent), refused before its body is read
        when its size is over ``limit`` bytes: how metadata documents are read, since a range
        request, which bounds them elsewhere, may be answered with 200.

        Raises:
            StoreError: larger than ``limit``.
            OSError: the request failed.
        """
        try:
            response = await obstore.get_async(self.store, key)
            if response.meta["size"] > limit:
                raise StoreError(
                    f"{key} is larger than {limit:,} bytes ({response.meta['size']:,}), more than the store can hold "
                    "there; the store is damaged or hostile: refused before reading it"
                )
            return bytes(await response.bytes_async())
        except FileNotFoundError:
            return None
        except obstore.exceptions.BaseError as error:
            raise OSError(_first_line(error)) from None


def _first_line(error: BaseException) -> str:
    """An error's message without what follows its first line."""
    return str(error).strip().split("\n", 1)[0]
