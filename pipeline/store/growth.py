"""Adding guidance types to a complete store, shard by shard and resumable.

:func:`begin_growth` adds the new types' arrays, a ``growing`` mark array (one flag per sample)
and a ``growing_errors`` array; each task writes a shard of the new arrays, the renderers' errors,
and then its marks (:func:`write_grown_shard`). Once every shard is written, :func:`finish_growth`
checks each type's share of failed samples: within :data:`MAX_FAILED_SHARE` it drops the marks,
keeps the errors in ``guidance_errors`` and records the addition in the provenance under
``guidance_added``; beyond it, it undoes the growth (:func:`undo_growth`) so that the store is as
it was, and raises. Until then the new types are listed under ``growing`` and
:func:`~pipeline.store.access.stored_guidance` does not offer them. Adding guidance never changes
a sample's status or message.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import zarr

from pipeline.errors import GuidanceFailedError, StoreError
from pipeline.store.access import array_in, channel_names, open_store, provenance_of, read_array
from pipeline.store.provenance import Growth
from pipeline.store.schema import (
    CHECKSUM,
    GROWTH_ERRORS,
    GROWTH_ERRORS_SPEC,
    GROWTH_MARK,
    GROWTH_MARK_SPEC,
    GUIDANCE_ERRORS,
    GUIDANCE_ERRORS_SPEC,
    STATUS,
    USABLE_STATUSES,
    guidance_specs,
)
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

# A type whose renderer fails on more than this share of the usable samples (and on more than
# one) is not added: such a failure is the model's or the renderer's, not a few odd faces'.
MAX_FAILED_SHARE = 0.01


def begin_growth(path: str | Path, types: tuple[str, ...], models: dict[str, dict[str, str]]) -> None:
    """Add empty arrays for guidance ``types`` to a complete store, with a ``growing`` mark array
    (``(N,) uint8``, 1 where a shard's new guidance is written) and a ``growing_errors`` array,
    and list them under ``growing`` in the provenance with the model files they use. If this
    growth already began, only adds ``growing_errors`` where a growth begun before it existed
    lacks it (here, once, not in the shard tasks that write it).

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
        if GROWTH_ERRORS not in group:
            create_array(
                group, GROWTH_ERRORS_SPEC, array_in(group, STATUS).shape[0], provenance.preprocess_config.shard_size
            )
        return
    present = [name for name in types if name in group]
    if present:
        raise StoreError(f"{path} already holds {', '.join(present)}")
    config = provenance.preprocess_config
    n = array_in(group, STATUS).shape[0]
    for spec in guidance_specs(types, config):
        create_array(group, spec, n, config.shard_size, config.codec)
    create_array(group, GROWTH_MARK_SPEC, n, config.shard_size)
    create_array(group, GROWTH_ERRORS_SPEC, n, config.shard_size)
    write_provenance(group, provenance.replace(growing=Growth(tuple(types), models, utc_now())))


def growth_pending_shards(path: str | Path) -> list[tuple[int, int]]:
    """Shards of an unfinished growth whose marks are not all set (or cannot be read)."""
    group = open_store(path)
    shard_size = provenance_of(group).preprocess_config.shard_size
    return unfinished_shards(
        array_in(group, GROWTH_MARK), shard_size, lambda start, stop, marks: bool(np.all(marks == 1))
    )


def write_grown_shard(path: str | Path, start: int, arrays: dict[str, np.ndarray], errors: np.ndarray) -> None:
    """Write one shard's region of each new guidance array and of the renderers' errors, then the
    shard's growth marks.

    Args:
        arrays: guidance type -> ``(n, ...)`` values; every array has the same n.
        errors: ``(n,) str``, per sample the ``type: error`` lines of the types that failed on it
            ("" where none did).
    """
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    n = len(next(iter(arrays.values())))
    write_regions(path, group, start, arrays)
    record_checksums(group, start, arrays)
    if any(errors):
        array_in(group, GROWTH_ERRORS)[start : start + n] = np.asarray(errors, dtype=object)
    array_in(group, GROWTH_MARK)[start : start + n] = np.ones(n, dtype=np.uint8)


def _failures(errors: np.ndarray, types: tuple[str, ...]) -> tuple[dict[str, int], dict[str, str]]:
    """Per type, the samples whose ``errors`` (``(N,) str``, ``type: error`` lines) name it, and
    its first error."""
    counts, first = dict.fromkeys(types, 0), dict[str, str]()
    for text in errors[errors != ""]:
        for line in str(text).splitlines():
            name, _, error = line.partition(": ")
            if name in counts:
                counts[name] += 1
                first.setdefault(name, error)
    return counts, first


def finish_growth(path: str | Path) -> Growth | None:
    """If every shard of the growth is written: check each type's failures, then drop the marks,
    keep the errors in ``guidance_errors``, move the growth from ``growing`` to the
    ``guidance_added`` list of the provenance (types, model files, library versions, start and
    end times, failures per type), recount statuses and consolidate metadata. Returns the
    record, or None while shards are still pending.

    Raises:
        GuidanceFailedError: a type failed on more than :data:`MAX_FAILED_SHARE` of the usable
            samples and on more than one; the growth is undone first (:func:`undo_growth`), so
            the store is as it was.
    """
    if growth_pending_shards(path):
        return None
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    provenance = provenance_of(group)
    errors = read_array(group, GROWTH_ERRORS)
    counts, first = _failures(errors, provenance.growing_types)
    usable = int(np.isin(read_array(group, STATUS), [int(code) for code in USABLE_STATUSES]).sum())
    too_many = {name: count for name, count in counts.items() if count > max(1, MAX_FAILED_SHARE * usable)}
    if too_many:
        undo_growth(path)
        causes = "; ".join(
            f"{name} failed on {count} of {usable} usable samples ({count / max(usable, 1):.0%}), "
            f"first with {first[name]}"
            for name, count in too_many.items()
        )
        raise GuidanceFailedError(
            f"{causes}. More than {MAX_FAILED_SHARE:.0%} of the samples failing is the model's or the "
            f"renderer's fault, so nothing was added and {path} is as it was before this run. Fix the "
            "cause (for a saliency network: does it run on one aligned face of this store's size?), or "
            "leave the type out of --guidance, then run again."
        )
    if any(counts.values()):
        if GUIDANCE_ERRORS not in group:
            create_array(group, GUIDANCE_ERRORS_SPEC, len(errors), provenance.preprocess_config.shard_size)
        kept = read_array(group, GUIDANCE_ERRORS)
        array_in(group, GUIDANCE_ERRORS)[:] = np.asarray(
            ["\n".join(line for line in (old, new) if line) for old, new in zip(kept, errors)], dtype=object
        )
    del group[GROWTH_MARK]
    del group[GROWTH_ERRORS]
    assert provenance.growing is not None  # growth_pending_shards found the growth
    record = dataclasses.replace(
        provenance.growing,
        finished=utc_now(),
        versions=library_versions(),
        failed={k: v for k, v in counts.items() if v},
    )
    write_provenance(group, provenance.replace(growing=None, guidance_added=(*provenance.guidance_added, record)))
    finalize_store(path)
    return record


def undo_growth(path: str | Path) -> None:
    """Remove what the unfinished growth wrote: the new types' arrays, their checksums, the marks
    and errors, and the ``growing`` record, then consolidate the metadata again. The store's files
    are then what they were before the growth began."""
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    provenance = provenance_of(group)
    types = provenance.growing_types
    for name in (*types, GROWTH_MARK, GROWTH_ERRORS):
        if name in group:
            del group[name]
    if CHECKSUM in group:
        columns = channel_names(array_in(group, CHECKSUM))
        dropped = [columns.index(name) for name in types if name in columns]
        if dropped:
            checksum = read_array(group, CHECKSUM)
            if checksum[:, dropped].any():
                checksum[:, dropped] = 0
                array_in(group, CHECKSUM)[:] = checksum
    write_provenance(group, provenance.replace(growing=None))
    finalize_store(path)
