"""Dataset roots and the paths inside them: checked before any work, never allowed to leave."""

from __future__ import annotations

import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

from pipeline.errors import DatasetError


def require_directory(root: Path | None, what: str) -> Path:
    """Check a dataset root exists and is a directory; return it resolved."""
    if root is None:
        raise DatasetError(f"the {what} dataset needs a root directory: pass --root DIR (DATA_ROOT=DIR)")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"dataset root {root} {'is not a directory' if root.exists() else 'does not exist'}; "
            f"set DATA_ROOT (--root) to the {what} dataset's top folder"
        )
    return root.resolve()


def given_root(root: Path | None) -> Path:
    """``root``, which a dataset whose sources lie under a root directory is always read with."""
    if root is None:
        raise DatasetError("this dataset's sources lie under a root directory: pass --root DIR (DATA_ROOT=DIR)")
    return Path(root)


def escapes_root(relative: str) -> bool:
    """True for a path a dataset file must not name: absolute (POSIX or Windows) or using ``..``."""
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    return posix.is_absolute() or windows.is_absolute() or bool(windows.drive) or ".." in windows.parts


def resolve_inside(root: Path, source: str) -> Path:
    """``root / source``, refusing sources that leave the root (absolute paths, ``..``, symlinks
    pointing outside)."""
    path = (root / source).resolve()
    if escapes_root(source) or not path.is_relative_to(root.resolve()):
        raise DatasetError(f"source {source!r} points outside the dataset root {root}")
    return path


def read_file_inside(root: Path, source: str) -> bytes:
    """The bytes of the regular file ``root / source``.

    Raises:
        DatasetError: the source leaves the root, or is not a regular file (a directory, FIFO,
            socket or device: a FIFO would block the reader forever).
        OSError: missing or unreadable (permissions); RuntimeError: a symlink loop.
    """
    path = resolve_inside(root, source)
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "a special file"
        raise DatasetError(f"{source} is {kind}, not an image file")
    return path.read_bytes()


class FilesUnderRoot:
    """The ``read`` of an adapter whose sources are files under the dataset root."""

    def read(self, root: Path | None, source: str) -> bytes:
        """The encoded file ``root / source`` (see :func:`read_file_inside`)."""
        return read_file_inside(given_root(root), source)
