"""The disk fills during a run: on a size-limited tmpfs (root only; skipped with the reason
elsewhere) the run stops with a clear error, keeps every shard it finished, and resumes once the
filesystem has room."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.store import Status, bytes_on_disk
from tests.support.stores import fer2013_build_options, stores_equal

VENV_BIN = Path(sys.executable).parent


def mount_tmpfs(path: Path, size_bytes: int, remount: bool = False) -> subprocess.CompletedProcess:
    options = f"{'remount,' if remount else ''}size={size_bytes // 4096 * 4096}"
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)


@pytest.fixture
def small_disk(tmp_path):
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = mount_tmpfs(mount_point, 1 << 20)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root): {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.slow
def test_a_full_disk_stops_the_run_keeps_its_work_and_it_resumes(tmp_path, fer2013_2k, small_disk):
    options = fer2013_build_options(fer2013_2k)
    fresh = tmp_path / "fresh.zarr"
    subprocess.run(
        [VENV_BIN / "fer-preprocess", fresh, *options, "--scheduler", "synchronous"], check=True, capture_output=True
    )
    assert mount_tmpfs(small_disk, bytes_on_disk(fresh) // 2, remount=True).returncode == 0

    store = small_disk / "s.zarr"
    full = subprocess.run(
        [VENV_BIN / "fer-preprocess", store, *options, "--workers", "2"], capture_output=True, text=True
    )
    assert full.returncode == 1
    assert f"the disk holding {store} is full (No space left on device)" in full.stderr
    assert "run the same command again to resume" in full.stderr and "Traceback" not in full.stderr

    group, reference = zarr.open_group(str(store), mode="r"), zarr.open_group(str(fresh), mode="r")
    status = group["status"][:]
    done = status != Status.PENDING
    assert 0 < done.sum() < len(status) and not (status == Status.FAILED).any()
    for name in ("image", "landmarks", "heatmap", "saliency", "mask_soft", "message"):
        np.testing.assert_array_equal(group[name][:][done], reference[name][:][done], err_msg=name)

    assert mount_tmpfs(small_disk, 4 * bytes_on_disk(fresh), remount=True).returncode == 0
    resumed = subprocess.run(
        [VENV_BIN / "fer-preprocess", store, *options, "--workers", "2"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stderr
    stores_equal(store, fresh)
