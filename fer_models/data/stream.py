"""The batch stream: selected samples from a guidance store, a batch at a time, for training and
evaluation.

:class:`StoreBatches` iterates whole batches of the fields a model reads (the aligned image, the
landmarks, any guidance arrays) of a :class:`~fer_models.data.selection.Selection`, as ``uint8`` /
``float32`` tensors straight from the store. Conversion to float and augmentation happen on the
training device (:mod:`fer_models.data.augment`), so loader workers only read and shuffle.

Samples are never read one by one: a store is read a window of whole shards at a time, decoded
by :mod:`pipeline.store.shard_reader` into buffers kept from epoch to epoch, and shuffled in memory
over the window (the shard order is shuffled too); the next window is decoded while this one's
batches are made. A store whose selected fields fit in memory can be held entirely in memory
(``in_memory``), and then shuffles globally. Both read paths give the same tensors for the same
samples.

DataLoader workers (``num_workers > 0``, spawn context) each open the store themselves and read
their own share of the shards; nothing zarr-related is pickled. Under data-parallel training
(``rank`` of ``ranks`` processes) every batch is the rank's contiguous share of the global batch
(:func:`rank_share`).
"""

from __future__ import annotations

from collections.abc import Iterator
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from fer_models.data.selection import Selection
from fer_models.data.window_buffers import WindowBuffers
from fer_models.data.worker_batch import WorkerBatch
from pipeline.errors import StoreError
from pipeline.store import array_in, open_store, provenance_of
from pipeline.store.recorded_checksums import RecordedChecksums, damaged_store_error
from pipeline.store.shard_reader import DECODE_THREADS, PendingShards

IN_MEMORY_LIMIT_BYTES = 2 * 1024**3  # "auto" holds a selection in memory up to this size
WINDOW_SHARDS = 8  # shards read and shuffled together when streaming


def _decode_threads() -> int:
    """Threads decoding shards: all the pool's in the training process, one in a loader worker
    (its sibling workers use the other cores)."""
    return DECODE_THREADS if torch.utils.data.get_worker_info() is None else 1


def rank_share(rows: Any, rank: int, size: int) -> Any:
    """Rank ``rank``'s contiguous share of a global batch's ``rows`` (numpy array or tensor):
    ``len(rows) / size`` of them when it divides, else the first ranks one more."""
    if size == 1:
        return rows
    if isinstance(rows, torch.Tensor):
        return rows.tensor_split(size)[rank]
    return np.array_split(rows, size)[rank]


class StoreBatches(torch.utils.data.IterableDataset[dict[str, torch.Tensor]]):
    """Batches of selected samples, read a shard at a time.

    Each item is a dict of ``B`` samples: ``index`` ``(B,) int64`` (store indices), ``target``
    ``(B,) int64`` or ``(B, K) float32``, and each field asked for as stored: ``image``
    ``(B, C, S, S) uint8``, ``landmarks`` ``(B, 68, 2) float32`` (aligned pixels), guidance maps
    ``(B, C, H, H) uint8`` and boxes ``(B, R, 4) float32``.

    Args:
        store: store path.
        selection: the samples (from :func:`select_samples`).
        fields: store arrays to read.
        batch_size: samples per batch.
        shuffle: shuffle samples (and shard order) with a generator seeded by ``(seed, epoch)``
            (:meth:`set_epoch`), so an epoch's order is reproducible.
        drop_last: drop a last incomplete batch.
        in_memory: ``True`` reads the selection once and keeps it; ``False`` streams it from the
            store every epoch; ``"auto"`` keeps it when it takes at most 2 GiB.
        window_shards: when streaming, at most how many shards are read and shuffled together. Each
            process that streams (the training process, or each loader worker) keeps two window
            buffers of ``batch_size + window_shards * shard_size`` samples of the fields from its
            first epoch on: about 210 MB at S = 112 with the default guidance (50 KB a sample).
    """

    def __init__(
        self,
        store: str | Path,
        selection: Selection,
        fields: tuple[str, ...],
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        in_memory: bool | str = "auto",
        window_shards: int = WINDOW_SHARDS,
        rank: int = 0,
        ranks: int = 1,
    ):
        super().__init__()
        self.store = str(store)
        self.selection = selection
        self.fields = tuple(fields)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.window_shards = window_shards
        self.rank, self.ranks = rank, ranks
        self._epoch = 0
        self._shared_epoch = None  # set by share_epoch: the epoch seen by persistent loader workers
        group = open_store(self.store)
        missing = [name for name in self.fields if name not in group]
        if missing:
            raise StoreError(f"{store} has no array {missing[0]!r}")
        self.shard_size = provenance_of(group).preprocess_config.shard_size
        sample_bytes = sum(
            int(np.prod(array.shape[1:])) * array.dtype.itemsize
            for array in (array_in(group, name) for name in self.fields)
        )
        if in_memory == "auto":
            in_memory = sample_bytes * len(selection) <= IN_MEMORY_LIMIT_BYTES
        self.in_memory = bool(in_memory)
        self._arrays: dict[str, np.ndarray] | None = None  # the selection, when held in memory
        self._handles: dict[str, zarr.Array[Any]] | None = None  # the fields' arrays, opened once
        self._checksums: RecordedChecksums | None = None  # what the store recorded for them
        self._buffers: WindowBuffers | None = None  # this process's, when streaming
        self._streamed_epoch: int | None = None  # the epoch of the last pass this process streamed to its end

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_arrays=None, _handles=None, _checksums=None, _buffers=None)  # workers read their own share
        return state

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s shuffle order for the next iteration (in loader workers too, once
        :meth:`share_epoch` was called)."""
        self._epoch = epoch
        if self._shared_epoch is not None:
            self._shared_epoch.value = epoch

    @property
    def epoch(self) -> int:
        return self._epoch if self._shared_epoch is None else self._shared_epoch.value

    def share_epoch(self, context: BaseContext) -> None:
        """Keep the epoch in shared memory of ``context`` (a multiprocessing context), so loader
        workers that outlive an epoch (``persistent_workers``) take each new epoch's order."""
        if self._shared_epoch is None:
            self._shared_epoch = context.RawValue("q", self._epoch)

    def __len__(self) -> int:
        """Number of batches in an epoch (with one loader process)."""
        full, rest = divmod(len(self.selection), self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def _blocks(self) -> list[tuple[int, np.ndarray]]:
        """``(shard start, positions into the selection)`` of every shard holding selected samples."""
        shard = self.selection.index // self.shard_size
        starts = np.flatnonzero(np.r_[True, shard[1:] != shard[:-1]])
        bounds = np.r_[starts, len(shard)]
        return [(int(shard[a]) * self.shard_size, np.arange(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def _arrays_of(self) -> dict[str, zarr.Array[Any]]:
        """The store's array handles for the fields, opened once (not per read or per epoch),
        with the checksums every shard read is checked against."""
        if self._handles is None:
            group = open_store(self.store)
            try:
                self._checksums = RecordedChecksums.of(group, self.fields)
            except StoreError as error:
                raise damaged_store_error(self.store, error) from error
            self._handles = {name: array_in(group, name) for name in self.fields}
        return self._handles

    def _load_all(self) -> dict[str, np.ndarray]:
        """The selection's fields, ``{name: (N, ...)}``, read once a window of shards at a time
        (the next window decoded while this one is copied out)."""
        if self._arrays is None:
            handles = self._arrays_of()
            arrays = {name: np.empty((len(self.selection), *a.shape[1:]), a.dtype) for name, a in handles.items()}
            blocks = self._blocks()
            windows = [
                blocks[first : first + self.window_shards] for first in range(0, len(blocks), self.window_shards)
            ]
            buffers = WindowBuffers(handles, self.window_shards, 0, _decode_threads(), self._wait, self._checksums)
            with buffers.pass_over([self._shards(window) for window in windows]) as reading:
                for k, window in enumerate(windows):
                    buffer, _ = reading.window(k)
                    for i, (begin, positions) in enumerate(window):
                        rows = i * self.shard_size + self.selection.index[positions] - begin
                        for name, values in arrays.items():
                            values[positions] = buffer[name][rows]
            self._arrays = arrays
        return self._arrays

    def _batch(self, arrays: dict[str, np.ndarray], rows: np.ndarray, positions: np.ndarray) -> dict[str, torch.Tensor]:
        """This rank's share of the global batch at buffer ``rows`` (selection ``positions``)."""
        rows, positions = rank_share(rows, self.rank, self.ranks), rank_share(positions, self.rank, self.ranks)
        sources = {name: (values, rows) for name, values in arrays.items()}
        sources.update(index=(self.selection.index, positions), target=(self.selection.target, positions))
        if torch.utils.data.get_worker_info() is not None:  # to cross to the training process in one piece
            return WorkerBatch.gathered(sources)
        return {name: torch.from_numpy(values[rows]) for name, (values, rows) in sources.items()}

    def in_memory_arrays(self) -> dict[str, np.ndarray]:
        """The selection's fields, ``{name: (N, ...)}`` in their stored dtypes, read once and kept."""
        return self._load_all()

    def epoch_order(self) -> np.ndarray:
        """``(N,) int64`` positions into the selection, in the order this epoch visits them when
        held in memory: a permutation drawn from the seed and the epoch, or ``0..N-1`` unshuffled."""
        if not self.shuffle:
            return np.arange(len(self.selection))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.selection))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = torch.utils.data.get_worker_info()
        worker_id, workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        epoch = self.epoch
        rng = np.random.default_rng([self.seed, epoch])
        if self.in_memory:
            order = self.epoch_order()[worker_id::workers]
            arrays = self._load_all()
            for first in range(0, len(order), self.batch_size):
                rows = order[first : first + self.batch_size]
                if len(rows) < self.batch_size and self.drop_last:
                    return
                yield self._batch(arrays, rows, rows)
            return
        yield from self._stream(self._windows(rng, worker_id, workers), rng, epoch, (worker_id, workers))

    def _windows(self, rng: np.random.Generator, worker_id: int, workers: int) -> list[list[tuple[int, np.ndarray]]]:
        """This process's windows of ``(shard start, positions into the selection)`` blocks, in
        the order of ``rng`` (the shard order is shuffled first): as few windows as
        ``window_shards`` allows, their sizes differing by one shard at most. A short last window
        leaves too little time to decode the next epoch's first one (docs/benchmarks.md: 12
        shards in windows of 6 and 6 streamed 15% faster than in windows of 8 and 4)."""
        blocks = self._blocks()
        if self.shuffle:
            blocks = [blocks[i] for i in rng.permutation(len(blocks))]
        blocks = blocks[worker_id::workers]
        bounds = np.linspace(0, len(blocks), -(-len(blocks) // self.window_shards) + 1).round().astype(int)
        return [blocks[first:stop] for first, stop in zip(bounds[:-1], bounds[1:])]

    def _stream(
        self,
        windows: list[list[tuple[int, np.ndarray]]],
        rng: np.random.Generator,
        epoch: int,
        worker: tuple[int, int],
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of ``windows`` read a window of shards at a time (:class:`WindowBuffers`), each
        window shuffled with the samples left over from the one before (fewer than a batch), which
        are carried into the lead of the next window's buffer.

        From the second pass on, the next pass's first window is decoded during this one's last:
        an epoch with few windows (a small split, or one loader worker's share) would otherwise
        wait for a whole window at its start (after a run's last epoch that read is wasted: one
        window). The next pass is taken to be of the epoch after ``epoch`` when the caller
        advanced the epoch since the pass before (:meth:`set_epoch`, as training does), else of
        ``epoch`` again: a guess that misses drops the read and costs a window."""
        buffers = self._window_buffers()
        with buffers.pass_over([self._shards(window) for window in windows]) as reading:
            carry_positions = np.zeros(0, dtype=np.int64)
            for k, window in enumerate(windows):
                buffer, other = reading.window(k)
                if k + 1 == len(windows) and self._streamed_epoch is not None:
                    following = epoch + (epoch != self._streamed_epoch)  # a caller that never advances: this one again
                    upcoming = self._windows(np.random.default_rng([self.seed, following]), *worker)
                    if upcoming:
                        reading.read_ahead(self._shards(upcoming[0]))
                # where each sample of this window is in the buffer: the carried ones first
                where = np.concatenate(
                    [
                        np.arange(len(carry_positions)),
                        *(
                            buffers.lead + i * self.shard_size + self.selection.index[positions] - begin
                            for i, (begin, positions) in enumerate(window)
                        ),
                    ]
                )
                positions = np.concatenate([carry_positions, *(p for _, p in window)])
                order = rng.permutation(len(positions)) if self.shuffle else np.arange(len(positions))
                full = len(order) // self.batch_size * self.batch_size
                for first in range(0, full, self.batch_size):
                    batch = order[first : first + self.batch_size]
                    yield self._batch(buffer, where[batch], positions[batch])
                rest = order[full:]
                if k + 1 == len(windows):
                    if len(rest) and not self.drop_last:
                        yield self._batch(buffer, where[rest], positions[rest])
                else:
                    for name, values in other.items():  # the next window lies past the lead
                        values[: len(rest)] = buffer[name][where[rest]]
                    carry_positions = positions[rest]
            self._streamed_epoch = epoch
            reading.finished()

    def _shards(self, window: list[tuple[int, np.ndarray]]) -> list[int]:
        """The shard numbers of a window's blocks."""
        return [begin // self.shard_size for begin, _ in window]

    def _window_buffers(self) -> WindowBuffers:
        """This process's window buffers, made on its first pass, led by room for a batch."""
        if self._buffers is None:
            handles = self._arrays_of()
            self._buffers = WindowBuffers(
                handles, self.window_shards, self.batch_size, _decode_threads(), self._wait, self._checksums
            )
        return self._buffers

    def _wait(self, pending: PendingShards) -> None:
        try:
            pending.wait()
        except Exception as error:  # a damaged chunk read by zarr raises whatever its codec raises
            raise damaged_store_error(self.store, error) from error


def make_loader(
    batches: StoreBatches, num_workers: int = 0, pin_memory: bool = False, persistent: bool = False
) -> torch.utils.data.DataLoader[dict[str, torch.Tensor]]:
    """A DataLoader over ready-made batches; workers are started with ``spawn`` (zarr's event
    loop and the HTTP store's sessions do not survive ``fork``). ``persistent``: the workers are started once
    and serve every epoch (each takes the epoch set by :meth:`StoreBatches.set_epoch` before the
    loader is iterated), instead of being started again for each pass.

    The loader draws its workers' base seed from a generator of its own, not from torch's global
    one: starting a pass leaves the training's random stream (dropout) as it was, so a run is the
    same whether its batches come from a loader or are made on the device."""
    context = torch.multiprocessing.get_context("spawn") if num_workers > 0 else None
    if persistent and context is not None:
        batches.share_epoch(context)
    return torch.utils.data.DataLoader(
        batches,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        multiprocessing_context=context,
        persistent_workers=persistent and num_workers > 0,
        generator=torch.Generator(),
    )
