"""What the viewer shows of each sample, as image files and plain records (no FiftyOne here).

A dataset viewer displays image files, so the store's tensors are written out once: into a cache
folder named by the store's digest (:func:`store_digest`), under it one subfolder per kind::

    face/0000042.png         the aligned face, S x S (gray or RGB as stored)
    <guidance>/0000042.png   each guidance map, H x H uint8, the maximum over its channels
    source/0000042.jpg       the source image, where it can be read here (JPEG, quality 92)
    message/0000042.png      for an unusable sample whose source cannot be read: its message

A file that exists is not written again, so a second view of the same store costs only reading
the arrays, and a changed store (another digest) gets a new folder. Files are written whole
(written aside, then renamed), so an interrupted view leaves no half image behind.

Coordinates in the records are normalised to the image they belong to: x / width, y / height,
origin at the top-left pixel's corner (what FiftyOne's labels take).
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import zarr

from pipeline.errors import StoreError
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.store import USABLE_STATUSES, Provenance, Status, array_in, provenance_of, stored_guidance
from pipeline.store.access import channel_names
from pipeline.store.recorded_checksums import RecordedChecksums, read_checked
from pipeline.store.schema import (
    BOX_SRC,
    FACE_SCORE,
    FACES_DETECTED,
    IMAGE,
    LABEL,
    LANDMARKS,
    LANDMARKS_SRC,
    MESSAGE,
    SOURCE,
    SPLIT,
    STATUS,
    SUBJECT,
)
from pipeline.tools.source_images import read_source_image

# Samples read from the store per call (zarr costs about 1 ms of Python per read call).
READ_BATCH = 256
SOURCE_JPEG_QUALITY = 92
MESSAGE_TILE = 256

Box = tuple[float, float, float, float]  # (x, y, width, height), normalised


@dataclass(frozen=True)
class SampleView:
    """One store sample as the viewer shows it.

    index: the store index. label: the class name ("" where the row has none). split, status:
        their names. message: why the sample is not usable, or a note (several faces).
    faces_detected, face_score: what the detector saw (None for stores that do not record it).
    subject: the subject ID (None where the dataset has none).
    face_image: the aligned face PNG; for an unusable sample its source image, or a tile with its
        message where the source cannot be read here.
    landmarks: ``(68, 2) float32`` aligned landmarks normalised to the face image; None when not usable.
    regions: (region name, box) of the ``regions`` guidance, normalised to the face image.
    guidance: guidance type -> its map's PNG (``H x H uint8``), only for usable samples.
    source_image: the source image's JPEG; None where it cannot be read here.
    source_box: the face box normalised to the source image; source_landmarks: ``(68, 2)
        float32`` likewise (both None when not usable or the source cannot be read).
    """

    index: int
    label: str
    split: str
    status: str
    message: str
    source: str
    faces_detected: int | None
    face_score: float | None
    subject: str | None
    face_image: Path
    landmarks: np.ndarray | None
    regions: tuple[tuple[str, Box], ...]
    guidance: dict[str, Path]
    source_image: Path | None
    source_box: Box | None
    source_landmarks: np.ndarray | None


def store_digest(provenance: Provenance) -> str:
    """16 hex digits of the SHA-256 of the store's provenance as stored (config, manifest, models,
    counts, guidance added...): any change to what the store holds changes it."""
    document = json.dumps(provenance.to_attrs(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(document.encode()).hexdigest()[:16]


def _write_once(path: Path, image: np.ndarray) -> Path:
    """Write ``image`` (``(H, W) uint8`` gray or ``(H, W, 3) uint8`` BGR) to ``path`` unless it exists."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, SOURCE_JPEG_QUALITY] if path.suffix == ".jpg" else []
    ok, encoded = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise StoreError(f"cannot encode {path}")
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(encoded.tobytes())
    os.replace(partial, path)
    return path


def _message_tile(message: str) -> np.ndarray:
    tile = np.full((MESSAGE_TILE, MESSAGE_TILE, 3), 64, np.uint8)
    for row, line in enumerate(textwrap.wrap(message or "no image", 30)[:11]):
        cv2.putText(tile, line, (8, 24 + 20 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 255), 1, cv2.LINE_AA)
    return tile


def _face_bgr(image_chw: np.ndarray) -> np.ndarray:
    if image_chw.shape[0] == 1:
        return np.ascontiguousarray(image_chw[0])
    return cv2.cvtColor(np.ascontiguousarray(image_chw.transpose(1, 2, 0)), cv2.COLOR_RGB2BGR)


def _normalised_box(box: np.ndarray, width: int, height: int) -> Box:
    """``(4,)`` (left, top, right, bottom) pixels -> (x, y, width, height) over the image's size."""
    left, top, right, bottom = (float(v) for v in box)
    return (left / width, top / height, (right - left) / width, (bottom - top) / height)


class _Columns:
    """The per-sample columns of a store, read whole once (they are small) and checked against
    ``checksums``; the detector's and the subjects' are None in stores without them."""

    def __init__(self, group: zarr.Group, checksums: RecordedChecksums):
        def read(name: str) -> np.ndarray:
            return read_checked(group, name, checksums)

        self.status, self.label, self.split = (read(name) for name in (STATUS, LABEL, SPLIT))
        self.source, self.message = read(SOURCE), read(MESSAGE)
        self.faces, self.scores, self.subject = (
            read(name) if name in group else None for name in (FACES_DETECTED, FACE_SCORE, SUBJECT)
        )


def write_sample_views(
    group: zarr.Group, indices: np.ndarray, folder: Path, *, root: str | Path | None = None
) -> list[SampleView]:
    """Write the images of the samples at ``indices`` (``(n,) int``, store indices) under
    ``folder`` (see the module's layout) and return their records, in the order given.

    Args:
        group: the open store (:func:`pipeline.store.open_store`).
        folder: the cache folder of this store's digest.
        root: where the dataset's source images lie here; None: where the store was built from.

    Raises:
        ChunkDamagedError: a value read differs from what the store recorded writing there.
    """
    provenance = provenance_of(group)
    held = stored_guidance(group)
    tensor_names = (IMAGE, LANDMARKS, LANDMARKS_SRC, BOX_SRC, *held)
    columns_read = (STATUS, LABEL, SPLIT, SOURCE, MESSAGE, FACES_DETECTED, FACE_SCORE, SUBJECT)
    checksums = RecordedChecksums.of(group, (*columns_read, *tensor_names))
    columns = _Columns(group, checksums)
    size = array_in(group, IMAGE).shape[-1]
    maps = [name for name in held if not GUIDANCE_TYPES[name].boxes]
    region_names = channel_names(array_in(group, "regions")) if "regions" in held else []
    views: list[SampleView] = []
    for start in range(0, len(indices), READ_BATCH):
        batch = np.asarray(indices[start : start + READ_BATCH], dtype=np.int64)
        tensors = {name: np.asarray(array_in(group, name).oindex[batch]) for name in tensor_names}
        for name, values in tensors.items():
            checksums.check_samples(name, batch, values)
        for row, index in enumerate(batch.tolist()):
            sample = {name: values[row] for name, values in tensors.items()}
            views.append(_sample_view(provenance, columns, sample, index, folder, size, maps, region_names, root))
    return views


def _sample_view(
    provenance: Provenance,
    columns: _Columns,
    sample: dict[str, np.ndarray],
    index: int,
    folder: Path,
    size: int,
    maps: list[str],
    region_names: list[str],
    root: str | Path | None,
) -> SampleView:
    name = f"{index:07d}"
    status = Status(int(columns.status[index]))
    usable = status in USABLE_STATUSES
    message = str(columns.message[index])
    source_path = folder / "source" / f"{name}.jpg"
    if not source_path.exists():
        source_rgb = read_source_image(provenance, str(columns.source[index]), root)
        if source_rgb is not None:
            _write_once(source_path, cv2.cvtColor(source_rgb, cv2.COLOR_RGB2BGR))
    source_image = source_path if source_path.exists() else None

    landmarks = source_box = source_landmarks = None
    regions: tuple[tuple[str, Box], ...] = ()
    guidance: dict[str, Path] = {}
    if usable:
        face_image = _write_once(folder / "face" / f"{name}.png", _face_bgr(sample[IMAGE]))
        landmarks = (sample[LANDMARKS] / size).astype(np.float32)
        for map_name in maps:
            guidance[map_name] = _write_once(folder / map_name / f"{name}.png", sample[map_name].max(axis=0))
        if region_names:
            regions = tuple(
                (region, _normalised_box(box, size, size))
                for region, box in zip(region_names, sample["regions"], strict=True)
            )
        if source_image is not None:
            height, width = _image_size(source_image)
            source_box = _normalised_box(sample[BOX_SRC], width, height)
            source_landmarks = (sample[LANDMARKS_SRC] / np.array([width, height], np.float32)).astype(np.float32)
    elif source_image is not None:
        face_image = source_image
    else:
        face_image = _write_once(folder / "message" / f"{name}.png", _message_tile(message))

    label_code = int(columns.label[index])
    return SampleView(
        index=index,
        label=provenance.label_names[label_code] if 0 <= label_code < len(provenance.label_names) else "",
        split=provenance.splits[int(columns.split[index])],
        status=status.label,
        message=message,
        source=str(columns.source[index]),
        faces_detected=None if columns.faces is None else int(columns.faces[index]),
        face_score=None if columns.scores is None else float(columns.scores[index]),
        subject=None if columns.subject is None else str(columns.subject[index]),
        face_image=face_image,
        landmarks=landmarks,
        regions=regions,
        guidance=guidance,
        source_image=source_image,
        source_box=source_box,
        source_landmarks=source_landmarks,
    )


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, from its header."""
    from PIL import Image

    with Image.open(path) as image:
        return image.height, image.width
