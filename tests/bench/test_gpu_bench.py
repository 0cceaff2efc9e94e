"""bench/gpu.py, the GPU check, runs end to end on the CPU (where no GPU is lent, this is what keeps it working)."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench" / "gpu.py"


def test_the_gpu_check_reports_loader_and_model_throughput_of_each_model(synthetic_store):
    command = [sys.executable, str(BENCH), "--store", str(synthetic_store), "--device", "cpu"]
    command += ["--models", "cnn,local-nonlocal", "--steps", "1", "--epochs", "2", "--workers", "0"]
    report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    assert report["device"] == "cpu" and set(report["models"]) == {"cnn", "local-nonlocal"}
    regions = report["models"]["local-nonlocal"]
    assert regions["inputs"] == ["image", "regions"]
    loader = regions["loader_samples_per_s"]["workers_0"]
    assert loader["samples_per_s"] > 0 and loader["steady_samples_per_s"] > 0 and regions["train_steps_per_s"] > 0
    assert regions["host_syncs_per_step"] is None  # counted on CUDA only
    assert regions["gpu_waits_on_data"] == (regions["loader_over_model"] < 1)
