"""Where a store lives, and opening it read-only and safely wherever that is.

A store location is one of:

- a local directory (``stores/fer2013.zarr``) or ``file:///abs/path.zarr``;
- ``http://`` or ``https://`` URL of a directory served by any web server that honours Range
  requests (nginx, Apache, object stores, ``fer-store serve``); no directory listings needed;
- ``s3://bucket/prefix.zarr`` through obstore (:mod:`pipeline.store.bucket`), with endpoint and
  credentials from the usual environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``; ``AWS_ANON=1`` for public
  buckets) or an instance, container or web-identity role; profiles in ``~/.aws`` are not read;
- a zipped store, ``*.zarr.zip`` (``fer-store pack``), local.

Before zarr interprets anything, the raw JSON metadata is checked (:mod:`pipeline.store.metadata`
and the schema's own check): only the data types and codecs this project writes, array names that
cannot be paths, shapes and chunks within bounds and as the schema lays them out, consolidated
metadata that agrees with each array's own. A stranger's store cannot make the reader unpickle
data, load an unknown codec, allocate without bound or read a file outside the store. Opening
never writes: local stores are opened with ``read_only=True``.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

import zarr
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.group import AsyncGroup, GroupMetadata
from zarr.core.metadata import ArrayV3Metadata
from zarr.core.sync import sync
from zarr.storage import LocalStore, StorePath

from pipeline.errors import StoreError, StoreRefusedError
from pipeline.store.bounded_codecs import bounded_codecs
from pipeline.store.metadata import (
    MAX_ARRAY_DOCUMENT_BYTES,
    MAX_ARRAYS,
    MAX_ROOT_DOCUMENT_BYTES,
    ArrayLayout,
    check_array_name,
    fetch_document,
    parse_array_document,
    read_document,
)
from pipeline.store.zip_archive import CheckedZipStore, check_zip_members


@dataclass(frozen=True)
class StoreLocation:
    """A parsed store location. ``kind`` is ``local``, ``zip``, ``http`` or ``s3``."""

    text: str
    kind: str
    path: str  # local path (local, zip) or the URL (http, s3)

    @classmethod
    def parse(cls, location: str | Path) -> StoreLocation:
        text = str(location)
        scheme = urlparse(text).scheme.lower()
        if scheme == "file":
            text_path = urlparse(text).path
            return cls(text, "zip" if text_path.endswith(".zip") else "local", text_path)
        if scheme in ("http", "https"):
            return cls(text, "http", text.rstrip("/"))
        if scheme == "s3":
            return cls(text, "s3", text.rstrip("/"))
        if scheme and len(scheme) > 1:  # not a Windows drive letter
            raise StoreError(f"cannot open {text!r}: use a local path, file://, http(s)://, s3:// or a .zarr.zip file")
        return cls(text, "zip" if text.endswith(".zip") else "local", text)

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def zarr_store(self) -> Store:
        """A read-only zarr store for this location.

        Raises:
            StoreError: a local path or zip file that does not exist, or a remote location that
                cannot be reached.
        """
        if self.kind in ("local", "zip"):
            if not Path(self.path).exists():
                raise StoreError(f"no store at {self.path}")
            if self.kind == "zip":
                check_zip_members(self.path)
                return sync(CheckedZipStore.open(self.path, mode="r"))
            return ContainedLocalStore(self.path)
        if self.kind == "s3":
            from pipeline.store.bucket import BucketStore  # obstore, needed for buckets only

            return BucketStore.open_url(self.path)
        from pipeline.store.http_store import HttpStore  # aiohttp, needed for URLs only

        return HttpStore(self.path)


class ContainedLocalStore(LocalStore):
    """A read-only :class:`~zarr.storage.LocalStore` that reads regular files inside its root only.

    A symlink leading out of the store, a FIFO (which would block the reader) or a device such as
    ``/dev/zero`` (which would never end) is refused with :class:`StoreError` instead of read.
    """

    def __init__(self, root: str | Path):
        super().__init__(root, read_only=True)
        self._root_text = str(self.root)
        self._real_root = os.path.realpath(self.root)
        self._real_folders: dict[str, str] = {}  # a key's folder -> its real path, resolved once

    def _check_contained(self, key: str) -> None:
        folder, _, name = key.rpartition("/")
        real_folder = self._real_folders.get(folder)
        if real_folder is None:
            if len(self._real_folders) > 100_000:
                self._real_folders.clear()
            real_folder = self._real_folders[folder] = os.path.realpath(self.root / folder)
        real = os.path.normpath(os.path.join(real_folder, name))
        if os.path.islink(real):  # the file itself is a link: follow it all the way
            real = os.path.realpath(real)
        if real != self._real_root and not real.startswith(self._real_root + os.sep):
            raise StoreError(f"{key} in the store {self.root} leads to {real}, outside the store; refusing to read it")
        try:
            mode = os.stat(real).st_mode
        except FileNotFoundError:
            return  # absent: a chunk never written, read as its fill value
        if not stat.S_ISREG(mode):
            raise StoreError(f"{key} in the store {self.root} is not a regular file; refusing to read it")

    def open_checked(self, key: str) -> BinaryIO | None:
        """The file at ``key`` opened for reading, after the checks :meth:`get` makes; None if
        absent. Reading it directly costs a fraction of :meth:`get`'s round trip through zarr's
        event loop."""
        self._check_contained(key)
        try:
            return open(os.path.join(self._root_text, key), "rb")
        except FileNotFoundError:
            return None

    def read_range(self, key: str, start: int, length: int | None) -> bytes | None:
        """``length`` bytes from ``start`` of the file at ``key`` (no length: to its end; ``start``
        < 0: the last ``-start`` bytes); None if absent."""
        file = self.open_checked(key)
        if file is None:
            return None
        try:
            with file:
                file.seek(start, os.SEEK_SET if start >= 0 else os.SEEK_END)
                return file.read(-1 if length is None else length)
        except OSError as error:  # a suffix longer than the file
            raise StoreError(f"cannot read {key} in the store {self.root}: {error}") from None

    async def get(
        self, key: str, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        self._check_contained(key)
        return await super().get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        for key, _ in key_ranges:
            self._check_contained(key)
        return await super().get_partial_values(prototype, key_ranges)

    def get_sync(
        self, key: str, *, prototype: BufferPrototype | None = None, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        self._check_contained(key)
        return super().get_sync(key, prototype=prototype, byte_range=byte_range)

    async def getsize(self, key: str) -> int:
        self._check_contained(key)
        return await super().getsize(key)

    async def exists(self, key: str) -> bool:
        self._check_contained(key)
        return await super().exists(key)

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        self._check_contained(prefix.rstrip("/") + "/.")
        async for key in super().list_dir(prefix):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        self._check_contained(prefix.rstrip("/") + "/.")
        async for key in super().list_prefix(prefix):
            yield key


# Every method of zarr's LocalStore, as zarr 3.1.6 has them: those that read a key are guarded by
# ContainedLocalStore; the others write (refused: the store is read-only), manage the store, or
# read only through a guarded one. tests/pipeline/store/test_containment.py fails the day a zarr
# release adds a method to neither list.
GUARDED_READS = ("get", "get_partial_values", "get_sync", "getsize", "exists", "list_dir", "list_prefix")
UNGUARDED_METHODS = (
    "_check_writable", "_ensure_open", "_ensure_open_sync", "_open", "close", "open", "with_read_only",
    "_set", "_set_many", "clear", "delete", "delete_dir", "delete_sync", "move", "set", "set_if_not_exists",
    "set_sync",  # writers: refused by read_only
    "_get_bytes", "_get_bytes_sync", "_get_json", "_get_json_sync", "_get_many",  # through get
    "getsize_prefix", "is_empty", "list",  # through list_prefix and getsize; list walks the root itself
)  # fmt: skip


S3_SETTINGS_HINT = (
    ". The endpoint and credentials come from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_REGION (AWS_ANON=1 for a public bucket); "
    'profiles in ~/.aws are not read: `eval "$(aws configure export-credentials --profile NAME --format env)"` '
    "exports one"
)

SchemaCheck = Callable[[dict[str, Any], dict[str, ArrayLayout]], list[str]]


def open_group_readonly(location: str | Path, check_schema: SchemaCheck) -> zarr.Group:
    """Open the store at ``location`` read-only once its metadata has passed every check.

    Remote and zipped stores are read through their consolidated metadata (one request, then one
    per array to compare each array's own ``zarr.json`` with its consolidated copy); a local
    directory without it (a run that has not finished) is listed instead. Each array's metadata
    must pass :func:`~pipeline.store.metadata.parse_array_document`, then ``check_schema(root
    attributes, {name: layout})`` returns the schema's objections. zarr reads nothing before all
    of this passed.

    Raises:
        StoreRefusedError: the metadata fails a check; ``problems`` lists every objection found,
            each naming the array and the field.
        StoreError: missing or unreachable, not Zarr v3, no consolidated metadata (remote), or
            a provenance ``check_schema`` cannot read.
    """
    parsed = StoreLocation.parse(location)
    store = parsed.zarr_store()
    try:
        root = read_document(store, "zarr.json", MAX_ROOT_DOCUMENT_BYTES)
    except StoreError as error:  # too large, not UTF-8, not JSON, ...
        raise StoreError(f"{parsed.text}: {error}") from None
    except (OSError, ValueError) as error:  # connection refused, 403, ...
        hint = S3_SETTINGS_HINT if parsed.kind == "s3" else ""
        raise StoreError(f"cannot read {parsed.text}: {error}{hint}") from None
    if root is None:
        raise StoreError(f"no store at {parsed.text} (expected a Zarr v3 group with zarr.json)")
    if root.get("zarr_format") != 3 or root.get("node_type") != "group":
        raise StoreError(
            f"{parsed.text} is not a Zarr format 3 group (its zarr.json says zarr_format "
            f"{root.get('zarr_format')!r}, node_type {root.get('node_type')!r})"
        )
    attributes = root.get("attributes", {})
    if not isinstance(attributes, dict):
        raise StoreError(f"{parsed.text}: the root zarr.json's 'attributes' is not an object")
    consolidated = root.get("consolidated_metadata")
    if consolidated is None:
        if not parsed.is_local:
            raise StoreError(
                f"{parsed.text} has no consolidated metadata, which a remote or zipped store needs; "
                "the run that built it did not finish (run fer-preprocess on it again where it was built)"
            )
        names = sorted(
            entry.name
            for entry in os.scandir(parsed.path)
            if entry.is_dir() and not entry.name.startswith(".") and os.path.lexists(Path(entry.path, "zarr.json"))
        )
        documents = dict(zip(names, _read_documents(store, names)))
    else:
        listed = consolidated.get("metadata") if isinstance(consolidated, dict) else None
        if not isinstance(listed, dict):
            raise StoreError(f"{parsed.text}: the root zarr.json's consolidated metadata has no 'metadata' object")
        documents = listed
    problems, layouts = _check_documents(store, documents, compare_own=consolidated is not None)
    if len(layouts) == len(documents):  # the schema judges only documents that parsed
        try:
            problems += check_schema(attributes, layouts)
        except StoreError as error:  # the provenance itself: "<location> has schema version 2 ..."
            raise StoreError(f"{parsed.text} {error}") from None
    if problems:
        raise StoreRefusedError(parsed.text, problems)
    try:
        with bounded_codecs():  # the group's arrays are parsed here, with zstd and blosc bounded
            if consolidated is None:  # the documents checked above, as the group's consolidated metadata
                consolidated = {"kind": "inline", "must_understand": False, "metadata": documents}
                metadata = GroupMetadata.from_dict({**root, "consolidated_metadata": consolidated})
                return zarr.Group(AsyncGroup(metadata=metadata, store_path=StorePath(store)))
            return zarr.open_group(store=store, mode="r", use_consolidated=True)
    except Exception as error:  # noqa: BLE001 - metadata zarr itself cannot parse, past every check above
        raise StoreError(f"zarr cannot open {parsed.text}: {type(error).__name__}: {error}") from None


def _normalised(document: Any) -> str | None:
    """An array's ``zarr.json`` with the spec's defaults filled in, as zarr itself reads it
    (another Zarr v3 writer may leave out ``attributes``, ``storage_transformers`` or a codec's
    default configuration), as canonical JSON; None if zarr cannot read it."""
    try:
        metadata = ArrayV3Metadata.from_dict(copy.deepcopy(document)).to_dict()
    except Exception:  # noqa: BLE001 - any document zarr refuses differs from one it reads
        return None
    return json.dumps(metadata, sort_keys=True, default=str)


def _read_documents(store: Store, names: list[str]) -> list[Any]:
    """Each array's own ``zarr.json`` (None where absent), read concurrently; a document that
    cannot be read is returned as its :class:`StoreError`."""

    async def read_all() -> list[Any]:
        reads = (fetch_document(store, f"{name}/zarr.json", MAX_ARRAY_DOCUMENT_BYTES) for name in names)
        return list(await asyncio.gather(*reads, return_exceptions=True))

    results: list[Any] = sync(read_all())
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, StoreError):
            raise StoreError(f"cannot read the store's array metadata: {result}")
    return results


def _check_documents(
    store: Store, documents: dict[str, Any], compare_own: bool
) -> tuple[list[str], dict[str, ArrayLayout]]:
    """``(problems, {name: layout of each document that parsed})``; with ``compare_own``, each
    array's own ``zarr.json`` is compared with ``documents`` (its consolidated copy)."""
    problems: list[str] = []
    if len(documents) > MAX_ARRAYS:
        return [f"the store lists {len(documents):,} arrays; a FER store holds at most {MAX_ARRAYS}"], {}
    layouts: dict[str, ArrayLayout] = {}
    for name, document in documents.items():
        try:
            check_array_name(name)
            if isinstance(document, StoreError):
                raise document
            if document is None:
                raise StoreError(f"array {name!r}: the directory has no zarr.json")
            layouts[name] = parse_array_document(name, document)
        except StoreError as error:
            problems.append(str(error))
    if compare_own and not problems:
        for name, own in zip(layouts, _read_documents(store, list(layouts))):
            if isinstance(own, StoreError):
                problems.append(f"array {name!r}: {own}")
            elif own != documents[name] and _normalised(own) != _normalised(documents[name]):
                problems.append(
                    f"array {name!r}: its own {name}/zarr.json is missing or differs from the "
                    "consolidated metadata in the root zarr.json"
                )
    return problems, layouts
