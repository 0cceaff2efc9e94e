"""Where a store lives, and opening it read-only and safely wherever that is.

A store location is one of:

- a local directory (``stores/fer2013.zarr``) or ``file:///abs/path.zarr``;
- ``http://`` or ``https://`` URL of a directory served by any web server that honours Range
  requests (nginx, Apache, object stores, ``fer-store serve``); no directory listings needed;
- ``s3://bucket/prefix.zarr`` through fsspec and s3fs, with endpoint and credentials from the
  usual environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``; ``AWS_ANON=1`` for public buckets);
- a zipped store, ``*.zarr.zip`` (``fer-store pack``), local.

Before zarr interprets any array, the raw JSON metadata is checked against an allow-list
(:func:`check_metadata`): only the data types and codecs this project writes are accepted, so a
stranger's store cannot make the reader unpickle data or load an unknown codec. Opening never
writes: local stores are opened with ``read_only=True``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore, LocalStore, ZipStore

from pipeline.errors import StoreError

ALLOWED_DATA_TYPES = frozenset({"uint8", "int16", "float32", "string"})
ALLOWED_CODECS = frozenset({"bytes", "zstd", "crc32c", "sharding_indexed", "vlen-utf8"})
REMOTE_SCHEMES = ("http", "https", "s3")


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

    def zarr_store(self) -> zarr.abc.store.Store:
        """A read-only zarr store for this location.

        Raises:
            StoreError: a local path or zip file that does not exist, or a remote location that
                cannot be reached.
        """
        if self.kind in ("local", "zip"):
            if not Path(self.path).exists():
                raise StoreError(f"no store at {self.path}")
            if self.kind == "zip":
                return sync(ZipStore.open(self.path, mode="r"))
            return LocalStore(self.path, read_only=True)
        options: dict[str, Any] = {}
        if self.kind == "s3" and os.environ.get("AWS_ANON", "").lower() in ("1", "true", "yes"):
            options["anon"] = True
        try:
            return FsspecStore.from_url(self.path, read_only=True, storage_options=options or None)
        except (ImportError, ValueError) as error:
            raise StoreError(f"cannot open {self.text}: {error}") from None


def read_json(store: zarr.abc.store.Store, key: str) -> dict[str, Any] | None:
    """The JSON document at ``key`` of ``store`` (None if absent)."""
    buffer = sync(store.get(key, prototype=default_buffer_prototype()))
    if buffer is None:
        return None
    try:
        return json.loads(buffer.to_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StoreError(f"{key} is not valid JSON ({error}); the store is damaged") from None


def check_metadata(name: str, document: dict[str, Any]) -> None:
    """Refuse array metadata this project would not write.

    Raises:
        StoreError: another Zarr format, a data type outside :data:`ALLOWED_DATA_TYPES` (object,
            structured...), or a codec outside :data:`ALLOWED_CODECS` (pickle, ...).
    """
    if document.get("zarr_format") != 3:
        raise StoreError(f"array {name!r} is not Zarr format 3; refusing to open it")
    if document.get("node_type") != "array":
        return
    data_type = document.get("data_type")
    if not isinstance(data_type, str) or data_type not in ALLOWED_DATA_TYPES:
        raise StoreError(
            f"array {name!r} has data type {data_type!r}; a FER store holds only {', '.join(sorted(ALLOWED_DATA_TYPES))} "
            "(object and other types could run code while reading), so the store is refused"
        )
    for codec in _codecs(document.get("codecs", [])):
        codec_name = codec.get("name") if isinstance(codec, dict) else codec
        if codec_name not in ALLOWED_CODECS:
            raise StoreError(
                f"array {name!r} uses the codec {codec_name!r}; a FER store uses only {', '.join(sorted(ALLOWED_CODECS))} "
                "(pickle-based and unknown codecs could run code while reading), so the store is refused"
            )
    if document.get("storage_transformers"):
        raise StoreError(f"array {name!r} uses storage transformers, which a FER store never does; refusing it")


def _codecs(codecs: list) -> list:
    """Every codec in a codec list, with the inner and index codecs of sharding."""
    found = []
    for codec in codecs:
        found.append(codec)
        configuration = codec.get("configuration", {}) if isinstance(codec, dict) else {}
        for key in ("codecs", "index_codecs"):
            found += _codecs(configuration.get(key, []))
    return found


def open_group_readonly(location: str | Path) -> zarr.Group:
    """Open the store at ``location`` read-only after checking every array's metadata.

    Remote and zipped stores are read through their consolidated metadata (one request); a
    local directory without it (a run that has not finished) is listed instead.

    Raises:
        StoreError: missing or unreachable, not Zarr v3, no consolidated metadata (remote), or
            metadata outside the allow-list.
    """
    parsed = StoreLocation.parse(location)
    store = parsed.zarr_store()
    try:
        root = read_json(store, "zarr.json")
    except (OSError, ValueError) as error:  # connection refused, 403, ...
        raise StoreError(f"cannot read {parsed.text}: {error}") from None
    if root is None:
        raise StoreError(f"no store at {parsed.text} (expected a Zarr v3 group with zarr.json)")
    check_metadata("/", root)
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata")
    if consolidated is None:
        if not parsed.is_local:
            raise StoreError(
                f"{parsed.text} has no consolidated metadata, which a remote or zipped store needs; "
                "the run that built it did not finish (run fer-preprocess on it again where it was built)"
            )
        documents = {
            str(path.parent.relative_to(parsed.path)): json.loads(path.read_text())
            for path in Path(parsed.path).glob("*/zarr.json")
        }
    else:
        documents = consolidated
    for name, document in documents.items():
        check_metadata(name, document)
    return zarr.open_group(store=store, mode="r", use_consolidated=None if consolidated is None else True)
