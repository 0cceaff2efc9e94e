"""Adding guidance types to a complete store, shard by shard and resumable.

:func:`begin_growth` adds the new types' arrays and a ``growing`` mark array (one flag per
sample), each task writes a shard of the new arrays and then its marks
(:func:`write_grown_shard`), and :func:`finish_growth` drops the marks and records the addition
in the provenance under ``guidance_added``. Until then the new types are listed under ``growing``
and :func:`~pipeline.store.access.stored_guidance` does not offer them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import zarr

from pipeline.errors import StoreError
from pipeline.store.access import open_store, provenance_of
from pipeline.store.provenance import Growth
from pipeline.store.schema import GROWTH_MARK, GROWTH_MARK_SPEC, MESSAGE, STATUS, guidance_specs
from pipeline.store.writer import (
    create_array,
    finalize_store,
    library_versions,
    record_checksums,
    unfinished_shards,
    utc_now,
    write_provenance,
    write_regions,
)


def begin_growth(path: str | Path, types: tuple[str, ...], models: dict[str, dict[str, str]]) -> None:
    """Add empty arrays for guidance ``types`` to a complete store, with a ``growing`` mark array
    (``(N,) uint8``, 1 where a shard's new guidance is written), and list them under ``growing``
    in the provenance with the model files they use. Does nothing if this growth already began.

    Raises:
        StoreError: another growth is unfinished, or a type is already stored.
    """
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    provenance = provenance_of(group)
    growing = provenance.growing
    if growing is not None:
        if growing.types != tuple(types) or growing.models != models:
            raise StoreError(
                f"{path} is already adding {', '.join(growing.types)} with the model files "
                f"{growing.models}; run the same command again (same --guidance and model files) to finish it"
            )
        return
    present = [name for name in types if name in group]
    if present:
        raise StoreError(f"{path} already holds {', '.join(present)}")
    config = provenance.preprocess_config
    n = group[STATUS].shape[0]
    for spec in guidance_specs(types, config):
        create_array(group, spec, n, config.shard_size, config.codec)
    create_array(group, GROWTH_MARK_SPEC, n, config.shard_size)
    write_provenance(group, provenance.replace(growing=Growth(tuple(types), models, utc_now())))


def growth_pending_shards(path: str | Path) -> list[tuple[int, int]]:
    """Shards of an unfinished growth whose marks are not all set (or cannot be read)."""
    group = open_store(path)
    shard_size = provenance_of(group).preprocess_config.shard_size
    return unfinished_shards(group[GROWTH_MARK], shard_size, lambda start, stop, marks: bool(np.all(marks == 1)))


def write_grown_shard(path: str | Path, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Write one shard's region of each new guidance array (and ``status``/``message`` where a
    sample failed), then the shard's growth marks.

    Args:
        arrays: name -> ``(n, ...)`` values; every array has the same n.
    """
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    n = len(next(iter(arrays.values())))
    arrays = {name: np.asarray(values, dtype=object) if name == MESSAGE else values for name, values in arrays.items()}
    write_regions(path, group, start, arrays)
    record_checksums(group, start, arrays)
    group[GROWTH_MARK][start : start + n] = np.ones(n, dtype=np.uint8)


def finish_growth(path: str | Path) -> Growth | None:
    """If every shard of the growth is written: drop the marks, move the growth from ``growing`` to
    the ``guidance_added`` list of the provenance (types, model files, library versions, start and
    end times), recount statuses and consolidate metadata. Returns the record, or None while
    shards are still pending."""
    if growth_pending_shards(path):
        return None
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    del group[GROWTH_MARK]
    provenance = provenance_of(group)
    record = dataclasses.replace(provenance.growing, finished=utc_now(), versions=library_versions())
    write_provenance(group, provenance.replace(growing=None, guidance_added=(*provenance.guidance_added, record)))
    finalize_store(path)
    return record
