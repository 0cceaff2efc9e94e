"""``fer-store verify``: prove a store is intact and complete, or say what is wrong where.

Checks, in order: the store opens (metadata inside the allow-list, known schema); every array's
own ``zarr.json`` equals its entry in the consolidated metadata; the provenance's config hash
matches its config; the arrays are those the schema and config call for, with the right shapes,
data types and dimension names; no sample is pending and the recorded counts match ``status``;
no guidance growth is unfinished; and every chunk of every array decodes, which checks its crc32c
checksum (and the shard index's), so a flipped byte in any chunk is found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipeline.config import PreprocessConfig, sha256_of_json
from pipeline.errors import FerStoreError
from pipeline.store import (
    ATTRS_KEY, Status, array_specs, guidance_specs, open_store, status_counts,
)  # fmt: skip
from pipeline.store_location import read_json


@dataclass(frozen=True)
class Fault:
    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


def verify_store(location: str, progress: Callable[[str], None] = lambda line: None) -> list[Fault]:
    """Every fault found in the store at ``location`` (empty: intact and complete)."""
    try:
        group = open_store(location)
    except FerStoreError as error:
        return [Fault("store", str(error))]
    faults: list[Fault] = []
    provenance = dict(group.attrs[ATTRS_KEY])
    raw_store = group.store
    root = read_json(raw_store, "zarr.json") or {}
    consolidated = (root.get("consolidated_metadata") or {}).get("metadata") or {}
    if not consolidated:
        faults.append(Fault("zarr.json", "no consolidated metadata (the run that built the store did not finish)"))
    for name, document in consolidated.items():
        own = read_json(raw_store, f"{name}/zarr.json")
        if own != document:
            faults.append(Fault(f"{name}/zarr.json", "missing, or differs from the consolidated metadata"))

    if sha256_of_json(provenance.get("config")) != provenance.get("config_sha256"):
        faults.append(Fault("provenance", "config_sha256 does not match the recorded config"))
    try:
        config = PreprocessConfig.from_dict(provenance["config"])
    except Exception as error:  # noqa: BLE001 - any damage to the recorded config
        return [*faults, Fault("provenance", f"the recorded config cannot be read: {error}")]
    n_votes = group["votes"].shape[1] if "votes" in group else 0
    detections = "faces_detected" in group or "face_score" in group  # absent from stores of before they existed
    expected = {spec.name: spec for spec in array_specs(config, n_votes, "subject" in group, detections)}
    grown = tuple(name for record in provenance.get("guidance_added", []) for name in record["types"])
    expected.update({spec.name: spec for spec in guidance_specs(grown, config)})
    n = int(provenance.get("counts", {}).get("total", -1))
    for name, spec in expected.items():
        if name not in group:
            faults.append(Fault(name, "missing array"))
            continue
        array = group[name]
        if tuple(array.shape) != (n, *spec.sample_shape):
            faults.append(Fault(name, f"shape {tuple(array.shape)}, expected {(n, *spec.sample_shape)}"))
        if spec.dtype is not str and array.dtype != np.dtype(spec.dtype):
            faults.append(Fault(name, f"data type {array.dtype}, expected {spec.dtype}"))
        if tuple(array.metadata.dimension_names or ()) != spec.dims:
            faults.append(Fault(name, f"dimension names {array.metadata.dimension_names}, expected {spec.dims}"))
    for name in sorted(set(group.array_keys()) - set(expected)):
        faults.append(Fault(name, "an array the schema does not define"))
    if "growing" in provenance:
        faults.append(Fault("provenance", f"adding {', '.join(provenance['growing']['types'])} is unfinished"))

    status_parts = []
    for name in sorted(group.array_keys()):
        array = group[name]
        block = (array.shards or array.chunks)[0]
        progress(f"checking {name}")
        for start in range(0, array.shape[0], block):
            stop = min(start + block, array.shape[0])
            try:
                values = array[start:stop]
            except Exception as error:  # noqa: BLE001 - a damaged chunk raises whatever its codec raises
                key = "/".join(["c", str(start // block)] + ["0"] * (array.ndim - 1))
                faults.append(Fault(f"{name}/{key} (samples {start}-{stop - 1})", f"{type(error).__name__}: {error}"))
                continue
            if name == "status":
                status_parts.append(values)
    if "status" in group and not any(f.where.startswith("status/") for f in faults):
        counts = status_counts(np.concatenate(status_parts))
        if counts[Status.PENDING.label]:
            faults.append(Fault("status", f"{counts[Status.PENDING.label]} samples pending: the store is incomplete"))
        recorded = provenance.get("counts", {})
        if any(recorded.get(key) != value for key, value in counts.items()):
            faults.append(Fault("provenance", f"recorded counts {recorded} differ from the status array's {counts}"))
        if not provenance.get("complete"):
            faults.append(Fault("provenance", "the store is not marked complete"))
    return faults
