"""Which sample a shard task is on, kept where a retry finds it after the worker died.

A file that kills the process decoding it (a decoder that crashes, an image that makes a worker
exceed its memory limit, so that Dask's nanny or the kernel ends it) would otherwise kill every
retry of its shard, and the shard's good samples would end as ``failed``. Before each sample, the
task writes the sample's index to ``<store>.in-progress/<shard start>`` (one ``pwrite``, a few
microseconds); a retry that finds an index there knows the previous attempt died on that sample.
A worker can die for reasons of its own (a node taken back, a kill), so one death proves nothing:
a sample that attempts died on :data:`DEATHS_TO_SKIP` times is left out (status ``failed``, with
a message), and the rest of the shard is written. The file is removed when the shard is written;
the folder lies beside the store, like the write lock, so it never travels with the store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import Counter
from pathlib import Path
from types import TracebackType

WRITING = -1  # the samples are done and the shard is being written: a death here is no sample's
DEATHS_TO_SKIP = 2  # Dask gives a task 3 attempts whose worker died (distributed's allowed-failures)
_WIDTH = 12

DIED_ON_MESSAGE = (
    "the worker processing this sample died (killed for memory, or a crash in a decoder); it was left "
    "out so that the rest of its shard could be written. Lower --max-pixels or give the workers more "
    "memory, then build a new store to include it"
)


class SampleInProgress:
    """The in-progress record of the shard starting at ``start`` of the store at ``store_path``;
    a context manager that removes it when the block ends without an error."""

    def __init__(self, store_path: str | Path, start: int):
        store = Path(store_path)
        self.path = store.with_name(store.name + ".in-progress") / str(start)
        self.died_on: frozenset[int] = frozenset()  # shard-relative indices to leave out
        self._descriptor = -1  # the record's file, while the shard is being computed

    def __enter__(self) -> SampleInProgress:
        died = []  # one entry per attempt that died, the sample it died on
        with contextlib.suppress(FileNotFoundError, ValueError):  # none yet, or a record cut short (a full disk)
            current, *earlier = (int(token) for token in self.path.read_text().split())
            died = [*earlier, current] if current >= 0 else earlier
        self.died_on = frozenset(index for index, deaths in Counter(died).items() if deaths >= DEATHS_TO_SKIP)
        self.path.parent.mkdir(exist_ok=True)
        self._descriptor = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        os.write(self._descriptor, (f"{WRITING:>{_WIDTH}}\n" + "".join(f"{i}\n" for i in sorted(died))).encode())
        return self

    def mark(self, index: int) -> None:
        """Record that sample ``index`` (shard-relative, or :data:`WRITING`) is being processed."""
        os.pwrite(self._descriptor, f"{index:>{_WIDTH}}".encode(), 0)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is not None:  # an error, not a death: no sample is to blame
            self.mark(WRITING)
        os.close(self._descriptor)
        if kind is None:
            self.path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # other shards' records are still there
                self.path.parent.rmdir()


def forget_samples_in_progress(store_path: str | Path) -> None:
    """Remove every in-progress record of the store at ``store_path`` (a store made anew)."""
    store = Path(store_path)
    shutil.rmtree(store.with_name(store.name + ".in-progress"), ignore_errors=True)
