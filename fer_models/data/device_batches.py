"""Device-resident batches: a selection held on the training device, batches gathered there.

When the fields a model reads fit on the training device, :class:`DeviceBatches` moves them there
once (``uint8`` images and maps stay ``uint8``: a quarter of float32) and then makes every batch
with one gather per field on the device: no loader, no per-step host copy, nothing for the host
to do but queue kernels. On the CPU the "device" is RAM, and the gather replaces the loader's
per-batch numpy indexing and tensor wrapping.

The batches are those of the in-memory :class:`~fer_models.data.stream.StoreBatches` they come
from, the same samples in the same order (the order is drawn by the same seeded generator, on the
host, once per epoch), so a run gives the same results either way.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from fer_models.data.stream import StoreBatches, rank_share

# On CUDA, the data may take at most this share of the memory free when the run starts.
CUDA_MEMORY_SHARE = 0.5


def selection_bytes(batches: StoreBatches) -> int:
    """Bytes of the fields of ``batches``' selection, as they would be held (index and target included)."""
    arrays = batches.in_memory_arrays()
    return sum(values.nbytes for values in arrays.values()) + batches.selection.index.nbytes * 2


def fits_on(device: torch.device, nbytes: int) -> bool:
    """Whether ``nbytes`` of data may live on ``device``: on CUDA, within :data:`CUDA_MEMORY_SHARE`
    of its free memory; on the CPU, always (the caller holds it in RAM already)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= CUDA_MEMORY_SHARE * free


class DeviceBatches:
    """Batches of ``source`` (an in-memory :class:`StoreBatches`) gathered on ``device``.

    Yields dicts of the fields (``(B, ...)`` in their stored dtypes), ``index`` (``(B,) int64``,
    store indices) and ``target`` (``(B,)`` class indices or ``(B, K) float32`` distributions),
    all on ``device``.
    """

    def __init__(self, source: StoreBatches, device: torch.device):
        if not source.in_memory:
            raise ValueError("DeviceBatches needs an in-memory StoreBatches")
        self.source = source
        self.device = device
        fields = {name: torch.from_numpy(values) for name, values in source.in_memory_arrays().items()}
        fields["index"] = torch.from_numpy(np.ascontiguousarray(source.selection.index))
        fields["target"] = torch.from_numpy(np.ascontiguousarray(source.selection.target))
        self.tensors = {name: values.to(device) for name, values in fields.items()}

    @property
    def in_memory(self) -> bool:
        return True

    def set_epoch(self, epoch: int) -> None:
        self.source.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = torch.from_numpy(self.source.epoch_order()).to(self.device)
        size = self.source.batch_size
        for first in range(0, len(order), size):
            rows = order[first : first + size]
            if len(rows) < size and self.source.drop_last:
                return
            rows = rank_share(rows, self.source.rank, self.source.ranks)
            yield {name: values.index_select(0, rows) for name, values in self.tensors.items()}
