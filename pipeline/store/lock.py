"""One writer per store: a lock file beside the store (``<store>.lock``), held for a whole
``fer-preprocess`` run (build, resume or growth).

The lock records the writer's host, process id and start time. A second run on the same store
refuses with who holds it. A lock whose process is gone (a run killed with ``kill -9``, a machine
that rebooted) is recognised as stale on the same host and taken over. On another host liveness
cannot be checked, so the message says which file to delete once that run is known to be dead.
The file lies beside the store, not in it, so it never travels with a copied or packed store.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

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


@contextlib.contextmanager
def store_lock(store: str | Path, progress: Progress = QUIET) -> Iterator[None]:
    """Hold the write lock of ``store`` for the duration of the block.

    Raises:
        StoreLockedError: a live run holds it (or one on another host that cannot be checked).
    """
    path = lock_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    while True:
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = {}
            if holder.get("host") == me["host"] and isinstance(holder.get("pid"), int) and _alive(holder["pid"]):
                raise StoreLockedError(
                    f"another fer-preprocess (pid {holder['pid']}, started {holder.get('started')}) is writing "
                    f"{store}; wait for it to finish or stop it, then run again"
                ) from None
            if holder and holder.get("host") != me["host"]:
                raise StoreLockedError(
                    f"a fer-preprocess on host {holder.get('host')} (pid {holder.get('pid')}, started "
                    f"{holder.get('started')}) holds {path}; if that run is dead, delete {path} and run again"
                ) from None
            progress.line(f"taking over the stale lock {path} (pid {holder.get('pid')} is gone)")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(descriptor, "w") as handle:
            json.dump(me, handle)
        break
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def holds_store_lock(function: Callable) -> Callable:
    """Decorate a writer whose first argument is the store path (and which may take a ``progress``
    keyword) so that it runs holding :func:`store_lock`."""

    @functools.wraps(function)
    def locked(store_path, *args, **kwargs):
        with store_lock(store_path, kwargs.get("progress", QUIET)):
            return function(store_path, *args, **kwargs)

    return locked
