"""``fer-store verify``: prove a store is intact and complete, or say what is wrong where.

Checks, in order: the store opens, which means its metadata passed every check made before zarr
reads anything (allow-list, names, shapes and chunks as the schema lays them out, every array's own
``zarr.json`` equal to its consolidated copy; each objection is a fault, and nothing is read from
a store that fails them); the provenance's config hash matches its config; every array the schema
and config call for is there, with its dimension names; no sample is pending and the recorded
counts match ``status``; no guidance growth is unfinished; every chunk of every array decodes,
which checks its crc32c checksum (and the shard index's), so a flipped byte in any chunk is found;
and every sample's values match the checksums recorded when they were written
(:mod:`pipeline.store.checksums`), so a chunk file deleted, replaced or moved is found too. In a
zipped store, a member that is neither metadata nor a chunk of an array is named: nothing reads
or checks it.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from pipeline.config import config_sha256
from pipeline.errors import FerStoreError, StoreError, StoreRefusedError
from pipeline.progress import QUIET, Progress
from pipeline.store import Provenance, Status, array_in, array_specs, open_store, provenance_of, status_counts
from pipeline.store.checksums import sample_checksums
from pipeline.store.schema import (
    CHANNELS_ATTR,
    CHECKSUM,
    FACE_SCORE,
    FACES_DETECTED,
    STATUS,
    SUBJECT,
    VOTES,
    guidance_specs,
)
from pipeline.store.shard_format import ChunkDamagedError, samples_per_shard
from pipeline.store.shard_reader import read_shards


@dataclass(frozen=True)
class Fault:
    """What is wrong (``problem``) where. ``unfinished``: not damage, a build that did not finish
    (the same command resumes it)."""

    where: str
    problem: str
    unfinished: bool = False

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


def verify_store(location: str, progress: Progress = QUIET) -> list[Fault]:
    """Every fault found in the store at ``location`` (empty: intact and complete)."""
    try:
        group = open_store(location)
    except StoreRefusedError as error:
        return [Fault("metadata", problem) for problem in error.problems]
    except FerStoreError as error:
        return [Fault("store", str(error))]
    provenance = provenance_of(group)  # parsed on opening: its config and counts are readable
    faults = _metadata_faults(location, group, provenance)
    checksums = _recorded_checksums(group, faults, progress)
    if checksums is None:
        progress.line(
            "note: no per-sample checksums (a store written before they were recorded): a deleted or moved "
            "chunk file cannot be told from samples never written"
        )
    status_parts = []
    for name in sorted(set(group.array_keys()) - {CHECKSUM}):
        progress.line(f"checking {name}")
        status_parts += _array_faults(
            array_in(group, name), None if checksums is None else checksums.get(name, {}), faults
        )
    if STATUS in group and not any(f.where.startswith(f"{STATUS}/") for f in faults):
        counts = status_counts(np.concatenate(status_parts))
        pending = counts[Status.PENDING.label]
        if not provenance.complete:  # a build that did not finish: its counts and metadata come at the end
            faults = [fault for fault in faults if fault.where != "zarr.json"]
            faults.append(
                Fault(
                    "build",
                    f"incomplete: {pending} of {provenance.counts['total']} samples pending; the build did not finish "
                    "(interrupted, or still running): run the same fer-preprocess command again to complete it",
                    unfinished=True,
                )
            )
        elif pending:
            faults.append(Fault("status", f"{pending} samples pending in a store marked complete"))
        if provenance.complete and any(provenance.counts.get(key) != value for key, value in counts.items()):
            faults.append(
                Fault("provenance", f"recorded counts {provenance.counts} differ from the status array's {counts}")
            )
    return faults


def _metadata_faults(location: str, group: zarr.Group, provenance: Provenance) -> list[Fault]:
    """What is wrong beyond what opening checked: metadata not consolidated, zip members no array
    reads, a config that differs from its hash, arrays missing or with other dimension names, an
    unfinished growth."""
    faults: list[Fault] = []
    if group.metadata.consolidated_metadata is None:
        faults.append(Fault("zarr.json", "no consolidated metadata (the run that built the store did not finish)"))
    if str(location).endswith(".zip"):
        faults += _unread_zip_members(str(location), group)
    if config_sha256(provenance.config) != provenance.config_sha256:
        faults.append(Fault("provenance", "config_sha256 does not match the recorded config"))
    config = provenance.preprocess_config
    n_votes = array_in(group, VOTES).shape[1] if VOTES in group else 0
    detections = FACES_DETECTED in group or FACE_SCORE in group  # absent from stores of before they existed
    expected = {spec.name: spec for spec in array_specs(config, n_votes, SUBJECT in group, detections)}
    expected.update({spec.name: spec for spec in guidance_specs(provenance.added_types, config)})
    for name, spec in expected.items():  # shapes, data types and chunks were checked on opening
        if name not in group:
            faults.append(Fault(name, "missing array"))
        elif (dims := tuple(getattr(group[name].metadata, "dimension_names", None) or ())) != spec.dims:
            faults.append(Fault(name, f"dimension names {dims or None}, expected {spec.dims}"))
    if provenance.growing is not None:
        adding = ", ".join(provenance.growing_types)
        faults.append(
            Fault(
                "build",
                f"adding {adding} is unfinished: run the same fer-preprocess --guidance command again to finish it",
                unfinished=True,
            )
        )
    return faults


def _array_faults(
    array: zarr.Array[Any], recorded: dict[int, np.ndarray] | None, faults: list[Fault]
) -> list[np.ndarray]:
    """Read every shard of ``array``, adding to ``faults`` each that cannot be read or whose
    samples differ from their ``recorded`` checksums (shard start -> ``(n,) uint32``; None: none
    recorded). Returns the values of the shards that read (for ``status``, the counts)."""
    block = samples_per_shard(array)
    values_read = []
    for start in range(0, array.shape[0], block):
        stop = min(start + block, array.shape[0])
        where = f"{shard_key(array, start // block)} (samples {start}-{stop - 1})"
        try:
            values = read_shards({array.basename: array}, [start // block])[array.basename][0]
        except ChunkDamagedError as error:  # the shard reader says where: the file, or a part of it
            faults.append(Fault(str(error.location), error.problem))
            continue
        except StoreError as error:
            faults.append(Fault(where, str(error)))
            continue
        except Exception as error:  # noqa: BLE001 - a damaged chunk read by zarr raises whatever its codec raises
            faults.append(Fault(where, f"{type(error).__name__}: {error}"))
            continue
        if array.basename == STATUS:
            values_read.append(values)
        expected = None if recorded is None else recorded.get(start)
        if expected is not None:
            differing = np.flatnonzero(sample_checksums(values) != expected)
            if len(differing):
                faults.append(
                    Fault(
                        where,
                        f"{len(differing)} of {stop - start} samples differ from what was written "
                        f"(first: sample {start + differing[0]}): the chunk file was deleted, "
                        "replaced or moved",
                    )
                )
    return values_read


def shard_key(array: zarr.Array[Any], shard: int) -> str:
    """The store key of ``array``'s shard file ``shard``, by zarr's own chunk-key encoding."""
    return f"{array.path}/{array.metadata.encode_chunk_key((shard,) + (0,) * (array.ndim - 1))}"


def _unread_zip_members(path: str, group: zarr.Group) -> list[Fault]:
    """A fault naming the members of the zip at ``path`` that no array of ``group`` reads (files
    that are neither metadata nor one of an array's chunks): verify checks what it reads only."""
    read = {"zarr.json"}
    for name in group.array_keys():
        metadata = array_in(group, name).metadata
        read.add(f"{name}/zarr.json")
        read.update(
            f"{name}/{metadata.encode_chunk_key(coords)}"
            for coords in metadata.chunk_grid.all_chunk_coords(metadata.shape)
        )
    with zipfile.ZipFile(path) as archive:
        unread = [member for member in archive.namelist() if member not in read and not member.endswith("/")]
    if not unread:
        return []
    shown = ", ".join(unread[:5]) + (f" and {len(unread) - 5} more" if len(unread) > 5 else "")
    members = f"{len(unread)} member{'s' if len(unread) > 1 else ''}"
    return [Fault("zip", f"{members} that no array reads, so nothing checks them: {shown}")]


def _recorded_checksums(
    group: zarr.Group, faults: list[Fault], progress: Progress
) -> dict[str, dict[int, np.ndarray]] | None:
    """``{array: {shard start: (n,) uint32 checksums}}`` as recorded when the samples were written;
    None for a store without them. A checksum chunk that cannot be read, or that holds none for an
    array, is a fault and leaves that shard unchecked."""
    if CHECKSUM not in group:
        return None
    progress.line(f"checking {CHECKSUM}")
    array = array_in(group, CHECKSUM)
    named = array.attrs.get(CHANNELS_ATTR, [])
    columns = [str(name) for name in named] if isinstance(named, list) else []
    if len(columns) != array.shape[1] or len(set(columns)) != len(columns):
        faults.append(Fault(CHECKSUM, f"its 'channels' attribute does not name its {array.shape[1]} columns"))
        return {}
    block = array.chunks[0]
    found: dict[str, dict[int, np.ndarray]] = {name: {} for name in columns if name in group}
    for start in range(0, array.shape[0], block):
        stop = min(start + block, array.shape[0])
        try:
            values = np.asarray(array[start:stop])
        except Exception as error:  # noqa: BLE001 - as for any other chunk
            faults.append(
                Fault(
                    f"{shard_key(array, start // block)} (samples {start}-{stop - 1})",
                    f"{type(error).__name__}: {error}",
                )
            )
            continue
        for name in found:
            recorded = values[:, columns.index(name)]
            if not recorded.any():  # never recorded: the chunk file is missing, or the array newer than the store
                faults.append(Fault(f"{CHECKSUM} (samples {start}-{stop - 1})", f"no checksums of {name!r} recorded"))
                continue
            found[name][start] = recorded
    return found
