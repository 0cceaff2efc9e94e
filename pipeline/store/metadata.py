"""Checking a store's raw JSON metadata before zarr interprets any of it.

A store may come from a stranger, or be damaged on the way. Everything here reads the metadata
documents as bytes with a size limit, parses them as JSON, and refuses what this project would
never write, so that zarr is only ever handed metadata that cannot run code, allocate without
bound, or name a file outside the store:

- the data types and codecs of an allow-list (no object dtype, no pickle, no unknown codec);
- array names that are plain identifiers (no path separator, no ``..``);
- shapes and chunk shapes that are lists of non-negative (chunk shapes: positive) integers of one
  rank, inner chunks that tile their shard, and chunks under a size limit;
- metadata documents under a size limit, valid UTF-8 JSON, not nested without end.

Which arrays a store holds and how they are laid out is the schema's business
(:func:`pipeline.store.check_layouts`); this module knows the Zarr format only.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from zarr.abc.store import RangeByteRequest, Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from pipeline.errors import StoreError

ALLOWED_DATA_TYPES = frozenset({"uint8", "int16", "uint32", "float32", "string"})
ALLOWED_CODECS = frozenset({"bytes", "zstd", "blosc", "crc32c", "sharding_indexed", "vlen-utf8"})
# A schema array name: what pipeline.store names arrays, and nothing that could be a path.
ARRAY_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_ROOT_DOCUMENT_BYTES = 16 * 2**20  # the root zarr.json with the consolidated metadata
MAX_ARRAY_DOCUMENT_BYTES = 2**20
MAX_ARRAYS = 256
MAX_RANK = 8
MAX_SAMPLES = 100_000_000  # a hundred times AffectNet
# Raw bytes of one chunk (a whole shard, for sharded arrays) and of one inner chunk: far above
# any layout this project writes, far below what would exhaust a machine's memory.
MAX_CHUNK_BYTES = 2 * 2**30
MAX_INNER_CHUNK_BYTES = 256 * 2**20
ITEM_BYTES = {"uint8": 1, "int16": 2, "uint32": 4, "float32": 4, "string": 16}  # string: a rough per-item size


@dataclass(frozen=True)
class ArrayLayout:
    """What an array's checked metadata says about its extent.

    shape: the array's shape; ``shape[0]`` is the sample axis in a FER store.
    chunk_shape: the chunk grid's chunk (for a sharded array, one shard).
    inner_chunk_shape: the sharding codec's inner chunk, or None when not sharded.
    """

    name: str
    data_type: str
    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    inner_chunk_shape: tuple[int, ...] | None
    dimension_names: tuple[str, ...] | None


def read_document(store: Store, key: str, limit: int) -> dict[str, Any] | None:
    """The JSON object at ``key`` of ``store``, reading at most ``limit`` bytes (None if absent).

    Raises:
        StoreError: larger than ``limit``, not UTF-8, not JSON, nested too deeply, or not an
            object.
    """
    return sync(fetch_document(store, key, limit))


async def fetch_document(store: Store, key: str, limit: int) -> dict[str, Any] | None:
    """:func:`read_document`, awaitable, so that many documents can be read at once."""
    if hasattr(store, "get_bounded"):  # a bucket (pipeline.store.bucket): its server may answer a range with 200
        data = await store.get_bounded(key, limit)
        return None if data is None else parse_document(key, data, limit)
    buffer = await store.get(key, prototype=default_buffer_prototype(), byte_range=RangeByteRequest(0, limit + 1))
    if buffer is None:
        return None
    return parse_document(key, buffer.to_bytes(), limit)


def check_document_size(key: str, size: int, limit: int) -> None:
    """Refuse a metadata document of ``size`` bytes over ``limit``."""
    if size > limit:
        raise StoreError(
            f"{key} is larger than {limit:,} bytes, far more than any FER store's metadata; "
            "the store is damaged or hostile and is refused"
        )


def parse_document(key: str, data: bytes, limit: int) -> dict[str, Any]:
    """The JSON object in ``data``, the bytes read from ``key``; see :func:`read_document`."""
    check_document_size(key, len(data), limit)
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise StoreError(f"{key} is not UTF-8 text ({error}); the store is damaged") from None
    except RecursionError:
        raise StoreError(f"{key} is nested too deeply to be Zarr metadata; the store is damaged or hostile") from None
    except ValueError as error:  # JSONDecodeError, and integers of more digits than Python parses
        raise StoreError(f"{key} is not valid JSON ({error}); the store is damaged") from None
    if not isinstance(document, dict):
        raise StoreError(f"{key} holds a JSON {type(document).__name__}, not an object; the store is damaged")
    return document


def check_array_name(name: Any) -> None:
    """Refuse an array name that is not a plain lower-case identifier (a path, ``..``, empty)."""
    if not isinstance(name, str) or not ARRAY_NAME.fullmatch(name):
        raise StoreError(
            f"the store names an array {name!r}; FER store arrays are named like 'mask_soft' "
            "(no path separators, no '..'), so the store is refused"
        )


def parse_array_document(name: str, document: Any) -> ArrayLayout:
    """Check one array's metadata document and return its layout.

    Raises:
        StoreError: naming the array and the field: not Zarr format 3, a data type outside
            :data:`ALLOWED_DATA_TYPES`, a codec outside :data:`ALLOWED_CODECS`, storage
            transformers, a shape or chunk shape that is not a list of integers of the array's
            rank, inner chunks that do not tile the shard, or a chunk over the size limits.
    """
    if not isinstance(document, dict):
        raise StoreError(f"array {name!r}: its metadata is a JSON {type(document).__name__}, not an object")
    if document.get("zarr_format") != 3:
        raise StoreError(f"array {name!r} is not Zarr format 3; refusing to open it")
    if document.get("node_type") != "array":
        raise StoreError(
            f"{name!r}: node_type {document.get('node_type')!r}; a FER store holds arrays only below its root"
        )
    data_type = document.get("data_type")
    if not isinstance(data_type, str) or data_type not in ALLOWED_DATA_TYPES:
        raise StoreError(
            f"array {name!r} has data type {data_type!r}; a FER store holds only {', '.join(sorted(ALLOWED_DATA_TYPES))} "
            "(object and other types could run code while reading), so the store is refused"
        )
    codecs = document.get("codecs")
    if not isinstance(codecs, list) or not codecs:
        raise StoreError(f"array {name!r}: field 'codecs' is {codecs!r}, not a list of codecs")
    for codec in _codecs(name, codecs):
        if codec["name"] not in ALLOWED_CODECS:
            raise StoreError(
                f"array {name!r} uses the codec {codec['name']!r}; a FER store uses only {', '.join(sorted(ALLOWED_CODECS))} "
                "(pickle-based and unknown codecs could run code while reading), so the store is refused"
            )
    if document.get("storage_transformers"):
        raise StoreError(f"array {name!r} uses storage transformers, which a FER store never does; refusing it")
    shape = _integers(name, "shape", document.get("shape"), minimum=0)
    grid = document.get("chunk_grid")
    if not isinstance(grid, dict) or grid.get("name") != "regular" or not isinstance(grid.get("configuration"), dict):
        raise StoreError(f"array {name!r}: field 'chunk_grid' is {_short(grid)}, not a regular chunk grid")
    chunk_shape = _integers(name, "chunk_grid.chunk_shape", grid["configuration"].get("chunk_shape"), minimum=1)
    _same_rank(name, "chunk_grid.chunk_shape", chunk_shape, shape)
    inner = None
    if codecs[0]["name"] == "sharding_indexed":
        configuration = codecs[0].get("configuration", {})
        inner = _integers(name, "sharding_indexed.chunk_shape", configuration.get("chunk_shape"), minimum=1)
        _same_rank(name, "sharding_indexed.chunk_shape", inner, shape)
        if any(c % i for c, i in zip(chunk_shape, inner)):
            raise StoreError(f"array {name!r}: inner chunks {list(inner)} do not tile its shards {list(chunk_shape)}")
        _bounded(name, "sharding_indexed.chunk_shape", inner, data_type, MAX_INNER_CHUNK_BYTES)
        if configuration.get("index_location", "end") not in ("start", "end"):
            raise StoreError(f"array {name!r}: sharding index_location {configuration.get('index_location')!r}")
    elif any(codec["name"] == "sharding_indexed" for codec in codecs[1:]):
        raise StoreError(f"array {name!r}: sharding is not its first codec, which a FER store never writes")
    _bounded(name, "chunk_grid.chunk_shape", chunk_shape, data_type, MAX_CHUNK_BYTES)
    encoding = document.get("chunk_key_encoding")
    if not (
        isinstance(encoding, dict)
        and encoding.get("name") == "default"
        and (encoding.get("configuration") or {}).get("separator", "/") == "/"
    ):
        raise StoreError(
            f"array {name!r}: field 'chunk_key_encoding' is {_short(encoding)}; a FER store uses "
            "the default encoding with '/'"
        )
    dimension_names = document.get("dimension_names")
    if dimension_names is not None:
        if not isinstance(dimension_names, list) or not all(isinstance(d, str) for d in dimension_names):
            raise StoreError(
                f"array {name!r}: field 'dimension_names' is {_short(dimension_names)}, not a list of names"
            )
        _same_rank(name, "dimension_names", dimension_names, shape)
    if not isinstance(document.get("attributes", {}), dict):
        raise StoreError(f"array {name!r}: field 'attributes' is not an object")
    return ArrayLayout(
        name, data_type, shape, chunk_shape, inner, None if dimension_names is None else tuple(dimension_names)
    )


def _codecs(name: str, codecs: list[Any]) -> list[dict[str, Any]]:
    """Every codec in a codec list, with the inner and index codecs of sharding, each checked to
    be ``{"name": str, "configuration": {...}}``."""
    found = []
    for codec in codecs:
        if isinstance(codec, str):
            codec = {"name": codec}
        if not isinstance(codec, dict) or not isinstance(codec.get("name"), str):
            raise StoreError(f"array {name!r}: a codec is {_short(codec)}, not a named codec")
        configuration = codec.get("configuration", {})
        if not isinstance(configuration, dict):
            raise StoreError(f"array {name!r}: codec {codec['name']!r} has configuration {_short(configuration)}")
        found.append(codec)
        for key in ("codecs", "index_codecs"):
            inner = configuration.get(key, [])
            if not isinstance(inner, list):
                raise StoreError(f"array {name!r}: {codec['name']}.{key} is not a list")
            found += _codecs(name, inner)
    return found


def _integers(name: str, field: str, value: Any, minimum: int) -> tuple[int, ...]:
    ok = (
        isinstance(value, list)
        and len(value) <= MAX_RANK
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)
    )
    if not ok:
        kind = "non-negative" if minimum == 0 else "positive"
        raise StoreError(
            f"array {name!r}: field {field!r} is {_short(value)}; it must be a list of at most "
            f"{MAX_RANK} {kind} integers, so the store is refused"
        )
    if value and value[0] > MAX_SAMPLES:
        raise StoreError(
            f"array {name!r}: field {field!r} is {_short(value)}: {value[0]:,} samples, more than "
            f"the {MAX_SAMPLES:,} a FER store may hold, so the store is refused"
        )
    return tuple(value)


def _same_rank(name: str, field: str, value: list[Any] | tuple[Any, ...], shape: tuple[int, ...]) -> None:
    if len(value) != len(shape):
        raise StoreError(f"array {name!r}: field {field!r} has {len(value)} entries for an array of rank {len(shape)}")


def _bounded(name: str, field: str, chunk: tuple[int, ...], data_type: str, limit: int) -> None:
    raw = math.prod(chunk) * ITEM_BYTES[data_type]
    if raw > limit:
        raise StoreError(
            f"array {name!r}: field {field!r} is {list(chunk)}, {raw:,} bytes a chunk, over the "
            f"limit of {limit:,}; the store is damaged or hostile and is refused"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
