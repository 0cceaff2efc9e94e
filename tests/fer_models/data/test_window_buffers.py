"""The window buffers on their own: what each window's buffer holds, the read-ahead taken or
dropped, a pass left early, passes at once. A synthetic store: no real data needed."""

import numpy as np
import pytest

from fer_models.data import window_buffers
from fer_models.data.window_buffers import WindowBuffers
from pipeline.store import array_in, open_store

LEAD = 3
SHARD = 16  # the synthetic store's shard size: 48 samples in 3 shards


@pytest.fixture
def arrays(synthetic_store):
    group = open_store(synthetic_store)
    return {name: array_in(group, name) for name in ("image", "landmarks", "label")}


@pytest.fixture
def started(monkeypatch) -> list:
    """Every decode started: (its shards, its PendingShards)."""
    calls = []
    real = window_buffers.start_reading_shards

    def recording(arrays, shards, out, threads, checksums):
        pending = real(arrays, shards, out, threads, checksums)
        calls.append((list(shards), pending))
        return pending

    monkeypatch.setattr(window_buffers, "start_reading_shards", recording)
    return calls


def assert_holds(buffer, arrays, shards):
    """``buffer`` holds ``shards`` past the lead, each where :meth:`WindowBuffers.start` puts it."""
    for name, array in arrays.items():
        for i, shard in enumerate(shards):
            rows = buffer[name][LEAD + i * SHARD : LEAD + (i + 1) * SHARD]
            np.testing.assert_array_equal(rows, array[shard * SHARD : (shard + 1) * SHARD])


def test_each_window_is_decoded_past_the_lead_while_the_next_is_read(arrays, started):
    buffers = WindowBuffers(arrays, window_shards=2, lead=LEAD, threads=2)
    windows = [[2, 0], [1]]
    with buffers.pass_over(windows) as reading:
        buffer, other = reading.window(0)
        assert [shards for shards, _ in started] == [[2, 0], [1]]  # window 1 started as window 0 is handed out
        assert_holds(buffer, arrays, [2, 0])
        for values in other.values():  # the caller carries samples into the next buffer's lead
            values[:LEAD] = 7
        carried = {name: values[:LEAD].copy() for name, values in other.items()}
        second, _ = reading.window(1)
        assert second is other
        assert_holds(second, arrays, [1])
        for name, values in second.items():
            np.testing.assert_array_equal(values[:LEAD], carried[name])  # no decode wrote the lead
        reading.finished()
    assert all(pending.done() for _, pending in started)


def test_a_pass_takes_the_read_ahead_of_its_first_window_and_drops_another(arrays, started):
    buffers = WindowBuffers(arrays, window_shards=1, lead=LEAD, threads=2)
    with buffers.pass_over([[0], [1]]) as reading:
        reading.window(0)
        last, _ = reading.window(1)
        reading.read_ahead([2])
        reading.finished()
    with buffers.pass_over([[2], [0]]) as reading:  # starts with the window read ahead: not read again
        first, _ = reading.window(0)
        assert_holds(first, arrays, [2])
        assert last is not first and any(last is buffer for buffer in reading.buffers)
        assert [shards for shards, _ in started] == [[0], [1], [2], [0]]
        reading.window(1)
        reading.read_ahead([1])
        reading.finished()
    with buffers.pass_over([[0]]) as reading:  # another first window: the read-ahead is dropped
        only, _ = reading.window(0)
        assert_holds(only, arrays, [0])
        reading.finished()
    assert [shards for shards, _ in started][-2:] == [[1], [0]]
    assert all(pending.done() for _, pending in started)


def test_a_pass_left_early_waits_for_its_reads_and_keeps_its_buffers(arrays, started):
    buffers = WindowBuffers(arrays, window_shards=1, lead=LEAD, threads=2)
    with pytest.raises(RuntimeError, match="the consumer stopped"):
        with buffers.pass_over([[0], [1], [2]]) as reading:
            reading.window(0)
            kept = reading.buffers
            raise RuntimeError("the consumer stopped")
    assert all(pending.done() for _, pending in started)  # nothing writes into the kept buffers
    with buffers.pass_over([[1]]) as reading:
        assert reading.buffers is kept
        assert_holds(reading.window(0)[0], arrays, [1])


def test_passes_at_once_get_buffers_of_their_own(arrays):
    buffers = WindowBuffers(arrays, window_shards=1, lead=LEAD, threads=2)
    with buffers.pass_over([[0], [1]]) as one, buffers.pass_over([[1], [0]]) as two:
        assert not {id(b) for b in one.buffers} & {id(b) for b in two.buffers}
        first_one, _ = one.window(0)
        first_two, _ = two.window(0)
        assert_holds(first_one, arrays, [0])
        assert_holds(first_two, arrays, [1])
        assert_holds(one.window(1)[0], arrays, [1])
        assert_holds(two.window(1)[0], arrays, [0])


def test_a_pass_over_no_windows_reads_nothing(arrays, started):
    buffers = WindowBuffers(arrays, window_shards=1, lead=LEAD, threads=2)
    with buffers.pass_over([]) as reading:
        reading.finished()
    assert started == []
