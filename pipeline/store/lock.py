"""One writer per store: a lock file beside the store (``<store>.lock``), held for a whole
``fer-preprocess`` run (build, resume or growth).

The lock records the writer's host, process id and start time, and holds them from the moment it
exists: the record is written whole to a file of its own, which is then hard-linked to the lock's
name (a link fails where the name exists, so of two runs one gets it). A second run on the same
store refuses with who holds it. A lock whose process is gone (a run killed with ``kill -9``, a
machine that rebooted) is recognised as stale on the same host and taken over: under an
exclusive ``flock`` of the folder, the taker removes the lock only if it is still the stale file
it read (same inode and record), then competes for the name like any run. On another host liveness cannot
be checked, so the message says which file to delete once that run is known to be dead. The file
lies beside the store, not in it, so it never travels with a copied or packed store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import functools
import json
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from pipeline.errors import StoreError
from pipeline.progress import QUIET, Progress


class StoreLockedError(StoreError):
    """Another run is writing this store."""


def lock_path(store: str | Path) -> Path:
    store = Path(store).absolute()
    return store.with_name(store.name + ".lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _create(path: Path, record: dict[str, Any]) -> bool:
    """Make ``path`` hold ``record`` (JSON) if no lock exists there; True if this call made it."""
    whole = path.with_name(f"{path.name}.{record['pid']}.{secrets.token_hex(6)}")
    try:
        whole.write_text(json.dumps(record))
        os.link(whole, path)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise StoreError(
            f"cannot write the lock {path} ({error.strerror}): the folder holding the store must be writable by "
            "you, on a writable file system"
        ) from None
    finally:
        whole.unlink(missing_ok=True)
    return True


def _read(path: Path) -> tuple[dict[str, Any] | None, int | None]:
    """The lock's record (None if it cannot be parsed) and inode; ``(None, None)`` if it is gone."""
    try:
        with open(path, "rb") as handle:
            inode = os.fstat(handle.fileno()).st_ino
            text = handle.read(4096)
    except FileNotFoundError:
        return None, None
    try:
        record = json.loads(text)
    except ValueError:
        return None, inode
    return (record if isinstance(record, dict) else None), inode


def _remove_if_still(path: Path, inode: int, record: dict[str, Any]) -> None:
    """Remove the lock at ``path`` if it is still the file ``inode`` holding ``record``, under an
    exclusive flock of its folder, so that two runs taking over one stale lock cannot remove each
    other's new one. The inode alone is not enough: a file system reuses a freed inode at once, so
    the lock the other run has just made may have the stale one's number (two runs then both held
    the store, once in 300 races on ext4)."""
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        if _read(path) == (record, inode):
            path.unlink(missing_ok=True)
    finally:
        os.close(folder)  # releases the flock


@contextlib.contextmanager
def store_lock(store: str | Path, progress: Progress = QUIET) -> Iterator[None]:
    """Hold the write lock of ``store`` for the duration of the block.

    Raises:
        StoreLockedError: a live run holds it (or one on another host that cannot be checked), or
            the lock file is not one a run wrote.
    """
    path = lock_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    while not _create(path, me):
        holder, inode = _read(path)
        if inode is None:  # released since: try again
            continue
        if holder is None:
            raise StoreLockedError(
                f"the lock {path} does not hold a run's record (host, pid, start); if no fer-preprocess "
                f"is writing {store}, delete {path} and run again"
            )
        if holder.get("host") != me["host"]:
            raise StoreLockedError(
                f"a fer-preprocess on host {holder.get('host')} (pid {holder.get('pid')}, started "
                f"{holder.get('started')}) holds {path}; if that run is dead, delete {path} and run again"
            )
        if not isinstance(holder.get("pid"), int) or _alive(holder["pid"]):
            raise StoreLockedError(
                f"another fer-preprocess (pid {holder.get('pid')}, started {holder.get('started')}) is writing "
                f"{store}; wait for it to finish or stop it, then run again"
            )
        progress.line(f"taking over the stale lock {path} (pid {holder['pid']} is gone)")
        _remove_if_still(path, inode, holder)
    try:
        yield
    finally:
        holder, inode = _read(path)
        if holder == me and inode is not None:
            _remove_if_still(path, inode, me)


_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")


def holds_store_lock(
    function: Callable[Concatenate[str | Path, _Params], _Result],
) -> Callable[Concatenate[str | Path, _Params], _Result]:
    """Decorate a writer whose first argument is the store path (and which may take a ``progress``
    keyword) so that it runs holding :func:`store_lock`."""

    @functools.wraps(function)
    def locked(store_path: str | Path, /, *args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
        progress = kwargs.get("progress", QUIET)
        with store_lock(store_path, progress if isinstance(progress, Progress) else QUIET):
            return function(store_path, *args, **kwargs)

    return locked
