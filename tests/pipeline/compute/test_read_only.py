"""A store on a read-only file system: building, adding guidance and packing say so, no traceback."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.fixture
def read_only(tmp_path, synthetic_store):
    """A read-only tmpfs holding a copy of the synthetic store (needs root to mount)."""
    mount_point = tmp_path / "read-only"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mount_point], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    shutil.copytree(synthetic_store, mount_point / "s.zarr")
    subprocess.run(["mount", "-o", "remount,ro", mount_point], check=True)
    yield mount_point
    subprocess.run(["umount", "-l", mount_point], check=False)


@pytest.mark.parametrize(
    "command",
    [
        ["fer-preprocess", "{ro}/new.zarr", "--dataset", "sample"],
        ["fer-preprocess", "{ro}/s.zarr", "--guidance", "regions"],
        ["fer-store", "pack", "{ro}/s.zarr", "{ro}/s.zarr.zip"],
    ],
    ids=["build", "add guidance", "pack"],
)
def test_a_read_only_place_is_named_with_what_to_change(read_only, command):
    args = [BIN / command[0], *(part.format(ro=read_only) for part in command[1:])]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "(Read-only file system)" in done.stderr and "writable" in done.stderr, done.stderr
