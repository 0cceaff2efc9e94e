"""A stage that cannot run in this environment stops the build, is never recorded as the
samples' fault and leaves nothing marked complete: cv2 without ``cv2.saliency`` (what installing
FiftyOne's opencv-python-headless over the contrib build leaves), in the driver and in a real
``dask worker`` process."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.compute.stage_check import systematic_failure
from tests.support.stores import fer2013_build_options

VENV_BIN = Path(sys.executable).parent
# cv2 as a broken install leaves it: contrib's saliency module gone
BREAK_CV2 = "import cv2\nif hasattr(cv2, 'saliency'):\n    del cv2.saliency\n"  # a preload runs twice
OPTIONS = ["--guidance", "heatmap,saliency"]


def provenance(store: Path) -> dict:
    return json.loads((store / "zarr.json").read_text())["attributes"]["fer_store"]


def test_a_build_whose_stage_cannot_run_here_stops_before_any_work(tmp_path, fer2013_small):
    store = tmp_path / "s.zarr"
    command = f"{BREAK_CV2}from cli.preprocess import main\nmain()"
    run = subprocess.run(
        [sys.executable, "-c", command, str(store), *fer2013_build_options(fer2013_small), *OPTIONS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "cannot run in this environment" in output and "saliency" in output and "make viewer" in output
    assert "Traceback" not in output and not store.exists()


@pytest.fixture
def broken_worker(tmp_path):
    """The address of a real cluster (``dask scheduler``, one ``dask worker``) whose worker's cv2
    has no ``saliency``."""
    preload = tmp_path / "break_cv2.py"
    preload.write_text(BREAK_CV2)
    scheduler_file = tmp_path / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = [VENV_BIN / "dask", "scheduler", "--scheduler-file", scheduler_file, "--port", "0"]
    processes = [subprocess.Popen([*scheduler, "--dashboard-address", ":0", "--no-show"], **quiet)]
    try:
        deadline = time.monotonic() + 60
        while not (scheduler_file.exists() and scheduler_file.read_text().strip()):
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.05)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = [VENV_BIN / "dask", "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
        processes.append(subprocess.Popen([*worker, "--preload", preload], **quiet))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        for process in processes:
            process.kill()
            process.wait()


def test_a_worker_whose_stage_cannot_run_stops_the_run_and_a_rerun_completes(tmp_path, fer2013_small, broken_worker):
    store = tmp_path / "s.zarr"
    build = [VENV_BIN / "fer-preprocess", store, *fer2013_build_options(fer2013_small), *OPTIONS]
    run = subprocess.run([*build, "--scheduler", broken_worker], capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "AttributeError" in output and "saliency" in output and "no sample was recorded as failed" in output
    assert "run the same command again" in output and "Traceback" not in output
    assert not provenance(store).get("complete")
    run = subprocess.run([*build, "--workers", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    recorded = provenance(store)
    assert recorded["complete"] and recorded["counts"]["failed"] == 0, recorded["counts"]


def test_most_of_a_shard_failing_alike_is_a_fault_of_a_stage():
    same = ["ValueError: the network gave NaN"] * 9
    fault = systematic_failure(same, 16, 32)
    assert fault is not None and "9 of the 16 samples of the shard at sample 32" in str(fault)
    assert systematic_failure(same[:8], 16, 32) is None  # half is not most
    assert systematic_failure(same[:5], 5, 0) is None  # too few samples to tell
    assert systematic_failure([f"ValueError: bad file {i}" for i in range(16)], 16, 0) is None
