"""A batch that crosses from a DataLoader worker process to the training process in one piece.

torch sends each tensor of a worker's batch through shared memory of its own: it copies the
tensor there, then passes the segment's file descriptor over a new connection to the worker.
That took about 1 ms per tensor on the 2-core development machine, so a batch of seven tensors
(five fields, index, target) took 7-9 ms to cross where one tensor of the same bytes (up to 640
KB) takes 1 ms (docs/benchmarks.md, "Loader workers across epochs"). A :class:`WorkerBatch`
gathers every field of a batch straight into one shared-memory ``uint8`` tensor and is pickled as
that tensor and the fields' layout; unpickled, it is a plain dict of views of that tensor, with
the same names, dtypes, shapes and values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

ALIGNMENT = 64  # bytes: each field starts at a multiple, so any dtype can view its bytes
# One field of the packed tensor: name, dtype, shape, first byte, bytes.
Field = tuple[str, torch.dtype, tuple[int, ...], int, int]


class WorkerBatch(dict[str, torch.Tensor]):
    """``{name: tensor}``, every tensor a view of one shared-memory tensor (see :meth:`gathered`)."""

    _packed: torch.Tensor
    _layout: list[Field]
    _views: dict[str, torch.Tensor]  # the fields as gathered

    @classmethod
    def gathered(cls, sources: dict[str, tuple[np.ndarray, np.ndarray]]) -> WorkerBatch:
        """``{name: values[rows]}`` for each ``name: (values, rows)`` of ``sources`` (``values``
        ``(N, ...)`` of a numeric dtype, ``rows`` ``(B,)`` indices into it), each gathered straight
        into its place in the shared tensor."""
        layout: list[Field] = []
        size = 0
        for name, (values, rows) in sources.items():
            shape = (len(rows), *values.shape[1:])
            nbytes = int(np.prod(shape)) * values.dtype.itemsize
            layout.append((name, torch.from_numpy(values[:0]).dtype, shape, size, nbytes))
            size += -(-nbytes // ALIGNMENT) * ALIGNMENT
        packed = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(max(size, 1)))
        batch = cls(unpack(packed, layout))
        batch._packed, batch._layout, batch._views = packed, layout, dict(batch)
        for name, (values, rows) in sources.items():
            np.take(values, rows, axis=0, out=batch[name].numpy())
        return batch

    def __copy__(self) -> WorkerBatch:  # the DataLoader's default_convert copies it in the worker
        copy = WorkerBatch(self)
        copy._packed, copy._layout, copy._views = self._packed, self._layout, self._views
        return copy

    def __reduce__(self) -> tuple[Callable[..., dict[str, torch.Tensor]], tuple[object, ...]]:
        if self.keys() != self._views.keys() or any(self[name] is not view for name, view in self._views.items()):
            return dict, (dict(self),)  # changed since it was gathered: each tensor crosses on its own
        return unpack, (self._packed, self._layout)


def unpack(packed: torch.Tensor, layout: list[Field]) -> dict[str, torch.Tensor]:
    """The fields of a :class:`WorkerBatch`: views of ``packed`` ``(bytes,) uint8`` laid out as
    ``(name, dtype, shape, first byte, bytes)`` rows."""
    return {
        name: packed[start : start + nbytes].view(dtype).view(shape) for name, dtype, shape, start, nbytes in layout
    }
