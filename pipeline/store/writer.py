"""Writing a store: the template, one shard at a time, then the final counts.

Writers own whole shards: the template is created once (:func:`prepare_store`), then each task
writes one shard's region of every array (:func:`write_shard`), ``status`` last, and
:func:`finalize_store` records counts and consolidates metadata. A run resumes the shards
:func:`pending_shards` names.
"""

from __future__ import annotations

import datetime as dt
import platform
import shutil
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec, ZstdCodec

from pipeline.config import PreprocessConfig, differing_keys
from pipeline.datasets.label_sets import label_sets_to_attrs
from pipeline.datasets.manifest import Manifest
from pipeline.errors import StoreError, StoreMismatchError
from pipeline.file_names import shown
from pipeline.landmark_scheme import FLIP_PERMUTATION
from pipeline.stages.box_mapping import BoxMapping
from pipeline.store.access import (
    array_in,
    channel_names,
    open_store,
    provenance_of,
    read_array,
    store_exists,
    stored_guidance,
)
from pipeline.store.checksums import fill_checksum, sample_checksums
from pipeline.store.provenance import ATTRS_KEY, Provenance
from pipeline.store.schema import (
    AROUSAL,
    CHANNELS_ATTR,
    CHECKSUM,
    DETECTION_ARRAYS,
    LABEL,
    MESSAGE,
    SHARD_FAILURE_PREFIX,
    SOURCE,
    SPLIT,
    STATUS,
    SUBJECT,
    VALENCE,
    VOTES,
    ArraySpec,
    Status,
    array_specs,
    checksum_columns,
    checksum_spec,
    samples_per_inner_chunk,
    shard_bounds,
    status_counts,
)
from pipeline.store.shard_writer import write_whole_shard

# zstd level of every chunk written. Against level 3 (bench/zstd_level.py, docs/benchmarks.md):
# at S = 112 decoding takes 31% less time and encoding 47% less for 6.6% more bytes; at S = 48
# decoding is the same, encoding 39% faster, 1.3% more bytes. Readers accept any level.
ZSTD_LEVEL = 1
LZ4_LEVEL = 5  # blosc's level for lz4 (its default)


def chunk_compressors(codec: str, dtype: np.dtype[Any] | str | type) -> list[BytesBytesCodec]:
    """The bytes-to-bytes codecs of a chunk of ``dtype`` values: ``codec`` (``"zstd"``, or
    ``"lz4"`` inside blosc, the Zarr v3 codec that carries it; multi-byte values byte-shuffled),
    then a crc32c checksum."""
    if codec == "lz4":
        itemsize = np.dtype(dtype).itemsize
        shuffle = BloscShuffle.shuffle if itemsize > 1 else BloscShuffle.noshuffle
        blosc = BloscCodec(cname="lz4", clevel=LZ4_LEVEL, shuffle=shuffle, typesize=itemsize, blocksize=0)
        return [blosc, Crc32cCodec()]
    return [ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec()]


def create_array(group: zarr.Group, spec: ArraySpec, n: int, shard_size: int, codec: str = "zstd") -> zarr.Array[Any]:
    """Create ``spec``'s array for ``n`` samples in ``group``: ``(n, *sample_shape)``, a
    compressor and crc32c on every chunk (:func:`chunk_compressors`: ``codec`` for per-sample
    tensors, zstd for the rest); tensors sharded by ``shard_size`` with inner chunks of
    :func:`~pipeline.store.schema.samples_per_inner_chunk` samples, columns one chunk per shard."""
    shape = (n, *spec.sample_shape)
    shard_len = max(1, min(shard_size, n))
    compressors = chunk_compressors(codec if spec.per_sample_chunks else "zstd", spec.dtype)
    if spec.per_sample_chunks:
        sample_bytes = int(np.prod(spec.sample_shape)) * np.dtype(spec.dtype).itemsize
        inner = samples_per_inner_chunk(sample_bytes, shard_len)
        chunks, shards = (inner, *spec.sample_shape), (shard_len, *spec.sample_shape)
    else:
        chunks, shards = (shard_len, *spec.sample_shape), None
    return group.create_array(
        spec.name,
        shape=shape,
        dtype=spec.dtype,
        chunks=chunks,
        shards=shards,
        compressors=compressors,
        fill_value=spec.fill_value,
        dimension_names=spec.dims,
        attributes=dict(spec.attributes),
    )


def library_versions() -> dict[str, str]:
    import cv2
    import dlib

    from pipeline import __version__

    return {
        "fer_guidance_store": __version__,
        "dlib": dlib.__version__,
        "opencv": cv2.__version__,
        "zarr": zarr.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def prepare_store(
    path: str | Path,
    manifest: Manifest,
    config: PreprocessConfig,
    models: dict[str, dict[str, str]],
    *,
    root: str | Path | None = None,
    overwrite: bool = False,
) -> bool:
    """Create the store template, or check that an existing store was made from the same inputs.

    Args:
        path: local directory of the store.
        manifest: the dataset's rows.
        config: this run's configuration.
        models: ``{"landmarks": {"file": ..., "sha256": ...}}`` of the model files used.
        root: the dataset root, recorded for people looking at the store (not hashed).
        overwrite: delete an existing store and start again.

    Returns:
        True if a new template was written, False if an existing matching store is resumed.

    Raises:
        StoreMismatchError: the store exists and its config, manifest or models differ; nothing is
            changed.
        StoreError: the path exists but is not a store of this schema.
    """
    path = Path(path)
    if path.exists():
        if not store_exists(path):
            if not (path.is_dir() and not any(path.iterdir())):
                raise StoreError(f"{path} exists and is not a Zarr store; choose another STORE path or delete it")
            path.rmdir()
        elif overwrite:
            open_store(path)  # refuse to delete a directory that is not a FER store
            shutil.rmtree(path)
        else:
            _check_resumable(path, manifest, config, models)
            _set_complete(path, False)
            return False
    _write_template(path, manifest, config, models, None if root is None else str(root))
    return True


def _check_resumable(
    path: Path, manifest: Manifest, config: PreprocessConfig, models: dict[str, dict[str, Any]]
) -> None:
    group = open_store(path)
    provenance = provenance_of(group)
    problems = []
    config_differences = differing_keys(provenance.preprocess_config.to_dict(), config.to_dict())
    if config_differences:
        problems.append("config differs (store vs this run): " + "; ".join(config_differences))
    if provenance.manifest_sha256 != manifest.sha256():
        problems.append(
            f"dataset manifest differs: the store holds {provenance.total} samples of "
            f"{provenance.dataset!r}, this run scanned {len(manifest)} samples of "
            f"{manifest.dataset!r} (different files, labels or splits)"
        )
    for role, stored in provenance.models.items():
        current = models.get(role, {})
        if stored.get("sha256") != current.get("sha256"):
            problems.append(f"{role} model differs: store used {stored}, this run {current}")
    lacking = [name for name in DETECTION_ARRAYS if name not in group]
    if lacking and pending_shards(path, config.shard_size):  # a complete store has nothing to write
        problems.append(
            f"it was created by an earlier fer-preprocess, without the arrays {', '.join(lacking)}; "
            "finish it with that version, or rebuild it with --overwrite"
        )
    hint = ""
    stored_types = set(provenance.preprocess_config.guidance.types) | set(stored_guidance(group))
    extra = [name for name in config.guidance.types if name not in stored_types]
    only_types_differ = [key.split(":")[0] for key in config_differences] == ["guidance.types"]
    if len(problems) == 1 and extra and only_types_differ:  # by types the store lacks: it can grow them
        hint = (
            f"\nTo add {', '.join(extra)} to this store, run `fer-preprocess {path} --guidance {','.join(extra)}` "
            "(no --dataset) once the store is complete."
        )
    if problems:
        raise StoreMismatchError(
            f"the store at {path} was built from other inputs, so it cannot be resumed:\n  - "
            + "\n  - ".join(problems)
            + "\nUse the same options to resume it, another STORE path, or --overwrite to rebuild it."
            + hint
        )


def _write_template(
    path: Path, manifest: Manifest, config: PreprocessConfig, models: dict[str, dict[str, Any]], root: str | None
) -> None:
    """Write the template (every array, the manifest columns, the provenance) beside ``path``
    and rename it into place, so a run killed while writing it leaves no half-made store."""
    partial = path.with_name(path.name + ".partial")
    if partial.exists():  # left by a run killed while writing the template; the caller holds the lock
        shutil.rmtree(partial)
    _write_template_at(partial, manifest, config, models, root)
    partial.rename(path)


def _write_template_at(
    path: Path, manifest: Manifest, config: PreprocessConfig, models: dict[str, dict[str, Any]], root: str | None
) -> None:
    n = len(manifest)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    n_votes = 0 if manifest.votes is None else manifest.votes.shape[1]
    specs = array_specs(config, n_votes, subjects=manifest.subject is not None)
    arrays = {spec.name: create_array(group, spec, n, config.shard_size, config.codec) for spec in specs}
    columns = checksum_columns(specs)
    create_array(group, checksum_spec(columns), n, config.shard_size)
    values = {
        SOURCE: text_column(manifest.source),
        LABEL: np.asarray(manifest.label, dtype=np.int16),
        SPLIT: np.asarray(manifest.split, dtype=np.uint8),
    }
    if manifest.valence is not None:
        values[VALENCE] = np.asarray(manifest.valence, dtype=np.float32)
    if manifest.arousal is not None:
        values[AROUSAL] = np.asarray(manifest.arousal, dtype=np.float32)
    if manifest.votes is not None:
        values[VOTES] = np.asarray(manifest.votes, dtype=np.float32)
        arrays[VOTES].attrs[CHANNELS_ATTR] = list(manifest.vote_names)
    if manifest.subject is not None:
        values[SUBJECT] = text_column(manifest.subject)
    if manifest.skip is not None:  # rows the dataset itself rules out: failed before any work
        skipped = np.array([bool(reason) for reason in manifest.skip])
        values[STATUS] = np.where(skipped, int(Status.FAILED), int(Status.PENDING)).astype(np.uint8)
        values[MESSAGE] = text_column(manifest.skip)
    for name, column_values in values.items():
        arrays[name][:] = column_values
    checksums = np.zeros((n, len(columns)), np.uint32)
    for spec in specs:
        column = columns.index(spec.name)
        if spec.name in values:
            checksums[:, column] = sample_checksums(values[spec.name])
        else:
            checksums[:, column] = fill_checksum(spec.sample_shape, spec.dtype, spec.fill_value)
    array_in(group, CHECKSUM)[:] = checksums
    provenance = Provenance(
        dataset=manifest.dataset,
        root=root,  # where the sources were read; informational, not part of any hash
        label_names=tuple(manifest.label_names),
        label_sets=label_sets_to_attrs(manifest.label_sets),
        landmark_flip_permutation=tuple(int(i) for i in FLIP_PERMUTATION),
        splits=tuple(manifest.splits),
        created=utc_now(),
        complete=False,
        counts={"total": n},
        config=config.to_dict(),
        config_sha256=config.sha256(),
        manifest_sha256=manifest.sha256(),
        models=models,
        versions=library_versions(),
    )
    write_provenance(group, provenance)


def text_column(texts: Iterable[object]) -> np.ndarray:
    """``(n,) object`` strings that UTF-8 can hold (file names' bytes that are not UTF-8 escaped)."""
    return np.asarray([shown(str(text)) for text in texts], dtype=object)


def write_provenance(group: zarr.Group, provenance: Provenance) -> None:
    """Replace the provenance of a store opened for writing."""
    group.attrs[ATTRS_KEY] = provenance.to_attrs()


def record_box_mapping(path: str | Path, mapping: BoxMapping) -> None:
    """Record in the provenance how the run maps the dataset's boxes (the caller holds the lock)."""
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    write_provenance(group, provenance_of(group).replace(box_mapping=mapping))


def utc_now() -> str:
    """The time now, as the provenance records times: UTC ISO-8601 to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _set_complete(path: Path, complete: bool) -> None:
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    write_provenance(group, provenance_of(group).replace(complete=complete))


def pending_shards(path: str | Path, shard_size: int) -> list[tuple[int, int]]:
    """Shards with at least one pending sample, whose ``status`` chunk cannot be read, or whose
    task kept failing in an earlier run (:func:`record_failed_shard`: every run retries them).

    A status chunk left half-written by a killed process fails its checksum and counts as pending,
    so the shard is computed again.
    """
    group = open_store(path)

    def done(start: int, stop: int, status: np.ndarray) -> bool:
        return not np.any(status == Status.PENDING) and not (
            np.any(status == Status.FAILED)
            and any(str(m).startswith(SHARD_FAILURE_PREFIX) for m in read_array(group, MESSAGE, slice(start, stop)))
        )

    return unfinished_shards(array_in(group, STATUS), shard_size, done)


def unfinished_shards(
    array: zarr.Array[Any], shard_size: int, done: Callable[[int, int, np.ndarray], bool]
) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the shards whose values of ``array`` (``(N,)``, one chunk per
    shard) cannot be read or do not satisfy ``done(start, stop, values)``."""
    unfinished = []
    for start, stop in shard_bounds(array.shape[0], shard_size):
        try:
            values = np.asarray(array[start:stop])
        except Exception:  # noqa: BLE001 - any decode error means "not finished"
            unfinished.append((start, stop))
            continue
        if not done(start, stop, values):
            unfinished.append((start, stop))
    return unfinished


def record_failed_shard(path: str | Path, start: int, stop: int, error: str) -> None:
    """Mark every sample of a shard whose task kept failing as ``failed``, the error in
    ``message``, so the rest of the store completes; the next run on the store retries the shard."""
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    n = stop - start
    message = text_column([SHARD_FAILURE_PREFIX + error] * n)
    status = np.full(n, int(Status.FAILED), dtype=np.uint8)
    array_in(group, MESSAGE)[start:stop] = message
    record_checksums(group, start, {MESSAGE: message, STATUS: status})
    array_in(group, STATUS)[start:stop] = status


def record_checksums(group: zarr.Group, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Record the checksums of ``arrays`` (name -> ``(n, ...)`` values written at ``start``) in the
    ``checksum`` array, keeping the other columns of those samples. The caller owns the shard. An
    array without a column (a guidance type newer than the store) goes unrecorded."""
    if CHECKSUM not in group:  # a store written before checksums were recorded
        return
    checksum = array_in(group, CHECKSUM)
    columns = channel_names(checksum)
    n = len(next(iter(arrays.values())))
    recorded = np.asarray(checksum[start : start + n])
    for name, values in arrays.items():
        if name in columns:
            recorded[:, columns.index(name)] = sample_checksums(np.asarray(values))
    checksum[start : start + n] = recorded


def write_shard(path: str | Path, start: int, arrays: dict[str, np.ndarray], status: np.ndarray) -> None:
    """Write one shard's region of every computed array, then its ``status``.

    Args:
        path: local store directory.
        start: first sample index of the shard.
        arrays: name -> ``(n, ...)`` values for each name in :func:`computed_arrays`.
        status: ``(n,) uint8`` status codes, written last: a shard counts as done only once every
            other array of it is on disk.
    """
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    stop = start + len(status)
    arrays = {name: text_column(values) if name == MESSAGE else values for name, values in arrays.items()}
    write_regions(path, group, start, arrays)
    record_checksums(group, start, {**arrays, STATUS: status})
    array_in(group, STATUS)[start:stop] = status


def write_regions(path: str | Path, group: zarr.Group, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Write each of ``arrays`` (name -> ``(n, ...)`` values) from sample ``start``: a whole shard
    of a tensor in one piece (:mod:`pipeline.store.shard_writer`), anything else through zarr."""
    for name, values in arrays.items():
        array = array_in(group, name)
        if not write_whole_shard(path, array, start, np.asarray(values)):
            array[start : start + len(values)] = values


def finalize_store(path: str | Path) -> dict[str, int]:
    """Record status counts and ``complete`` (true when nothing is pending), consolidate metadata."""
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    counts = status_counts(read_array(group, STATUS))
    complete = counts[Status.PENDING.label] == 0
    write_provenance(group, provenance_of(group).replace(counts=counts, complete=complete))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(path))
    return counts
