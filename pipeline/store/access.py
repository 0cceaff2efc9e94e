"""Opening a store and asking what it holds.

:func:`open_store` is the one way in: read-only opens (any location) check the metadata against
the allow-list (:mod:`pipeline.store.metadata`) and the schema before zarr reads anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from pipeline.errors import StoreError
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.store.location import open_group_readonly
from pipeline.store.provenance import Provenance
from pipeline.store.schema import (
    CHANNELS_ATTR,
    FACES_DETECTED,
    MESSAGE,
    SEVERAL_FACES_PREFIX,
    STATUS,
    Status,
    check_layouts,
)


def store_exists(path: str | Path) -> bool:
    return (Path(path) / "zarr.json").is_file()


def open_store(location: str | Path, mode: Literal["r", "r+"] = "r") -> zarr.Group:
    """Open a store's root group after checking it is a schema-v1 FER store.

    Args:
        location: for reading, a local path, ``file://``, ``http(s)://``, ``s3://`` URL or a
            ``.zarr.zip`` file (see :mod:`pipeline.store.location`); for writing, a local path.
        mode: ``"r"`` (read-only, never writes; the metadata is checked against the allow-list
            and :func:`~pipeline.store.schema.check_layouts` first) or ``"r+"`` (local stores this software builds).

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
        Provenance.from_attrs(group.attrs.asdict())
    except StoreError as error:
        raise StoreError(f"{location} {error}") from None
    return group


def array_in(group: zarr.Group, name: str) -> zarr.Array[Any]:
    """The array ``name`` of an open store (zarr types a group's member as an array or a group).

    Raises:
        StoreError: ``name`` is a group.
    """
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"'{name}' in the store is a group where an array belongs")
    return node


def read_array(group: zarr.Group, name: str, selection: Any = slice(None)) -> np.ndarray:
    """``group[name][selection]`` as a numpy array (zarr types a read as an array or a scalar)."""
    return np.asarray(array_in(group, name)[selection])


def channel_names(array: zarr.Array[Any]) -> list[str]:
    """The names of the entries of ``array``'s axis after ``sample`` (its ``channels`` attribute)."""
    names = array.attrs[CHANNELS_ATTR]
    if not isinstance(names, list):
        raise StoreError(f"the attribute {CHANNELS_ATTR!r} of {array.path!r} is not a list of names")
    return [str(name) for name in names]


def provenance_of(group: zarr.Group) -> Provenance:
    """The provenance of an open store (:func:`open_store` checked that it parses)."""
    return Provenance.from_attrs(group.attrs.asdict())


def read_provenance(location: str | Path) -> Provenance:
    """The provenance of the store at ``location`` (opened read-only, checked)."""
    return provenance_of(open_store(location))


def stored_guidance(group: zarr.Group) -> tuple[str, ...]:
    """The guidance types an open store holds complete (training asks this before it starts);
    types still being added (:func:`~pipeline.store.growth.begin_growth`) are left out."""
    growing = growth_in_progress(group)
    return tuple(name for name in GUIDANCE_TYPES if name in group and name not in growing)


def growth_in_progress(group: zarr.Group) -> tuple[str, ...]:
    """The guidance types an unfinished growth is adding (empty when none)."""
    return provenance_of(group).growing_types


def undecided_faces(group: zarr.Group) -> np.ndarray | None:
    """``(N,) bool``: ok samples whose photo showed several faces and whose largest was kept for
    lack of a dataset box (it may be the wrong person); None for a store without detection arrays."""
    if FACES_DETECTED not in group:
        return None
    several = (read_array(group, FACES_DETECTED) > 1) & (read_array(group, STATUS) == Status.OK)
    messages = read_array(group, MESSAGE)
    named = np.array([str(m).startswith(SEVERAL_FACES_PREFIX) for m in messages], dtype=np.bool_)
    return np.asarray(several & named)


def bytes_on_disk(path: str | Path) -> int:
    """Total size of the files under a local store directory."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(folder, name))
    return total
