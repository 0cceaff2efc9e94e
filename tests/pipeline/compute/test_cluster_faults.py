"""Faults on a real distributed cluster: a ``dask scheduler`` and two ``dask worker`` processes
started here, one of them killed with SIGKILL in the middle of a run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.stores import expected_tree, fer2013_build_options, stores_equal

VENV_BIN = Path(sys.executable).parent


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def scheduler_address(scheduler_file: Path) -> str | None:
    """The address in the scheduler's file, once it is there (the file appears before it is written)."""
    try:
        return json.loads(scheduler_file.read_text())["address"]
    except (FileNotFoundError, ValueError, KeyError):
        return None


@pytest.fixture
def cluster(tmp_path):
    """``(scheduler address, [worker process, worker process])``: real processes, no nannies, so
    a killed worker stays dead."""
    scheduler_file = tmp_path / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [
        subprocess.Popen(
            [
                VENV_BIN / "dask",
                "scheduler",
                "--scheduler-file",
                scheduler_file,
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--no-show",
            ],
            **quiet,
        )
    ]
    try:
        wait_for(lambda: scheduler_address(scheduler_file), 60, "the scheduler")
        address = scheduler_address(scheduler_file)
        workers = [
            subprocess.Popen(
                [
                    VENV_BIN / "dask",
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-nanny",
                    "--no-dashboard",
                    "--name",
                    f"worker-{i}",
                ],
                **quiet,
            )
            for i in range(2)
        ]
        processes += workers
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
        yield address, workers
    finally:
        for process in processes:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing(tmp_path, fer2013_2k, cluster):
    address, workers = cluster
    options = fer2013_build_options(fer2013_2k)
    store = tmp_path / "s.zarr"
    n = len(expected_tree(fer2013_2k))
    total_shards = -(-n // 64)
    run = subprocess.Popen(
        [VENV_BIN / "fer-preprocess", store, *options, "--scheduler", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    chunks = store / "status" / "c"
    wait_for(lambda: chunks.exists() and len(list(chunks.iterdir())) >= 4, 120, "four shards")
    os.kill(workers[0].pid, signal.SIGKILL)
    done_at_kill = len(list(chunks.iterdir()))
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    assert done_at_kill < total_shards, "the worker should have died mid-run"
    assert workers[0].wait() == -signal.SIGKILL and workers[1].poll() is None
    # Every shard counted once: the run reports each sample once and nothing failed.
    output = stdout + stderr
    assert f"this run   {n} samples" in output and ", complete)" in output and "FAILED" not in output

    fresh = tmp_path / "fresh.zarr"
    subprocess.run(
        [VENV_BIN / "fer-preprocess", fresh, *options, "--scheduler", "synchronous"], check=True, capture_output=True
    )
    stores_equal(store, fresh)
