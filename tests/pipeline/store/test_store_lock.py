"""One writer per store: a second run refuses, a dead run's lock is taken over."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipeline.compute.run import SYNCHRONOUS, preprocess
from pipeline.config import build_config
from pipeline.datasets import get_dataset
from pipeline.progress import Lines
from pipeline.store.lock import StoreLockedError, lock_path, store_lock

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


RACE = """
import sys
from pathlib import Path
from pipeline.store.lock import StoreLockedError, store_lock

folder, rounds, me = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for r in range(rounds):
    while not (folder / f"go-{r}").exists():  # both processes start the round together
        pass
    try:
        with store_lock(folder / f"s{r}.zarr"):
            (folder / f"held-{r}-{me}").touch()
            while not (folder / f"done-{r}").exists():  # hold until the parent saw both try
                pass
    except StoreLockedError:
        (folder / f"refused-{r}-{me}").touch()
        while not (folder / f"done-{r}").exists():
            pass
"""


def test_two_processes_racing_for_a_stale_lock_never_both_hold_it(tmp_path):
    """300 rounds: a stale lock (its pid is dead) on a fresh store, two processes let go at once
    to take it over; in every round exactly one holds it and the other is refused."""
    rounds = 300
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": "2026-12-04T00:00:00+00:00"})
    for r in range(rounds):
        lock_path(tmp_path / f"s{r}.zarr").write_text(stale)
    racers = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), str(rounds), name]) for name in "ab"]
    outcomes = []
    for r in range(rounds):
        (tmp_path / f"go-{r}").touch()
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob(f"held-{r}-*")) + list(tmp_path.glob(f"refused-{r}-*"))) < 2:
            assert time.monotonic() < deadline, f"round {r}: a racer neither held nor was refused"
            time.sleep(0.0005)
        outcomes.append(len(list(tmp_path.glob(f"held-{r}-*"))))
        (tmp_path / f"done-{r}").touch()
    for racer in racers:
        assert racer.wait(timeout=30) == 0
    assert outcomes == [1] * rounds
    assert not any(lock_path(tmp_path / f"s{r}.zarr").exists() for r in range(rounds))


def test_a_lock_that_holds_no_record_is_not_taken_over(tmp_path):
    store = tmp_path / "s.zarr"
    lock_path(store).write_text("")
    with pytest.raises(StoreLockedError, match=r"does not hold a run's record .* delete .*s\.zarr\.lock"):
        with store_lock(store):
            pass
    assert lock_path(store).exists()
