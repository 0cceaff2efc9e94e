"""The store schema (v1, Zarr format 3): every array's name, shape, dtype and chunks.

Layout: one group; per-sample arrays share the leading ``sample`` dimension of length N.
Tensor arrays are sharded along ``sample`` by ``shard_size`` with a few samples per inner chunk,
so a whole shard is one file and one sample can still be read alone; small columns have one chunk
per shard. Every chunk is compressed (zstd; tensors lz4 inside blosc when the config's ``codec``
says so) and carries a crc32c checksum. Provenance lives in the root attributes
(:mod:`pipeline.store.provenance`). Nothing in a store needs pickle to read.

The array names below are the contract: every other module takes them from here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.config import PreprocessConfig
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.landmark_scheme import N_LANDMARKS
from pipeline.store.metadata import ArrayLayout
from pipeline.store.provenance import Provenance

# Array names. Per sample: the aligned face and where it came from,
IMAGE, LANDMARKS, LANDMARKS_SRC, BOX_SRC, ALIGNED_FROM_SRC = (
    "image",
    "landmarks",
    "landmarks_src",
    "box_src",
    "aligned_from_src",
)
# what the face detector saw (every status): how many faces, the kept one's score,
FACES_DETECTED, FACE_SCORE = "faces_detected", "face_score"
# the dataset's rows (the manifest's columns; votes and subject only where the dataset has them),
LABEL, VALENCE, AROUSAL, SPLIT, SOURCE, VOTES, SUBJECT = (
    "label",
    "valence",
    "arousal",
    "split",
    "source",
    "votes",
    "subject",
)
# the outcome (written last by each shard task) and its message,
STATUS, MESSAGE = "status", "message"
# per array, the CRC-32 of each sample's values (pipeline.store.checksums); its ``channels``
# attribute names the array of each column; absent from stores written before it;
CHECKSUM = "checksum"
# ``(N,) uint8``, 1 where a shard's new guidance is written; only while guidance is being added.
GROWTH_MARK = "growing"
# ``(N,) str``: per sample, one line ``type: error`` for each guidance type added later whose
# rendering failed on it (its map is left zero; training skips the sample). ``growing_errors``
# holds the lines of the unfinished growth; ``guidance_errors`` those of finished ones, and
# exists only once a finished growth recorded one. A sample's status never changes when guidance
# is added.
GROWTH_ERRORS, GUIDANCE_ERRORS = "growing_errors", "guidance_errors"
# Array attributes: the names of the entries of the axis after ``sample``, and for guidance the
# channel a horizontal flip maps each channel to.
CHANNELS_ATTR, FLIP_PERMUTATION_ATTR = "channels", "flip_permutation"
# One more array per guidance type, named after it (pipeline.guidance).


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
    def attributes(self) -> dict[str, list[str] | list[int]]:
        attributes: dict[str, list[str] | list[int]] = {}
        if self.channels:
            attributes[CHANNELS_ATTR] = list(self.channels)
        if self.flip_permutation is not None:
            attributes[FLIP_PERMUTATION_ATTR] = list(self.flip_permutation)
        return attributes


BASE_COMPUTED_ARRAYS = (IMAGE, LANDMARKS, LANDMARKS_SRC, BOX_SRC, ALIGNED_FROM_SRC)
# What the face detector saw in each sample (every status): how many faces, the kept one's score.
DETECTION_ARRAYS = (FACES_DETECTED, FACE_SCORE)
# The message of an ok sample whose photo shows several faces and no dataset box chose among them.
SEVERAL_FACES_PREFIX = "several faces found"


def several_faces_message(faces: int, score: float) -> str:
    """The message of a sample whose largest of ``faces`` detections was kept for lack of a box."""
    return (
        f"{SEVERAL_FACES_PREFIX} ({faces}); the largest was kept (detector score {score:.2f}), "
        "as no dataset box says which person is meant"
    )


def guidance_spec(name: str, aligned_size: int, guidance_size: int) -> ArraySpec:
    """How guidance type ``name`` is stored: maps ``(N, C, H, H) uint8`` with dims
    ``(sample, <name>_channel, gy, gx)``, boxes ``(N, R, 4) float32`` with dims
    ``(sample, region, edge)``."""
    kind = GUIDANCE_TYPES[name]
    if kind.boxes:
        return ArraySpec(
            name,
            ("sample", "region", "edge"),
            "float32",
            (len(kind.channels), 4),
            0.0,
            per_sample_chunks=False,
            channels=kind.channels,
            flip_permutation=kind.flip_permutation,
        )
    return ArraySpec(
        name,
        ("sample", f"{name}_channel", "gy", "gx"),
        "uint8",
        (len(kind.channels), guidance_size, guidance_size),
        0,
        per_sample_chunks=True,
        channels=kind.channels,
        flip_permutation=kind.flip_permutation,
    )


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
    tensor: dict[str, Any] = dict(per_sample_chunks=True)
    column: dict[str, Any] = dict(per_sample_chunks=False)
    specs = [
        ArraySpec(IMAGE, ("sample", "channel", "y", "x"), "uint8", (c, s, s), 0, **tensor),
        ArraySpec(LANDMARKS, ("sample", "landmark", "xy"), "float32", (N_LANDMARKS, 2), 0.0, **tensor),
        ArraySpec(LANDMARKS_SRC, ("sample", "landmark", "xy"), "float32", (N_LANDMARKS, 2), 0.0, **tensor),
        ArraySpec(BOX_SRC, ("sample", "edge"), "float32", (4,), 0.0, **column),
        ArraySpec(ALIGNED_FROM_SRC, ("sample", "row", "col"), "float32", (2, 3), 0.0, **column),
        *guidance_specs(config.guidance.types, config),
        *(
            (
                ArraySpec(FACES_DETECTED, ("sample",), "uint8", (), 0, **column),
                ArraySpec(FACE_SCORE, ("sample",), "float32", (), float("nan"), **column),
            )
            if detections
            else ()
        ),
        ArraySpec(LABEL, ("sample",), "int16", (), -1, **column),
        ArraySpec(VALENCE, ("sample",), "float32", (), float("nan"), **column),
        ArraySpec(AROUSAL, ("sample",), "float32", (), float("nan"), **column),
        ArraySpec(SPLIT, ("sample",), "uint8", (), 0, **column),
        ArraySpec(STATUS, ("sample",), "uint8", (), int(Status.PENDING), **column),
        ArraySpec(SOURCE, ("sample",), str, (), "", **column),
        ArraySpec(MESSAGE, ("sample",), str, (), "", **column),
    ]
    if n_votes:
        specs.append(ArraySpec(VOTES, ("sample", "vote_class"), "float32", (n_votes,), 0.0, **column))
    if subjects:
        specs.append(ArraySpec(SUBJECT, ("sample",), str, (), "", **column))
    return tuple(specs)


def checksum_spec(columns: tuple[str, ...]) -> ArraySpec:
    """The ``checksum`` array: ``(N, len(columns)) uint32``, 0 where nothing is recorded."""
    return ArraySpec(
        CHECKSUM,
        ("sample", "checksummed_array"),
        "uint32",
        (len(columns),),
        0,
        per_sample_chunks=False,
        channels=columns,
    )


def checksum_columns(specs: tuple[ArraySpec, ...]) -> tuple[str, ...]:
    """The arrays a new store records checksums of: its own other than guidance, then every guidance
    type in catalogue order (those it holds and those it could grow), so that a store grown to
    more types has the columns of one built with them."""
    return tuple(spec.name for spec in specs if spec.name not in GUIDANCE_TYPES) + tuple(GUIDANCE_TYPES)


def computed_arrays(config: PreprocessConfig) -> tuple[str, ...]:
    """Arrays a shard task computes and writes (everything else comes from the manifest; then
    ``status``, last)."""
    return (*BASE_COMPUTED_ARRAYS, *config.guidance.types, *DETECTION_ARRAYS, MESSAGE)


GROWTH_MARK_SPEC = ArraySpec(GROWTH_MARK, ("sample",), "uint8", (), 0, per_sample_chunks=False)
GROWTH_ERRORS_SPEC = ArraySpec(GROWTH_ERRORS, ("sample",), str, (), "", per_sample_chunks=False)
GUIDANCE_ERRORS_SPEC = ArraySpec(GUIDANCE_ERRORS, ("sample",), str, (), "", per_sample_chunks=False)


# Inner chunks of tensor arrays hold a few samples, up to this many raw bytes: each zarr chunk
# costs about 0.25 ms of Python to read or write, so one-sample chunks would cost more than the
# guidance computation itself (measured: 0.30 ms/sample/array at 1 sample per 48x48 chunk, 0.03
# ms at 16), while one sample can still be read without decoding a whole shard. The byte cap
# decides for most maps (a 112x112 gray map holds 16); small samples stop at 64: at 48x48 the
# shard reader's Python per inner chunk (index entry, checksum, frame header) is a fifth of its
# decoding time, and 64 samples instead of 16 decode a whole store 1.3-1.7x faster and stream
# training batches 1.1-1.4x faster, while one random sample takes 0.8-1.5 ms instead of 0.5-0.8
# (docs/benchmarks.md, "Samples per inner chunk").
INNER_CHUNK_BYTES = 256 * 1024
MAX_SAMPLES_PER_INNER_CHUNK = 64


def samples_per_inner_chunk(sample_bytes: int, shard_len: int) -> int:
    """Largest power of two <= 64 that divides ``shard_len`` and keeps a chunk under 256 KiB."""
    count = 1
    while (
        count * 2 <= MAX_SAMPLES_PER_INNER_CHUNK
        and shard_len % (count * 2) == 0
        and count * 2 * sample_bytes <= INNER_CHUNK_BYTES
    ):
        count *= 2
    return count


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of every shard of an ``n``-sample store."""
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


SHARD_FAILURE_PREFIX = "shard task failed: "


def status_counts(status: np.ndarray) -> dict[str, int]:
    """``{status label: count}`` for every status code, plus ``total``."""
    counts = {code.label: int(np.count_nonzero(status == code)) for code in Status}
    counts["total"] = int(status.size)
    return counts


def check_layouts(attributes: dict[str, Any], layouts: dict[str, ArrayLayout]) -> list[str]:
    """What the schema objects to in a store's arrays, judged from the metadata alone.

    Every array must be one the store's provenance calls for (the config's guidance types, those
    added or being added later, the optional columns), with the first dimension the sample count
    ``counts.total``, the rest the schema's sample shape, the schema's data type, and chunks
    one shard long (``min(shard_size, N)``) whole samples; a tensor's inner chunks hold whole
    samples and tile the shard (any count: stores written with another layout stay readable).

    Args:
        attributes: the root group's attributes (the provenance, :mod:`pipeline.store.provenance`).
        layouts: every array's checked metadata (:func:`pipeline.store.metadata.parse_array_document`).

    Returns:
        One line per objection, naming the array and the field; empty when the store conforms.

    Raises:
        StoreError: no provenance, another schema version, or a provenance whose config, counts
            or guidance records cannot be read; the message follows the store's location.
    """
    provenance = Provenance.from_attrs(attributes)
    config, n = provenance.preprocess_config, provenance.total
    extra_types = tuple(dict.fromkeys(provenance.added_types + provenance.growing_types))
    n_votes = layouts[VOTES].shape[1] if VOTES in layouts and len(layouts[VOTES].shape) == 2 else 0
    specs = {spec.name: spec for spec in array_specs(config, n_votes, subjects=True, detections=True)}
    if not n_votes:
        specs.pop(VOTES, None)
    specs.update({spec.name: spec for spec in guidance_specs(extra_types, config)})
    if CHECKSUM in layouts and len(layouts[CHECKSUM].shape) == 2:
        specs[CHECKSUM] = checksum_spec(("",) * layouts[CHECKSUM].shape[1])  # the column names are verify's
    if provenance.growing is not None:
        specs[GROWTH_MARK] = GROWTH_MARK_SPEC
        specs[GROWTH_ERRORS] = GROWTH_ERRORS_SPEC
    if provenance.added_types:
        specs[GUIDANCE_ERRORS] = GUIDANCE_ERRORS_SPEC
    shard_len = max(1, min(config.shard_size, n))
    problems = []
    for name, layout in layouts.items():
        spec = specs.get(name)
        if spec is None:
            problems.append(
                f"array {name!r} is not one the schema defines for this store's config; "
                f"a FER store's arrays are {', '.join(specs)}"
            )
            continue
        expected = (n, *spec.sample_shape)
        if layout.shape != expected:
            problems.append(
                f"array {name!r}: field 'shape' is {list(layout.shape)}; the store's {n} samples and "
                f"its config call for {list(expected)}"
            )
            continue
        data_type = "string" if spec.dtype is str else np.dtype(spec.dtype).name
        if layout.data_type != data_type:
            problems.append(f"array {name!r}: field 'data_type' is {layout.data_type!r}; the schema's is {data_type!r}")
        if layout.chunk_shape != (shard_len, *spec.sample_shape):
            problems.append(
                f"array {name!r}: field 'chunk_grid.chunk_shape' is {list(layout.chunk_shape)}; "
                f"the schema's is one shard, {[shard_len, *spec.sample_shape]}"
            )
        inner = layout.inner_chunk_shape
        if spec.per_sample_chunks and (inner is None or inner[1:] != spec.sample_shape):
            problems.append(
                f"array {name!r}: its inner chunks are {None if inner is None else list(inner)}; the "
                f"schema's hold whole samples, [k, {', '.join(map(str, spec.sample_shape))}]"
            )
        elif not spec.per_sample_chunks and inner is not None:
            problems.append(f"array {name!r} is sharded; the schema stores it as one chunk per shard")
    return problems
