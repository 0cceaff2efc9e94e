"""The store schema (v1, Zarr format 3): the only module that knows array names, dtypes and chunks.

Layout: one group; per-sample arrays share the leading ``sample`` dimension of length N.
Tensor arrays are sharded along ``sample`` by ``shard_size`` with a few samples per inner chunk,
so a whole shard is one file and one sample can still be read alone; small columns have one chunk
per shard. Every chunk is zstd-compressed and carries a crc32c checksum. Provenance lives in the root
attributes under :data:`ATTRS_KEY`. Nothing in a store needs pickle to read.

Writers own whole shards: the template is created once (:func:`prepare_store`), then each task
writes one shard's region of every array (:func:`write_shard`), ``status`` last, and
:func:`finalize_store` records counts and consolidates metadata.

A complete store grows guidance types the same way: :func:`begin_growth` adds their arrays and a
``growing`` mark array (one flag per sample), each task writes a shard of the new arrays and then
its marks (:func:`write_grown_shard`), and :func:`finish_growth` drops the marks and records the
addition in the provenance under ``guidance_added``. Until then the new types are listed under
``growing`` and :func:`stored_guidance` does not offer them.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import platform
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from pipeline.config import PreprocessConfig, differing_keys
from pipeline.datasets.label_sets import label_sets_to_attrs
from pipeline.datasets.manifest import Manifest
from pipeline.errors import StoreError, StoreMismatchError
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.sample_checksums import fill_checksum, sample_checksums
from pipeline.stages.landmarks import FLIP_PERMUTATION
from pipeline.store_location import open_group_readonly
from pipeline.store_metadata import MAX_SAMPLES, ArrayLayout

SCHEMA_VERSION = 1
ATTRS_KEY = "fer_store"


class Status(enum.IntEnum):
    """Per-sample outcome stored in the ``status`` array."""

    PENDING = 0
    OK = 1  # face found by the detector
    OK_PRIOR = 2  # aligned from a prior box (dataset box or full frame)
    NO_FACE = 3
    UNREADABLE = 4
    FAILED = 5

    @property
    def label(self) -> str:
        return self.name.lower()


USABLE_STATUSES = (Status.OK, Status.OK_PRIOR)


@dataclass(frozen=True)
class ArraySpec:
    """One array of the schema.

    sample_shape: the shape after the leading sample axis.
    per_sample_chunks: True for tensors (sharded, a few samples per inner chunk, see
        :func:`samples_per_inner_chunk`), False for small columns (one chunk per shard).
    channels: names of the entries of the axis after ``sample``, stored as the ``channels``
        attribute.
    flip_permutation: for guidance, the channel a horizontal flip maps each channel to, stored as
        the ``flip_permutation`` attribute (absent: each channel maps onto itself).
    """

    name: str
    dims: tuple[str, ...]
    dtype: Any
    sample_shape: tuple[int, ...]
    fill_value: Any
    per_sample_chunks: bool
    channels: tuple[str, ...] | None = None
    flip_permutation: tuple[int, ...] | None = None

    @property
    def attributes(self) -> dict[str, list]:
        attributes = {"channels": list(self.channels)} if self.channels else {}
        if self.flip_permutation is not None:
            attributes["flip_permutation"] = list(self.flip_permutation)
        return attributes


BASE_COMPUTED_ARRAYS = ("image", "landmarks", "landmarks_src", "box_src", "aligned_from_src")
# What the face detector saw in each sample (every status): how many faces, the kept one's score.
DETECTION_ARRAYS = ("faces_detected", "face_score")
# The message of an ok sample whose photo shows several faces and no dataset box chose among them.
SEVERAL_FACES_PREFIX = "several faces found"


def several_faces_message(faces: int, score: float) -> str:
    """The message of a sample whose largest of ``faces`` detections was kept for lack of a box."""
    return (f"{SEVERAL_FACES_PREFIX} ({faces}); the largest was kept (detector score {score:.2f}), "
            "as no dataset box says which person is meant")  # fmt: skip


def guidance_spec(name: str, aligned_size: int, guidance_size: int) -> ArraySpec:
    """How guidance type ``name`` is stored: maps ``(N, C, H, H) uint8`` with dims
    ``(sample, <name>_channel, gy, gx)``, boxes ``(N, R, 4) float32`` with dims
    ``(sample, region, edge)``."""
    kind = GUIDANCE_TYPES[name]
    if kind.boxes:
        return ArraySpec(name, ("sample", "region", "edge"), "float32", (len(kind.channels), 4), 0.0,
                         per_sample_chunks=False, channels=kind.channels, flip_permutation=kind.flip_permutation)  # fmt: skip
    return ArraySpec(
        name, ("sample", f"{name}_channel", "gy", "gx"), "uint8",
        (len(kind.channels), guidance_size, guidance_size), 0, per_sample_chunks=True,
        channels=kind.channels, flip_permutation=kind.flip_permutation,
    )  # fmt: skip


def guidance_specs(types: tuple[str, ...], config: PreprocessConfig) -> tuple[ArraySpec, ...]:
    """The arrays of guidance ``types`` at ``config``'s aligned and guidance sizes."""
    return tuple(guidance_spec(name, config.align.size, config.guidance.size) for name in types)


def array_specs(
    config: PreprocessConfig, n_votes: int = 0, subjects: bool = False, detections: bool = True
) -> tuple[ArraySpec, ...]:
    """Every array a store built with ``config`` holds: the aligned face and landmarks, one array
    per guidance type in ``config.guidance.types``, the detector's face count and score, the
    manifest's columns; ``votes`` only when the dataset has ``n_votes`` > 0 vote columns,
    ``subject`` only when it names the person in each sample. ``detections=False`` describes a
    store written before the detection arrays existed."""
    s, c = config.align.size, config.align.channels
    tensor = dict(per_sample_chunks=True)
    column = dict(per_sample_chunks=False)
    specs = [
        ArraySpec("image", ("sample", "channel", "y", "x"), "uint8", (c, s, s), 0, **tensor),
        ArraySpec("landmarks", ("sample", "landmark", "xy"), "float32", (68, 2), 0.0, **tensor),
        ArraySpec("landmarks_src", ("sample", "landmark", "xy"), "float32", (68, 2), 0.0, **tensor),
        ArraySpec("box_src", ("sample", "edge"), "float32", (4,), 0.0, **column),
        ArraySpec("aligned_from_src", ("sample", "row", "col"), "float32", (2, 3), 0.0, **column),
        *guidance_specs(config.guidance.types, config),
        *(
            (ArraySpec("faces_detected", ("sample",), "uint8", (), 0, **column),
             ArraySpec("face_score", ("sample",), "float32", (), float("nan"), **column))
            if detections else ()
        ),  # fmt: skip
        ArraySpec("label", ("sample",), "int16", (), -1, **column),
        ArraySpec("valence", ("sample",), "float32", (), float("nan"), **column),
        ArraySpec("arousal", ("sample",), "float32", (), float("nan"), **column),
        ArraySpec("split", ("sample",), "uint8", (), 0, **column),
        ArraySpec("status", ("sample",), "uint8", (), int(Status.PENDING), **column),
        ArraySpec("source", ("sample",), str, (), "", **column),
        ArraySpec("message", ("sample",), str, (), "", **column),
    ]
    if n_votes:
        specs.append(ArraySpec("votes", ("sample", "vote_class"), "float32", (n_votes,), 0.0, **column))
    if subjects:
        specs.append(ArraySpec("subject", ("sample",), str, (), "", **column))
    return tuple(specs)


# Per sample and per array, the CRC-32 of the values written (pipeline.sample_checksums); its
# ``channels`` attribute names the array of each column. Absent from stores written before it.
CHECKSUM = "checksum"


def checksum_spec(columns: tuple[str, ...]) -> ArraySpec:
    """The ``checksum`` array: ``(N, len(columns)) uint32``, 0 where nothing is recorded."""
    return ArraySpec(CHECKSUM, ("sample", "checksummed_array"), "uint32", (len(columns),), 0,
                     per_sample_chunks=False, channels=columns)  # fmt: skip


def checksum_columns(specs: tuple[ArraySpec, ...]) -> tuple[str, ...]:
    """The arrays a new store records checksums of: its own other than guidance, then every guidance
    type in catalogue order (those it holds and those it could grow), so that a store grown to
    more types has the columns of one built with them."""
    return tuple(spec.name for spec in specs if spec.name not in GUIDANCE_TYPES) + tuple(GUIDANCE_TYPES)


def computed_arrays(config: PreprocessConfig) -> tuple[str, ...]:
    """Arrays a shard task computes and writes (everything else comes from the manifest; then
    ``status``, last)."""
    return (*BASE_COMPUTED_ARRAYS, *config.guidance.types, *DETECTION_ARRAYS, "message")


# Inner chunks of tensor arrays hold a few samples, up to this many raw bytes: each zarr chunk
# costs about 0.25 ms of Python to read or write, so one-sample chunks would cost more than the
# guidance computation itself (measured: 0.30 ms/sample/array at 1 sample per 48x48 chunk, 0.03
# ms at 16), while one sample can still be read without decoding a whole shard. 16 samples is
# also where whole-shard reads stop gaining and random single-sample reads start losing
# (bench/inner_chunks.py; docs/benchmarks.md), so the byte cap lets a 112x112 gray map hold 16.
INNER_CHUNK_BYTES = 256 * 1024
MAX_SAMPLES_PER_INNER_CHUNK = 16


def samples_per_inner_chunk(sample_bytes: int, shard_len: int) -> int:
    """Largest power of two <= 16 that divides ``shard_len`` and keeps a chunk under 256 KiB."""
    count = 1
    while (
        count * 2 <= MAX_SAMPLES_PER_INNER_CHUNK
        and shard_len % (count * 2) == 0
        and count * 2 * sample_bytes <= INNER_CHUNK_BYTES
    ):
        count *= 2
    return count


def _create_array(group: zarr.Group, spec: ArraySpec, n: int, shard_size: int) -> zarr.Array:
    shape = (n, *spec.sample_shape)
    shard_len = max(1, min(shard_size, n))
    compressors = [ZstdCodec(level=3), Crc32cCodec()]
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
        attributes=spec.attributes,
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


def store_exists(path: str | Path) -> bool:
    return (Path(path) / "zarr.json").is_file()


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
                raise StoreError(
                    f"{path} exists and is not a Zarr store; choose another STORE path or delete it"
                )
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


def _check_resumable(path: Path, manifest: Manifest, config: PreprocessConfig, models) -> None:
    provenance = read_provenance(path)
    problems = []
    if provenance["config_sha256"] != config.sha256():
        diffs = differing_keys(provenance["config"], config.to_dict())
        problems.append("config differs (store vs this run): " + "; ".join(diffs))
    if provenance["manifest_sha256"] != manifest.sha256():
        problems.append(
            f"dataset manifest differs: the store holds {provenance['counts']['total']} samples of "
            f"{provenance['dataset']!r}, this run scanned {len(manifest)} samples of "
            f"{manifest.dataset!r} (different files, labels or splits)"
        )
    for role, stored in provenance["models"].items():
        current = models.get(role, {})
        if stored.get("sha256") != current.get("sha256"):
            problems.append(f"{role} model differs: store used {stored}, this run {current}")
    group = open_store(path)
    lacking = [name for name in DETECTION_ARRAYS if name not in group]
    if lacking and pending_shards(path, config.shard_size):  # a complete store has nothing to write
        problems.append(f"it was created by an earlier fer-preprocess, without the arrays {', '.join(lacking)}; "
                        "finish it with that version, or rebuild it with --overwrite")  # fmt: skip
    hint = ""
    stored_types = set(provenance["config"]["guidance"]["types"]) | set(stored_guidance(group))
    extra = [name for name in config.guidance.types if name not in stored_types]
    if len(problems) == 1 and extra and config.to_dict() == {
        **provenance["config"], "guidance": {**provenance["config"]["guidance"], "types": list(config.guidance.types)}
    }:  # only the guidance types differ, by types the store lacks: it can grow them
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
    path: Path, manifest: Manifest, config: PreprocessConfig, models, root: str | None
) -> None:
    """Write the template (every array, the manifest columns, the provenance) beside ``path``
    and rename it into place, so a run killed while writing it leaves no half-made store."""
    partial = path.with_name(path.name + ".partial")
    if partial.exists():  # left by a run killed while writing the template; the caller holds the lock
        shutil.rmtree(partial)
    _write_template_at(partial, manifest, config, models, root)
    partial.rename(path)


def _write_template_at(
    path: Path, manifest: Manifest, config: PreprocessConfig, models, root: str | None
) -> None:
    n = len(manifest)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    n_votes = 0 if manifest.votes is None else manifest.votes.shape[1]
    specs = array_specs(config, n_votes, subjects=manifest.subject is not None)
    arrays = {spec.name: _create_array(group, spec, n, config.shard_size) for spec in specs}
    columns = checksum_columns(specs)
    _create_array(group, checksum_spec(columns), n, config.shard_size)
    values = {
        "source": np.asarray(manifest.source, dtype=object),
        "label": np.asarray(manifest.label, dtype=np.int16),
        "split": np.asarray(manifest.split, dtype=np.uint8),
    }
    if manifest.valence is not None:
        values["valence"] = np.asarray(manifest.valence, dtype=np.float32)
    if manifest.arousal is not None:
        values["arousal"] = np.asarray(manifest.arousal, dtype=np.float32)
    if manifest.votes is not None:
        values["votes"] = np.asarray(manifest.votes, dtype=np.float32)
        arrays["votes"].attrs["channels"] = list(manifest.vote_names)
    if manifest.subject is not None:
        values["subject"] = np.asarray(manifest.subject, dtype=object)
    if manifest.skip is not None:  # rows the dataset itself rules out: failed before any work
        skipped = np.array([bool(reason) for reason in manifest.skip])
        values["status"] = np.where(skipped, int(Status.FAILED), int(Status.PENDING)).astype(np.uint8)
        values["message"] = np.asarray(manifest.skip, dtype=object)
    for name, column in values.items():
        arrays[name][:] = column
    checksums = np.zeros((n, len(columns)), np.uint32)
    for spec in specs:
        column = columns.index(spec.name)
        if spec.name in values:
            checksums[:, column] = sample_checksums(values[spec.name])
        else:
            checksums[:, column] = fill_checksum(spec.sample_shape, spec.dtype, spec.fill_value)
    group[CHECKSUM][:] = checksums
    group.attrs[ATTRS_KEY] = {
        "schema_version": SCHEMA_VERSION,
        "dataset": manifest.dataset,
        "root": root,  # where the sources were read; informational, not part of any hash
        "label_names": list(manifest.label_names),
        "label_sets": label_sets_to_attrs(manifest.label_sets),
        # landmark i of a horizontally flipped face is landmark landmark_flip_permutation[i]
        "landmark_flip_permutation": [int(i) for i in FLIP_PERMUTATION],
        "splits": list(manifest.splits),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": False,
        "counts": {"total": n},
        "config": config.to_dict(),
        "config_sha256": config.sha256(),
        "manifest_sha256": manifest.sha256(),
        "models": models,
        "versions": library_versions(),
    }


def open_store(location: str | Path, mode: str = "r") -> zarr.Group:
    """Open a store's root group after checking it is a schema-v1 FER store.

    Args:
        location: for reading, a local path, ``file://``, ``http(s)://``, ``s3://`` URL or a
            ``.zarr.zip`` file (see :mod:`pipeline.store_location`); for writing, a local path.
        mode: ``"r"`` (read-only, never writes; the metadata is checked against the allow-list
            and :func:`check_layouts` first) or ``"r+"`` (local stores this software builds).

    Raises:
        StoreRefusedError: metadata outside the allow-list or the schema (every objection listed).
        StoreError: missing, unreachable, not a FER store, or of an unknown schema version.
    """
    if mode == "r":
        return open_group_readonly(location, check_layouts)
    if not store_exists(location):
        raise StoreError(f"no store at {location} (expected a Zarr v3 group with zarr.json)")
    group = zarr.open_group(str(location), mode=mode, use_consolidated=False)
    try:
        _check_provenance(group.attrs.asdict())
    except StoreError as error:
        raise StoreError(f"{location} {error}") from None
    return group


def _check_provenance(attributes: dict[str, Any]) -> dict[str, Any]:
    """The provenance of a store's root ``attributes``.

    Raises:
        StoreError: no provenance (not a FER store), or another schema version; the message
            follows the store's location ("<location> is a Zarr group but ...").
    """
    provenance = attributes.get(ATTRS_KEY)
    if not isinstance(provenance, dict):
        raise StoreError(f"is a Zarr group but not a FER guidance store (no {ATTRS_KEY!r} attributes)")
    if provenance.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(
            f"has schema version {provenance.get('schema_version')!r}; this version of the "
            f"software reads version {SCHEMA_VERSION} (a newer store needs a newer fer-guidance-store)"
        )
    return provenance


def check_layouts(attributes: dict[str, Any], layouts: dict[str, ArrayLayout]) -> list[str]:
    """What the schema objects to in a store's arrays, judged from the metadata alone.

    Every array must be one the store's provenance calls for (the config's guidance types, those
    added or being added later, the optional columns), with the first dimension the sample count
    ``counts.total``, the rest the schema's sample shape, the schema's data type, and chunks
    one shard long (``min(shard_size, N)``) whole samples; a tensor's inner chunks hold whole
    samples and tile the shard (any count: stores written with another layout stay readable).

    Args:
        attributes: the root group's attributes (the provenance under :data:`ATTRS_KEY`).
        layouts: every array's checked metadata (:func:`pipeline.store_metadata.parse_array_document`).

    Returns:
        One line per objection, naming the array and the field; empty when the store conforms.

    Raises:
        StoreError: no provenance, another schema version, or a provenance whose config, counts
            or guidance records cannot be read; the message follows the store's location.
    """
    provenance = _check_provenance(attributes)
    try:
        config = PreprocessConfig.from_dict(provenance["config"])
        n = provenance["counts"]["total"]
        grown = [name for record in provenance.get("guidance_added", []) for name in record["types"]]
        growing = list(provenance.get("growing", {}).get("types", []))
        if not (isinstance(n, int) and 0 <= n <= MAX_SAMPLES):
            raise ValueError(f"counts.total is {n!r}, not a sample count")
        extra_types = tuple(dict.fromkeys(grown + growing))
        unknown = [name for name in extra_types if name not in GUIDANCE_TYPES]
        if unknown:
            raise ValueError(f"it names unknown guidance types {unknown}")
    except Exception as error:  # noqa: BLE001 - any damage to the provenance
        raise StoreError(f"has a provenance ({ATTRS_KEY!r} attributes) that cannot be read: {type(error).__name__}: {error}") from None
    n_votes = layouts["votes"].shape[1] if "votes" in layouts and len(layouts["votes"].shape) == 2 else 0
    specs = {spec.name: spec for spec in array_specs(config, n_votes, subjects=True, detections=True)}
    if not n_votes:
        specs.pop("votes", None)
    specs.update({spec.name: spec for spec in guidance_specs(extra_types, config)})
    if CHECKSUM in layouts and len(layouts[CHECKSUM].shape) == 2:
        specs[CHECKSUM] = checksum_spec(("",) * layouts[CHECKSUM].shape[1])  # the column names are verify's
    if growing:
        specs[GROWTH_MARK] = GROWTH_MARK_SPEC
    shard_len = max(1, min(config.shard_size, n))
    problems = []
    for name, layout in layouts.items():
        spec = specs.get(name)
        if spec is None:
            problems.append(f"array {name!r} is not one the schema defines for this store's config; "
                            f"a FER store's arrays are {', '.join(specs)}")  # fmt: skip
            continue
        expected = (n, *spec.sample_shape)
        if layout.shape != expected:
            problems.append(f"array {name!r}: field 'shape' is {list(layout.shape)}; the store's {n} samples and "
                            f"its config call for {list(expected)}")  # fmt: skip
            continue
        data_type = "string" if spec.dtype is str else np.dtype(spec.dtype).name
        if layout.data_type != data_type:
            problems.append(f"array {name!r}: field 'data_type' is {layout.data_type!r}; the schema's is {data_type!r}")
        if layout.chunk_shape != (shard_len, *spec.sample_shape):
            problems.append(f"array {name!r}: field 'chunk_grid.chunk_shape' is {list(layout.chunk_shape)}; "
                            f"the schema's is one shard, {[shard_len, *spec.sample_shape]}")  # fmt: skip
        inner = layout.inner_chunk_shape
        if spec.per_sample_chunks and (inner is None or inner[1:] != spec.sample_shape):
            problems.append(f"array {name!r}: its inner chunks are {None if inner is None else list(inner)}; the "
                            f"schema's hold whole samples, [k, {', '.join(map(str, spec.sample_shape))}]")  # fmt: skip
        elif not spec.per_sample_chunks and inner is not None:
            problems.append(f"array {name!r} is sharded; the schema stores it as one chunk per shard")
    return problems


def stored_guidance(group: zarr.Group) -> tuple[str, ...]:
    """The guidance types an open store holds complete (training asks this before it starts);
    types still being added (:func:`begin_growth`) are left out."""
    growing = growth_in_progress(group)
    return tuple(name for name in GUIDANCE_TYPES if name in group and name not in growing)


def undecided_faces(group: zarr.Group) -> np.ndarray | None:
    """``(N,) bool``: ok samples whose photo showed several faces and whose largest was kept for
    lack of a dataset box (it may be the wrong person); None for a store without detection arrays."""
    if "faces_detected" not in group:
        return None
    several = (group["faces_detected"][:] > 1) & (group["status"][:] == Status.OK)
    messages = group["message"][:]
    return several & np.array([str(m).startswith(SEVERAL_FACES_PREFIX) for m in messages], dtype=bool)


def growth_in_progress(group: zarr.Group) -> tuple[str, ...]:
    """The guidance types an unfinished :func:`begin_growth` is adding (empty when none)."""
    return tuple(group.attrs[ATTRS_KEY].get("growing", {}).get("types", ()))


def read_provenance(path: str | Path) -> dict[str, Any]:
    return dict(open_store(path).attrs[ATTRS_KEY])


def _set_complete(path: Path, complete: bool) -> None:
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    provenance = dict(group.attrs[ATTRS_KEY])
    provenance["complete"] = complete
    group.attrs[ATTRS_KEY] = provenance


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of every shard of an ``n``-sample store."""
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


SHARD_FAILURE_PREFIX = "shard task failed: "


def pending_shards(path: str | Path, shard_size: int) -> list[tuple[int, int]]:
    """Shards with at least one pending sample, whose ``status`` chunk cannot be read, or whose
    task kept failing in an earlier run (:func:`record_failed_shard`: every run retries them).

    A status chunk left half-written by a killed process fails its checksum and counts as pending,
    so the shard is computed again.
    """
    group = open_store(path)
    status = group["status"]
    pending = []
    for start, stop in shard_bounds(status.shape[0], shard_size):
        try:
            values = status[start:stop]
        except Exception:  # noqa: BLE001 - any decode error means "not finished"
            pending.append((start, stop))
            continue
        if np.any(values == Status.PENDING) or (
            np.any(values == Status.FAILED)
            and any(str(m).startswith(SHARD_FAILURE_PREFIX) for m in group["message"][start:stop])
        ):
            pending.append((start, stop))
    return pending


def record_failed_shard(path: str | Path, start: int, stop: int, error: str) -> None:
    """Mark every sample of a shard whose task kept failing as ``failed``, the error in
    ``message``, so the rest of the store completes; the next run on the store retries the shard."""
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    n = stop - start
    message = np.asarray([SHARD_FAILURE_PREFIX + error] * n, dtype=object)
    status = np.full(n, int(Status.FAILED), dtype=np.uint8)
    group["message"][start:stop] = message
    _record_checksums(group, start, {"message": message, "status": status})
    group["status"][start:stop] = status


def _record_checksums(group: zarr.Group, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Record the checksums of ``arrays`` (name -> ``(n, ...)`` values written at ``start``) in the
    ``checksum`` array, keeping the other columns of those samples. The caller owns the shard. An
    array without a column (a guidance type newer than the store) goes unrecorded."""
    if CHECKSUM not in group:  # a store written before checksums were recorded
        return
    checksum = group[CHECKSUM]
    columns = list(checksum.attrs["channels"])
    n = len(next(iter(arrays.values())))
    recorded = checksum[start : start + n]
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
    arrays = {name: np.asarray(values, dtype=object) if name == "message" else values for name, values in arrays.items()}
    for name, values in arrays.items():
        group[name][start:stop] = values
    _record_checksums(group, start, {**arrays, "status": status})
    group["status"][start:stop] = status


def status_counts(status: np.ndarray) -> dict[str, int]:
    """``{status label: count}`` for every status code, plus ``total``."""
    counts = {code.label: int(np.count_nonzero(status == code)) for code in Status}
    counts["total"] = int(status.size)
    return counts


def finalize_store(path: str | Path) -> dict[str, int]:
    """Record status counts and ``complete`` (true when nothing is pending), consolidate metadata."""
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    counts = status_counts(group["status"][:])
    provenance = dict(group.attrs[ATTRS_KEY])
    provenance["counts"] = counts
    provenance["complete"] = counts[Status.PENDING.label] == 0
    group.attrs[ATTRS_KEY] = provenance
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(path))
    return counts


def bytes_on_disk(path: str | Path) -> int:
    """Total size of the files under a local store directory."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(folder, name))
    return total


GROWTH_MARK = "growing"
GROWTH_MARK_SPEC = ArraySpec(GROWTH_MARK, ("sample",), "uint8", (), 0, per_sample_chunks=False)


def begin_growth(path: str | Path, types: tuple[str, ...], models: dict[str, dict[str, str]]) -> None:
    """Add empty arrays for guidance ``types`` to a complete store, with a ``growing`` mark array
    (``(N,) uint8``, 1 where a shard's new guidance is written), and list them under ``growing``
    in the provenance with the model files they use. Does nothing if this growth already began.

    Raises:
        StoreError: another growth is unfinished, or a type is already stored.
    """
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    provenance = dict(group.attrs[ATTRS_KEY])
    growing = provenance.get("growing")
    if growing is not None:
        if tuple(growing["types"]) != tuple(types) or growing["models"] != models:
            raise StoreError(
                f"{path} is already adding {', '.join(growing['types'])} with the model files "
                f"{growing['models']}; run the same command again (same --guidance and model files) to finish it"
            )
        return
    present = [name for name in types if name in group]
    if present:
        raise StoreError(f"{path} already holds {', '.join(present)}")
    config = PreprocessConfig.from_dict(provenance["config"])
    n = group["status"].shape[0]
    for spec in guidance_specs(types, config):
        _create_array(group, spec, n, config.shard_size)
    _create_array(group, GROWTH_MARK_SPEC, n, config.shard_size)
    provenance["growing"] = {
        "types": list(types),
        "models": models,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    group.attrs[ATTRS_KEY] = provenance


def growth_pending_shards(path: str | Path) -> list[tuple[int, int]]:
    """Shards of an unfinished growth whose marks are not all set (or cannot be read)."""
    group = open_store(path)
    mark = group[GROWTH_MARK]
    pending = []
    for start, stop in shard_bounds(mark.shape[0], group.attrs[ATTRS_KEY]["config"]["shard_size"]):
        try:
            done = bool(np.all(mark[start:stop] == 1))
        except Exception:  # noqa: BLE001 - any decode error means "not finished"
            done = False
        if not done:
            pending.append((start, stop))
    return pending


def write_grown_shard(path: str | Path, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Write one shard's region of each new guidance array (and ``status``/``message`` where a
    sample failed), then the shard's growth marks.

    Args:
        arrays: name -> ``(n, ...)`` values; every array has the same n.
    """
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    n = len(next(iter(arrays.values())))
    arrays = {name: np.asarray(values, dtype=object) if name == "message" else values for name, values in arrays.items()}
    for name, values in arrays.items():
        group[name][start : start + n] = values
    _record_checksums(group, start, arrays)
    group[GROWTH_MARK][start : start + n] = np.ones(n, dtype=np.uint8)


def finish_growth(path: str | Path) -> dict[str, Any] | None:
    """If every shard of the growth is written: drop the marks, move the growth from ``growing`` to
    the ``guidance_added`` list of the provenance (types, model files, library versions, start and
    end times), recount statuses and consolidate metadata. Returns the record, or None while
    shards are still pending."""
    if growth_pending_shards(path):
        return None
    group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    del group[GROWTH_MARK]
    provenance = dict(group.attrs[ATTRS_KEY])
    record = {
        **provenance.pop("growing"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }
    provenance["guidance_added"] = [*provenance.get("guidance_added", []), record]
    group.attrs[ATTRS_KEY] = provenance
    finalize_store(path)
    return record
