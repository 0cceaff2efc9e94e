"""``fer-store pack``: a finished store as one ``.zarr.zip`` file to send or publish.

Chunks are already compressed, so members are stored uncompressed; the zip opens read-only
wherever a store location is accepted.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from pipeline.errors import StoreError
from pipeline.store import read_provenance


def pack_store(store: str | Path, out: str | Path) -> int:
    """Write the local store directory ``store`` to the zip file ``out`` (``*.zarr.zip``).

    Returns:
        The number of files packed.

    Raises:
        StoreError: not a finished local store, or ``out`` exists or is not a ``.zip`` path.
    """
    store, out = Path(store), Path(out)
    if not store.is_dir():
        raise StoreError(f"{store} is not a local store directory; pack the directory where the store was built")
    if out.suffix != ".zip":
        raise StoreError(f"name the packed store *.zarr.zip, not {out.name}")
    if out.exists():
        raise StoreError(f"{out} exists; choose another name or delete it")
    provenance = read_provenance(store)
    if not provenance.complete or provenance.growing is not None:
        raise StoreError(
            f"{store} is not finished (a run or a guidance growth did not complete); finish it before packing"
        )
    files = sorted(p for p in store.rglob("*") if p.is_file())
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for path in files:
            archive.write(path, path.relative_to(store).as_posix())
    os.replace(partial, out)
    return len(files)
