"""Window buffers: windows of whole shards decoded into two buffers that take turns, kept from
one pass over a store to the next.

A pass over windows (each a list of shard numbers) decodes the next window into one buffer while
the caller makes batches from the other. Each buffer is led by ``lead`` rows that no decode
writes: room for samples the caller carries from one window into the next. The buffers outlive
the pass (allocating and first touching them cost as much as decoding a small store's epoch), and
a pass may decode the next pass's first window during its last one (:meth:`WindowPass.read_ahead`);
the next pass takes that read when it starts with the same window, and drops it otherwise. Passes
running at once get buffers of their own.

Decoding is :func:`pipeline.store.shard_reader.start_reading_shards`'s; this module owns only
which buffer is being written, which is being read, and what is kept between passes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import zarr

from pipeline.store.recorded_checksums import RecordedChecksums
from pipeline.store.shard_format import samples_per_shard
from pipeline.store.shard_reader import PendingShards, start_reading_shards

Buffer = dict[str, np.ndarray]  # per array, ``(lead + window_shards * shard_len, *sample_shape)``


@dataclass
class _ReadAhead:
    """A next pass's first window, being decoded into ``buffers[0]``."""

    shards: list[int]
    buffers: list[Buffer]
    pending: PendingShards

    def finish(self) -> list[Buffer]:
        """Wait for the read (its errors are for whoever reads the window); give back the buffers."""
        with contextlib.suppress(Exception):
            self.pending.wait()
        return self.buffers


class WindowBuffers:
    """The window buffers of one process over ``arrays`` (one store's, same shard length).

    Args:
        arrays: the arrays each window decodes, by name.
        window_shards: the most shards a window holds.
        lead: rows at the head of each buffer that no decode writes.
        threads: decoding threads (:func:`~pipeline.store.shard_reader.start_reading_shards`).
        wait: waits for a decode, raising what the caller wants raised for a damaged store.
        checksums: every shard decoded is checked against them (None: not checked).
    """

    def __init__(
        self,
        arrays: dict[str, zarr.Array[Any]],
        window_shards: int,
        lead: int,
        threads: int,
        wait: Callable[[PendingShards], None] = PendingShards.wait,
        checksums: RecordedChecksums | None = None,
    ):
        self.arrays, self.window_shards, self.lead, self.threads, self.wait = arrays, window_shards, lead, threads, wait
        self.checksums = checksums
        self.shard_len = samples_per_shard(next(iter(arrays.values())))
        self._spare: list[list[Buffer]] = []  # buffer pairs no pass is using
        self._ahead: _ReadAhead | None = None

    def pass_over(self, windows: list[list[int]]) -> WindowPass:
        """A pass over ``windows`` (lists of shard numbers, each at most ``window_shards`` long);
        use it as a context manager."""
        return WindowPass(self, windows)

    def start(self, shards: list[int], buffer: Buffer) -> PendingShards:
        """Start decoding ``shards`` into ``buffer`` past its lead: shard ``i`` at rows
        ``lead + i * shard_len`` on."""
        return start_reading_shards(
            self.arrays,
            shards,
            {name: values[self.lead :] for name, values in buffer.items()},
            self.threads,
            self.checksums,
        )

    def _take_buffers(self, first: list[int] | None) -> tuple[list[Buffer], PendingShards | None]:
        """A buffer pair for a pass starting with window ``first`` (None: no windows), and the
        decode of that window into the first buffer: the read-ahead when it is that window."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.shards == first:
            return ahead.buffers, ahead.pending
        if ahead is not None:  # another window than the one read ahead: drop that read
            self._spare.append(ahead.finish())
        buffers = self._spare.pop() if self._spare else []
        rows = self.lead + self.window_shards * self.shard_len
        buffers += [
            {name: np.empty((rows, *array.shape[1:]), array.dtype) for name, array in self.arrays.items()}
            for _ in range(2 - len(buffers))
        ]
        return buffers, None if first is None else self.start(first, buffers[0])


class WindowPass:
    """One pass over windows: :meth:`window` ``k`` waits for window ``k``'s decode, starts window
    ``k + 1``'s into the other buffer, and returns both buffers. Leaving the pass (``with``)
    waits for any decode still writing and keeps the buffers for the next pass, or hands the
    read-ahead on when the pass reached its end (:meth:`finished`)."""

    def __init__(self, owner: WindowBuffers, windows: list[list[int]]):
        self.owner, self.windows = owner, windows
        self.buffers, self._pending = owner._take_buffers(windows[0] if windows else None)
        self._ahead: _ReadAhead | None = None
        self._handed_on = False

    def __enter__(self) -> WindowPass:
        return self

    def window(self, k: int) -> tuple[Buffer, Buffer]:
        """``(buffer, other)``: window ``k`` decoded into ``buffer`` past the lead, and the buffer
        window ``k + 1`` is now being decoded into (its lead is the caller's to fill)."""
        buffer, other = self.buffers[k % 2], self.buffers[(k + 1) % 2]
        pending, self._pending = self._pending, None
        if pending is not None:
            self.owner.wait(pending)
        if k + 1 < len(self.windows):
            self._pending = self.owner.start(self.windows[k + 1], other)
        return buffer, other

    def read_ahead(self, shards: list[int]) -> None:
        """Start decoding the next pass's first window ``shards`` into the buffer the last window
        does not occupy (call it after :meth:`window` of the last window)."""
        last = len(self.windows) - 1
        buffer, other = self.buffers[last % 2], self.buffers[(last + 1) % 2]
        self._ahead = _ReadAhead(shards, [other, buffer], self.owner.start(shards, other))

    def finished(self) -> None:
        """The pass reached its end: its read-ahead (if any) goes to the next pass."""
        self.owner._ahead, self._handed_on = self._ahead, self._ahead is not None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._handed_on:  # the read-ahead's buffers are these: the next pass takes them
            return
        for reading in (self._pending, None if self._ahead is None else self._ahead.pending):
            if reading is not None:  # no decode may still write into a kept buffer
                with contextlib.suppress(Exception):
                    reading.wait()
        self.owner._spare.append(self.buffers)
