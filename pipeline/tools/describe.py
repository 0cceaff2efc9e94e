"""Human-readable descriptions of stores: what ``fer-store info``, ``ls`` and ``diff`` print."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr

from pipeline.config import differing_keys
from pipeline.store import (
    Status,
    array_in,
    bytes_on_disk,
    open_store,
    provenance_of,
    read_array,
    stored_guidance,
    undecided_faces,
)
from pipeline.store.location import StoreLocation
from pipeline.store.schema import FACES_DETECTED, LABEL, SPLIT, STATUS


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def describe_store(path: str | Path) -> str:
    """Dataset, counts per status / split / label, arrays (shape, dtype, chunks, bytes) and
    provenance of the store at ``path``, as text."""
    group = open_store(path)
    prov = provenance_of(group)
    status = read_array(group, STATUS)
    split = read_array(group, SPLIT)
    label = read_array(group, LABEL)
    n = status.size
    lines = [
        f"store     {path}",
        f"dataset   {prov.dataset}   samples {n}   complete {prov.complete}   "
        f"schema v{prov.schema_version}   created {prov.created}",
        "",
        "status",
    ]
    lines += _table([[code.label, str(int((status == code).sum()))] for code in Status])
    lines += ["", "split (all / usable)"]
    usable = np.isin(status, [int(Status.OK), int(Status.OK_PRIOR)])
    lines += _table(
        [
            [name, str(int((split == i).sum())), str(int(((split == i) & usable).sum()))]
            for i, name in enumerate(prov.splits)
        ]
    )
    lines += ["", *face_lines(group, status)]
    lines += ["", "label (all / usable)"]
    names = list(prov.label_names) + ["(unknown)"]
    codes = list(range(len(prov.label_names))) + [-1]
    lines += _table(
        [
            [name, str(int((label == c).sum())), str(int(((label == c) & usable).sum()))]
            for name, c in zip(names, codes)
            if (label == c).any() or c >= 0
        ]
    )
    lines += ["", "label sets (fer-train --labels NAME; the first is the default)"]
    lines += _table(
        [[name, definition["kind"], ", ".join(definition["names"])] for name, definition in prov.label_sets.items()]
    )
    lines += ["", "arrays"]
    lines += array_table(group, path)
    lines += ["", "provenance"]
    lines += [f"  config_sha256    {prov.config_sha256}", f"  manifest_sha256  {prov.manifest_sha256}"]
    for role, model in prov.models.items():
        lines.append(f"  model {role:<10} {model['file']} sha256 {model['sha256'][:16]}...")
    lines.append("  versions         " + ", ".join(f"{k} {v}" for k, v in prov.versions.items()))
    lines.append("  config           " + json.dumps(prov.config, sort_keys=True))
    if prov.box_mapping is not None:
        lines.append(f"  dataset boxes    mapped to dlib's framing: {prov.box_mapping}")
    for added in prov.guidance_added:
        models = "".join(f", {m['file']} sha256 {m['sha256'][:16]}..." for m in added.models.values())
        failed = "".join(f", {name} failed on {count} (guidance_errors)" for name, count in added.failed.items())
        lines.append(f"  added            {', '.join(added.types)} ({added.finished}{models}{failed})")
    if prov.growing is not None:
        lines.append(
            f"  ADDING           {', '.join(prov.growing_types)} (unfinished, not offered to training; "
            "run fer-preprocess STORE --guidance with them again to finish)"
        )
    return "\n".join(lines)


def face_lines(group: zarr.Group, status: np.ndarray) -> list[str]:
    """How many faces the detector found per sample, and how many ok samples kept the largest of
    several for lack of a dataset box."""
    undecided = undecided_faces(group)
    if undecided is None:
        return ["faces found by the detector: not recorded (a store built before fer-preprocess recorded them)"]
    faces = read_array(group, FACES_DETECTED)
    ran = status != Status.PENDING
    lines = ["faces found by the detector (samples)"]
    lines += _table(
        [
            ["none (or not run)", str(int(((faces == 0) & ran).sum()))],
            ["one", str(int((faces == 1).sum()))],
            ["several", str(int((faces > 1).sum()))],
            [
                "several, largest kept (no box to choose)",
                f"{int(undecided.sum())}   (fer-store show STORE --several-faces --list)",
            ],
        ]
    )
    return lines


def array_table(group: zarr.Group, location: str | Path) -> list[str]:
    """One row per array: shape, dtype, chunk, shard, dimension names, and for a local store the
    bytes on disk (total and per sample)."""
    local = StoreLocation.parse(location)
    n = array_in(group, STATUS).shape[0]
    rows = [["name", "shape", "dtype", "chunk", "shard", "dims", "on disk", "per sample"]]
    for name, array in sorted(group.arrays()):
        on_disk = bytes_on_disk(Path(local.path) / name) if local.is_local else None
        rows.append(
            [
                name,
                str(tuple(array.shape)),
                str(array.dtype),
                str(tuple(array.chunks)),
                str(tuple(array.shards)) if array.shards else "-",
                ",".join(str(name) for name in getattr(array.metadata, "dimension_names", None) or ()),
                "-" if on_disk is None else f"{on_disk / 1e6:.2f} MB",
                "-" if on_disk is None else f"{on_disk / max(n, 1):.0f} B",
            ]
        )
    return _table(rows)


def list_arrays(location: str | Path) -> str:
    """``fer-store ls``: the arrays of a store."""
    return "\n".join(array_table(open_store(location), location))


def diff_stores(a: str | Path, b: str | Path) -> str:
    """``fer-store diff``: provenance, config and counts of two stores side by side; differences
    are marked with ``*``."""
    group_a, group_b = open_store(a), open_store(b)  # once each: a remote open is a request
    pa, pb = provenance_of(group_a), provenance_of(group_b)
    ga, gb = stored_guidance(group_a), stored_guidance(group_b)

    def row(name: str, va: object, vb: object) -> list[str]:
        return ["*" if va != vb else " ", name, str(va), str(vb)]

    rows = [[" ", "", str(a), str(b)]]
    for key in ("dataset", "schema_version", "complete", "created", "config_sha256", "manifest_sha256"):
        rows.append(row(key, getattr(pa, key), getattr(pb, key)))
    for key in sorted(set(pa.counts) | set(pb.counts)):
        rows.append(row(f"count {key}", pa.counts.get(key, 0), pb.counts.get(key, 0)))
    rows.append(row("guidance", ", ".join(ga), ", ".join(gb)))
    for role in sorted(set(pa.models) | set(pb.models)):
        rows.append(
            row(
                f"model {role}",
                pa.models.get(role, {}).get("sha256", "-")[:16],
                pb.models.get(role, {}).get("sha256", "-")[:16],
            )
        )
    for key in sorted(set(pa.versions) | set(pb.versions)):
        rows.append(row(f"version {key}", pa.versions.get(key), pb.versions.get(key)))
    config = differing_keys(pa.preprocess_config.to_dict(), pb.preprocess_config.to_dict())
    lines = _table(rows)
    lines += ["", "config: identical" if not config else "config differs:"] + [f"  * {line}" for line in config]
    return "\n".join(lines)
