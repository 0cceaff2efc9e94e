"""One writer per store: a second run refuses, a dead run's lock is taken over."""

import os
import signal
import subprocess
import sys

import pytest

from pipeline.compute.run import SYNCHRONOUS, preprocess
from pipeline.config import build_config
from pipeline.datasets import get_dataset
from pipeline.progress import Lines
from pipeline.store.lock import StoreLockedError, lock_path

HOLD = "import sys, time; from pipeline.store.lock import store_lock\nwith store_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)"


def test_a_second_run_refuses_and_a_dead_runs_lock_is_taken_over(tmp_path):
    store = tmp_path / "s.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(store)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"  # a real other process writes the store
    config = build_config(get_dataset("sample").config_defaults)
    with pytest.raises(StoreLockedError, match=rf"another fer-preprocess \(pid {holder.pid}, started .*\) is writing"):
        preprocess(store, "sample", None, config, scheduler=SYNCHRONOUS)
    assert not store.exists()  # refused before any work
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(store).exists()  # left behind by the killed run
    said = []
    summary = preprocess(store, "sample", None, config, scheduler=SYNCHRONOUS, progress=Lines(said.append))
    assert summary.complete and any("taking over the stale lock" in line for line in said)
    assert not lock_path(store).exists()


def test_a_lock_from_another_host_names_the_file_to_delete(tmp_path):
    store = tmp_path / "s.zarr"
    lock_path(store).write_text('{"host": "node-17", "pid": 4242, "started": "2026-11-20T10:00:00+00:00"}')
    config = build_config(get_dataset("sample").config_defaults)
    with pytest.raises(StoreLockedError, match=r"on host node-17 .* if that run is dead, delete .*s\.zarr\.lock"):
        preprocess(store, "sample", None, config, scheduler=SYNCHRONOUS)
