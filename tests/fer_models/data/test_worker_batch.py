"""A loader worker's batch crosses to the training process as one shared-memory tensor."""

import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import torch
import torch.multiprocessing  # registers how tensors are pickled to cross processes
from torch.utils.data._utils.collate import default_convert

from fer_models.data.worker_batch import WorkerBatch


def cross(batch: dict) -> dict:
    """What the training process receives: the DataLoader's conversion, then a pickle through
    shared memory."""
    return pickle.loads(ForkingPickler.dumps(default_convert(batch)))


def test_a_worker_batch_crosses_as_one_shared_tensor_and_unpacks_equal():
    rng = np.random.default_rng(0)
    sources = {
        "image": rng.integers(0, 255, (20, 1, 7, 7), dtype=np.uint8),  # 49 bytes a sample: the next field is realigned
        "landmarks": rng.random((20, 68, 2), dtype=np.float32),
        "index": np.arange(100, 120),
        "target": rng.random((20, 3), dtype=np.float32),
        "regions": np.zeros((20, 0, 4), np.float32),
    }
    rows = np.array([3, 17, 0, 3, 9])
    received = cross(WorkerBatch.gathered({name: (values, rows) for name, values in sources.items()}))
    assert type(received) is dict and list(received) == list(sources)
    for name, values in sources.items():
        assert received[name].dtype == torch.from_numpy(values).dtype and received[name].shape == values[rows].shape
        np.testing.assert_array_equal(received[name].numpy(), values[rows])
    assert len({tensor.untyped_storage().data_ptr() for tensor in received.values()}) == 1
    assert received["image"].is_shared()


def test_a_batch_changed_after_gathering_crosses_field_by_field():
    values = np.arange(24, dtype=np.float32).reshape(6, 4)
    batch = WorkerBatch.gathered({"a": (values, np.array([1, 2])), "b": (values, np.array([5]))})
    batch["a"] = batch["a"] * 2
    received = cross(batch)
    np.testing.assert_array_equal(received["a"].numpy(), values[[1, 2]] * 2)
    np.testing.assert_array_equal(received["b"].numpy(), values[[5]])
