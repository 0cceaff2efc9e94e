"""The store: its contract and everything that reads or writes it.

- :mod:`~pipeline.store.schema`: array names, shapes, dtypes, chunks; the schema check.
- :mod:`~pipeline.store.provenance`: the root attributes as a frozen dataclass.
- :mod:`~pipeline.store.access`: opening a store (any location) and asking what it holds.
- :mod:`~pipeline.store.writer`, :mod:`~pipeline.store.growth`: the template, shard writes,
  finalising; adding guidance types to a complete store.
- :mod:`~pipeline.store.location`, :mod:`~pipeline.store.metadata`,
  :mod:`~pipeline.store.bounded_codecs`: read-only opening of paths, zips and URLs, with the
  allow-list checks made before zarr reads anything.
- :mod:`~pipeline.store.shard_reader` and :mod:`~pipeline.store.shard_writer`: whole shards read
  and written without zarr-python's per-chunk Python; :mod:`~pipeline.store.checksums`:
  per-sample checksums, and :mod:`~pipeline.store.recorded_checksums`: every read checked
  against them; :mod:`~pipeline.store.lock`: one writer at a time.

The names most callers need are importable from here.
"""

from pipeline.store.access import (
    array_in,
    bytes_on_disk,
    growth_in_progress,
    open_store,
    provenance_of,
    read_array,
    read_provenance,
    store_exists,
    stored_guidance,
    undecided_faces,
)
from pipeline.store.provenance import ATTRS_KEY, SCHEMA_VERSION, Growth, Provenance
from pipeline.store.schema import USABLE_STATUSES, ArraySpec, Status, array_specs, shard_bounds, status_counts

__all__ = [
    "ATTRS_KEY",
    "SCHEMA_VERSION",
    "USABLE_STATUSES",
    "ArraySpec",
    "Growth",
    "Provenance",
    "Status",
    "array_in",
    "array_specs",
    "bytes_on_disk",
    "growth_in_progress",
    "open_store",
    "provenance_of",
    "read_array",
    "read_provenance",
    "shard_bounds",
    "status_counts",
    "store_exists",
    "stored_guidance",
    "undecided_faces",
]
