"""``fer-store pack``: a finished store as one ``.zarr.zip`` file to send or publish.

Chunks are already compressed, so members are stored uncompressed; the zip opens read-only
wherever a store location is accepted.
"""

from __future__ import annotations

import os
import stat
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
    files = regular_files(store)
    partial = out.with_name(out.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for path in files:
                archive.write(path, path.relative_to(store).as_posix())
        os.replace(partial, out)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot write {out} ({error.strerror}); choose a writable place with room for it") from None
    return len(files)


def regular_files(store: Path) -> list[Path]:
    """Every file under ``store``, sorted; links (to files or folders) and anything but regular
    files and folders are refused rather than followed.

    Raises:
        StoreError: naming the first such entry.
    """
    files = []
    for folder, folders, names in os.walk(store, followlinks=False):
        for name in sorted(folders) + sorted(names):
            path = Path(folder, name)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise StoreError(
                    f"{path} is a symbolic link (to {os.readlink(path)}); a store holds regular files only, "
                    "so it is not packed: replace the link with the file it should be, or remove it"
                )
            if stat.S_ISREG(mode):
                files.append(path)
            elif not stat.S_ISDIR(mode):
                raise StoreError(f"{path} is not a regular file; a store holds regular files only, so it is not packed")
    return sorted(files)
