"""The store loader: both read paths, shuffling, DataLoader workers."""

import numpy as np
import pytest
import torch

from fer_models.data import window_buffers
from fer_models.data.selection import select_samples
from fer_models.data.stream import StoreBatches, make_loader

FIELDS = ("image", "landmarks", "heatmap", "mask_soft", "regions")


def collect(batches) -> dict[str, torch.Tensor]:
    parts = list(batches)
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def by_index(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    order = torch.argsort(values["index"])
    return {key: tensor[order] for key, tensor in values.items()}


@pytest.mark.parametrize("batch_size", [5, 16, 64])
def test_both_read_paths_give_the_same_tensors(fer_store, batch_size):
    selection = select_samples(fer_store, "test")
    memory = StoreBatches(fer_store, selection, FIELDS, batch_size, in_memory=True)
    stream = StoreBatches(fer_store, selection, FIELDS, batch_size, in_memory=False, window_shards=1)
    memory_batches, stream_batches = list(memory), list(stream)
    assert len(memory_batches) == len(stream_batches) == len(memory)
    for a, b in zip(memory_batches, stream_batches):
        assert a.keys() == b.keys() == {*FIELDS, "index", "target"}
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    whole = collect(memory_batches)
    np.testing.assert_array_equal(whole["index"].numpy(), selection.index)
    assert whole["image"].dtype == torch.uint8 and whole["image"].shape[1:] == (1, 48, 48)
    assert whole["landmarks"].dtype == torch.float32 and whole["regions"].shape[1:] == (6, 4)


def test_shuffling_is_reproducible_per_epoch_and_keeps_every_sample_once(fer_store):
    selection = select_samples(fer_store, "train")
    for in_memory in (True, False):
        batches = StoreBatches(
            fer_store, selection, FIELDS, 8, shuffle=True, seed=3, in_memory=in_memory, window_shards=1
        )
        batches.set_epoch(1)
        first = collect(batches)
        again = collect(batches)
        batches.set_epoch(2)
        other = collect(batches)
        torch.testing.assert_close(first["index"], again["index"], rtol=0, atol=0)
        assert not torch.equal(first["index"], other["index"])
        assert sorted(first["index"].tolist()) == selection.index.tolist()
        reference = by_index(collect(StoreBatches(fer_store, selection, FIELDS, 8, in_memory=True)))
        for key, tensor in by_index(first).items():
            torch.testing.assert_close(tensor, reference[key], rtol=0, atol=0)


@pytest.mark.parametrize("in_memory", [False, True], ids=["streamed", "in_memory"])
def test_dataloader_workers_spawned_read_their_own_shards(fer_store, in_memory):
    """Each worker's batches cross as one shared tensor (fer_models/data/worker_batch.py) and arrive
    equal to the batches read in this process."""
    selection = select_samples(fer_store, "train")
    batches = StoreBatches(fer_store, selection, FIELDS, 8, shuffle=True, in_memory=in_memory, window_shards=1)
    parts = list(make_loader(batches, num_workers=2))
    assert all(len({tensor.untyped_storage().data_ptr() for tensor in part.values()}) == 1 for part in parts)
    from_workers = by_index(collect(parts))
    reference = by_index(collect(StoreBatches(fer_store, selection, FIELDS, 8, in_memory=True)))
    for key, tensor in from_workers.items():
        torch.testing.assert_close(tensor, reference[key], rtol=0, atol=0)


def test_persistent_workers_take_each_epochs_order_as_workers_started_per_epoch_do(fer_store):
    selection = select_samples(fer_store, "train")

    def streamed() -> StoreBatches:
        return StoreBatches(fer_store, selection, ("image",), 8, shuffle=True, seed=5, in_memory=False, window_shards=1)

    persistent_batches = streamed()
    persistent = make_loader(persistent_batches, num_workers=2, persistent=True)
    orders = []
    for epoch in (1, 2, 3):
        persistent_batches.set_epoch(epoch)
        fresh_batches = streamed()
        fresh_batches.set_epoch(epoch)
        expected = collect(make_loader(fresh_batches, num_workers=2))["index"]
        orders.append(collect(persistent)["index"])
        torch.testing.assert_close(orders[-1], expected, rtol=0, atol=0)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])


def test_epochs_cut_short_or_run_side_by_side_read_the_same_samples(synthetic_store):
    """Window buffers outlive an epoch and the next window is decoded ahead: an epoch left after
    one batch, and two iterations at once, must not write into each other's samples."""
    selection = select_samples(synthetic_store, "train")  # 36 samples: shards of 16, 16 and 4
    batches = StoreBatches(synthetic_store, selection, ("image", "heatmap"), 2, in_memory=False, window_shards=1)
    expected = collect(batches)
    for _ in range(3):
        next(iter(batches))  # a run stopped early; its read-ahead is still decoding
    first, second = iter(batches), iter(batches)
    from_first = [next(first) for _ in range(17)]  # into the last window, one batch left
    from_second = [next(second)]  # its first window decoded, into a buffer of its own
    from_first += list(first)
    from_second += list(second)
    for key, tensor in expected.items():
        torch.testing.assert_close(collect(from_first)[key], tensor, rtol=0, atol=0)
        torch.testing.assert_close(collect(from_second)[key], tensor, rtol=0, atol=0)


def test_reading_the_next_epoch_ahead_changes_no_batch(synthetic_store):
    """From the second epoch on, an epoch's last window overlaps the decoding of the next epoch's
    first; the epochs must equal those of a loader that never saw the epoch before, also when the
    epoch read ahead is not the one that comes (an epoch repeated, one skipped)."""
    selection = select_samples(synthetic_store, "train")

    def loader() -> StoreBatches:
        fields = ("image", "heatmap", "landmarks")
        return StoreBatches(synthetic_store, selection, fields, 5, shuffle=True, in_memory=False, window_shards=1)

    reused = loader()
    for epoch in (1, 2, 3, 5, 5, 6, 6):
        reused.set_epoch(epoch)
        fresh = loader()
        fresh.set_epoch(epoch)
        expected = collect(fresh)
        for key, tensor in collect(reused).items():
            torch.testing.assert_close(tensor, expected[key], rtol=0, atol=0, msg=f"epoch {epoch}, {key}")


@pytest.mark.parametrize("advance", [True, False], ids=["set_epoch", "same_epoch"])
def test_the_window_read_ahead_is_of_the_pass_the_caller_makes_next(synthetic_store, monkeypatch, advance):
    """Whether the caller advances the epoch before each pass (as training does) or never sets
    it, from the third pass on each window is decoded once: the first one ahead, during the pass
    before, never read ahead for another epoch and dropped."""
    windows_started = []
    start_reading_shards = window_buffers.start_reading_shards
    monkeypatch.setattr(
        window_buffers, "start_reading_shards", lambda *args: windows_started.append(1) or start_reading_shards(*args)
    )
    selection = select_samples(synthetic_store, "train")
    batches = StoreBatches(
        synthetic_store, selection, ("image",), 5, shuffle=True, seed=2, in_memory=False, window_shards=1
    )
    windows = len(batches._blocks())
    first_shard = [batches._windows(np.random.default_rng([2, epoch]), 0, 1)[0][0][0] for epoch in (0, 1)]
    assert windows > 1 and first_shard[0] != first_shard[1]  # so a wrong guess shows
    for epoch in range(4):
        if advance:
            batches.set_epoch(epoch)
        list(batches)
    assert len(windows_started) == 4 * windows + 1  # + the fifth pass's first window
