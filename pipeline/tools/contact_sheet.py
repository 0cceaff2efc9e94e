"""Contact sheets: a PNG a person can read at a glance to see what a store holds.

Each sample is a row of four tiles: the aligned face with its 68 landmarks (and region boxes), a
landmark heatmap, a saliency map and a landmark mask (each map overlaid on the face and named),
captioned with index, label, split and status. Samples that are not usable show their source image (when the dataset
root recorded in the store is readable here) and the message saying why. A band above them says
what the sheet shows (the store, its dataset, how many samples, how many usable) and how to read
a row.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import zarr

from pipeline.errors import StoreError
from pipeline.guidance import FAMILIES, family_members
from pipeline.stages.decode import to_rgb
from pipeline.store import (
    USABLE_STATUSES,
    Provenance,
    Status,
    array_in,
    open_store,
    provenance_of,
    read_array,
    stored_guidance,
    undecided_faces,
)
from pipeline.store.schema import FACE_SCORE, FACES_DETECTED, IMAGE, LABEL, LANDMARKS, MESSAGE, SOURCE, SPLIT, STATUS
from pipeline.tools.source_images import read_source_image

TILE = 112
CAPTION = 30
COLUMNS = 3  # samples per sheet row
# The three guidance tiles of a sample: of each map family, the first type the store holds (the
# default one first; several channels are shown as their maximum); region boxes are drawn on the
# face tile.
TILE_FAMILIES = tuple(family_members(family) for family in FAMILIES if family != "regions")
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def select_samples(
    status: np.ndarray,
    split: np.ndarray,
    split_names: list[str],
    *,
    split_name: str | None,
    statuses: tuple[str, ...],
    count: int,
    only: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of up to ``count`` samples matching the filters (and ``only``, ``(N,) bool``, where
    given), spread evenly over the store."""
    keep = status != Status.PENDING
    if only is not None:
        keep &= only
    if split_name is not None:
        if split_name not in split_names:
            raise StoreError(f"no split {split_name!r} in this store; it has: {', '.join(split_names)}")
        keep &= split == split_names.index(split_name)
    if statuses:
        known = {code.label: code for code in Status}
        unknown = [s for s in statuses if s not in known]
        if unknown:
            raise StoreError(f"unknown status {unknown[0]!r}; choose from {', '.join(known)}")
        keep &= np.isin(status, [int(known[s]) for s in statuses])
    candidates = np.flatnonzero(keep)
    if len(candidates) <= count:
        return candidates
    spread: np.ndarray = candidates[np.linspace(0, len(candidates) - 1, count).round().astype(int)]
    return spread


def _face_tile(image_chw: np.ndarray) -> np.ndarray:
    rgb = to_rgb(image_chw[0] if image_chw.shape[0] == 1 else image_chw.transpose(1, 2, 0))
    return cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (TILE, TILE), interpolation=cv2.INTER_LINEAR)


def _overlay(face_bgr: np.ndarray, guidance: np.ndarray) -> np.ndarray:
    heat = cv2.applyColorMap(cv2.resize(guidance, (TILE, TILE), interpolation=cv2.INTER_LINEAR), cv2.COLORMAP_JET)
    return cv2.addWeighted(face_bgr, 0.45, heat, 0.55, 0.0)


def _fit(image_bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = image_bgr.shape[:2]
    scale = min(width / w, height / h)
    resized = cv2.resize(image_bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    canvas = np.full((height, width, 3), 40, np.uint8)
    y, x = (height - resized.shape[0]) // 2, (width - resized.shape[1]) // 2
    canvas[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return canvas


def _wrap(text: str, width_chars: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width_chars and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


def _sample_cell(group: zarr.Group, provenance: Provenance, held: tuple[str, ...], index: int) -> np.ndarray:
    """One sample's tiles and caption; ``held`` is the guidance the store holds."""
    size = array_in(group, IMAGE).shape[-1]
    status = Status(int(read_array(group, STATUS, index)))
    label = int(read_array(group, LABEL, index))
    label_name = provenance.label_names[label] if label >= 0 else "?"
    split_name = provenance.splits[int(read_array(group, SPLIT, index))]
    cell = np.full((TILE + CAPTION, 4 * TILE, 3), 255, np.uint8)
    if status in USABLE_STATUSES:
        face = _face_tile(read_array(group, IMAGE, index))
        marked = face.copy()
        for x, y in read_array(group, LANDMARKS, index) * (TILE / size):
            cv2.circle(marked, (int(x), int(y)), 1, (0, 255, 0), -1, cv2.LINE_AA)
        if "regions" in held:
            for left, top, right, bottom in read_array(group, "regions", index) * (TILE / size):
                cv2.rectangle(marked, (int(left), int(top)), (int(right), int(bottom)), (255, 200, 0), 1)
        tiles = [marked]
        for family in TILE_FAMILIES:
            name = next((n for n in family if n in held), None)
            if name is None:
                tile = np.full((TILE, TILE, 3), 200, np.uint8)
                cv2.putText(tile, f"no {family[0]}", (6, TILE // 2), _FONT, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
            else:
                tile = _overlay(face, read_array(group, name, index).max(axis=0))
                cv2.putText(tile, name, (3, 11), _FONT, 0.33, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        cell[:TILE] = np.hstack(tiles)
    else:
        source = read_source_image(provenance, str(read_array(group, SOURCE, index)))
        if source is not None:
            cell[:TILE, :TILE] = _fit(cv2.cvtColor(source, cv2.COLOR_RGB2BGR), TILE, TILE)
        for row, text in enumerate(_wrap(str(read_array(group, MESSAGE, index)), 44)[:5]):
            cv2.putText(cell, text, (TILE + 6, 18 + 18 * row), _FONT, 0.4, (0, 0, 160), 1, cv2.LINE_AA)
    caption = f"#{index} {label_name} [{split_name}] {status.label}"
    color = (0, 110, 0) if status in USABLE_STATUSES else (0, 0, 170)
    cv2.putText(cell, caption, (4, TILE + 20), _FONT, 0.45, color, 1, cv2.LINE_AA)
    return cell


HEADER = 64  # the title and legend band above the samples


def render_contact_sheet(path: str | Path, indices: np.ndarray) -> np.ndarray:
    """``(HEADER + rows * (TILE + CAPTION), COLUMNS * 4 * TILE, 3) uint8 BGR`` sheet of the given
    samples, under a title (the store, its dataset, what is shown) and a legend."""
    group = open_store(path)
    provenance = provenance_of(group)
    held = stored_guidance(group)
    cells = [_sample_cell(group, provenance, held, int(i)) for i in indices]
    blank = np.full((TILE + CAPTION, 4 * TILE, 3), 255, np.uint8)
    cells += [blank] * (-len(cells) % COLUMNS)
    rows = [np.hstack(cells[i : i + COLUMNS]) for i in range(0, len(cells), COLUMNS)]
    sheet = np.vstack(rows)
    sheet[:, 4 * TILE :: 4 * TILE] = 0  # thin black line between samples
    status = read_array(group, STATUS)
    usable = int(np.isin(status[np.asarray(indices, dtype=np.int64)], [int(s) for s in USABLE_STATUSES]).sum())
    return np.vstack([_header(Path(str(path)).name, provenance, len(indices), usable, sheet.shape[1]), sheet])


def _header(name: str, provenance: Provenance, shown: int, usable: int, width: int) -> np.ndarray:
    """The band above the samples: what the sheet shows, and how to read a row."""
    band = np.full((HEADER, width, 3), 255, np.uint8)
    title = f"{name}: {provenance.dataset}, {shown} samples shown ({usable} usable, {shown - usable} not)"
    lines = [
        (title, 0.5, (0, 0, 0)),
        (
            "usable (green caption): the aligned face with its landmarks (green) and regions, then its guidance maps",
            0.38,
            (0, 110, 0),
        ),
        (
            "not usable (red caption): the source image and why no face was kept; a photo without a face is no fault",
            0.38,
            (0, 0, 170),
        ),
    ]
    for row, (text, scale, colour) in enumerate(lines):
        cv2.putText(band, text, (8, 20 + 19 * row), _FONT, scale, colour, 1, cv2.LINE_AA)
    band[-1] = 0
    return band


def chosen_samples(
    path: str | Path,
    *,
    split: str | None = None,
    statuses: tuple[str, ...] = (),
    count: int = 24,
    several_faces: bool = False,
) -> np.ndarray:
    """Store indices of up to ``count`` samples of ``split`` with one of ``statuses`` (any where
    empty), only those that kept the largest of several faces when ``several_faces``.

    Raises:
        StoreError: no sample matches, an unknown split or status, or ``several_faces`` on a store
            that records no detections.
    """
    group = open_store(path)
    provenance = provenance_of(group)
    only = undecided_faces(group) if several_faces else None
    if several_faces and only is None:
        raise StoreError(f"{path} records no face counts (built before fer-preprocess recorded them)")
    indices = select_samples(
        read_array(group, STATUS),
        read_array(group, SPLIT),
        list(provenance.splits),
        split_name=split,
        statuses=tuple(statuses),
        count=count,
        only=only,
    )
    if len(indices) == 0:
        filters = f"split={split}, status={list(statuses) or 'any'}" + (", several faces" if several_faces else "")
        raise StoreError(f"no samples in {path} match the filters ({filters})")
    return indices


def sample_lines(path: str | Path, indices: np.ndarray) -> list[str]:
    """One line per sample: index, status, faces found, detector score, source and message."""
    group = open_store(path)
    columns = {name: read_array(group, name) for name in (STATUS, SOURCE, MESSAGE)}
    detections = FACES_DETECTED in group and FACE_SCORE in group
    faces = read_array(group, FACES_DETECTED) if detections else None
    scores = read_array(group, FACE_SCORE) if detections else None
    lines = []
    for i in indices:
        detected = "-" if faces is None or scores is None else f"{int(faces[i])} faces, score {float(scores[i]):.2f}"
        lines.append(
            f"{int(i)}\t{Status(int(columns[STATUS][i])).label}\t{detected}\t{columns[SOURCE][i]}\t"
            f"{columns[MESSAGE][i]}"
        )
    return lines


def write_contact_sheet(path: str | Path, out: str | Path, indices: np.ndarray) -> int:
    """Render the sheet of the samples at store ``indices`` (from :func:`chosen_samples`) and write
    it as PNG to ``out``; returns how many were shown."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), render_contact_sheet(path, indices)):
        raise StoreError(f"cannot write {out}")
    return len(indices)
