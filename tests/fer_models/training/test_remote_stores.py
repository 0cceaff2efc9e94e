"""Training and inspecting from stores served over HTTP (nginx, fer-store serve) and S3 (moto, rclone)."""

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from fer_models.training.config import TrainConfig
from fer_models.training.evaluation import evaluate_checkpoint
from fer_models.training.run_directory import train
from fer_models.training.run_summary import RunSummary
from pipeline.store import open_store
from pipeline.store.location import StoreLocation
from tests.support.servers import NGINX, nginx, put_in_bucket, rclone_s3, s3_server, store_server

BIN = Path(sys.executable).parent
QUICK = dict(model="cnn", epochs=1, batch_size=16, seed=3)


@pytest.fixture(scope="module")
def local_run(fer_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-run") / "run"
    return train(TrainConfig(store=str(fer_store), **QUICK), out), out


def same_as_local(summary: RunSummary, local: RunSummary) -> None:
    assert summary.train_samples == local.train_samples == 42
    assert summary.test == local.test


def test_training_from_fer_store_serve_equals_training_from_disk(fer_store, local_run, tmp_path):
    local, local_out = local_run
    with store_server(fer_store) as url:
        summary = train(TrainConfig(store=url, **QUICK), tmp_path / "run")
        same_as_local(summary, local)
        streamed = train(TrainConfig(store=url, in_memory=False, workers=2, **QUICK), tmp_path / "workers")
        same_as_local(streamed, local)  # spawned loader workers open the URL themselves
        scored = evaluate_checkpoint(local_out / "best.pt", url, "test", device="cpu")
        assert scored["accuracy"] == local.test.accuracy and scored["same_preprocessing"]
        info = subprocess.run([BIN / "fer-store", "info", url], capture_output=True, text=True)
        assert info.returncode == 0 and "samples 84" in info.stdout
        checkpoint = json.loads((tmp_path / "run" / "config.json").read_text())
        assert checkpoint["store"] == url


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx-light; .ci/run does)")
def test_training_from_nginx_without_directory_listings(fer_store, local_run, tmp_path):
    local, _ = local_run
    published = tmp_path / "www" / "stores"
    shutil.copytree(fer_store, published / "fer.zarr")
    with nginx(tmp_path / "www", tmp_path / "nginx") as base:
        listing = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/stores/fer.zarr/"],
            capture_output=True,
            text=True,
        )
        assert listing.stdout == "403"  # no directory listings
        summary = train(TrainConfig(store=f"{base}/stores/fer.zarr", **QUICK), tmp_path / "run")
    same_as_local(summary, local)


def test_training_from_an_s3_bucket(fer_store, local_run, tmp_path, monkeypatch):
    local, _ = local_run
    with s3_server(monkeypatch):
        put_in_bucket(fer_store, "s3://lab-stores/fer.zarr")
        summary = train(TrainConfig(store="s3://lab-stores/fer.zarr", **QUICK), tmp_path / "run")
        same_as_local(summary, local)
        np.testing.assert_array_equal(
            open_store("s3://lab-stores/fer.zarr")["image"][:], open_store(fer_store)["image"][:]
        )
        in_xarray = xr.open_zarr(open_store("s3://lab-stores/fer.zarr").store, consolidated=True)
        np.testing.assert_array_equal(in_xarray["heatmap"].values, open_store(fer_store)["heatmap"][:])


@pytest.mark.parametrize("server", ["moto", "rclone"])
def test_byte_ranges_from_s3_servers_that_answer_with_206_or_with_200(server, fer_store, tmp_path, monkeypatch):
    """moto answers a range with 206 as S3 does; rclone with 200, which obstore refuses: the
    store then slices the whole file."""
    key = "heatmap/c/0/0/0/0"
    content = (fer_store / key).read_bytes()
    with contextlib.ExitStack() as running:
        if server == "moto":
            running.enter_context(s3_server(monkeypatch))
            put_in_bucket(fer_store, "s3://lab/fer.zarr")
        else:
            (tmp_path / "buckets" / "lab").mkdir(parents=True)
            (tmp_path / "buckets" / "lab" / "fer.zarr").symlink_to(fer_store)
            running.enter_context(rclone_s3(tmp_path / "buckets", monkeypatch))
        store = StoreLocation.parse("s3://lab/fer.zarr").zarr_store()
        ranges = [RangeByteRequest(10, 500), OffsetByteRequest(len(content) - 100), SuffixByteRequest(300), None]
        read = sync(store.get_partial_values(default_buffer_prototype(), [(key, r) for r in ranges]))
    assert [buffer.to_bytes() for buffer in read] == [content[10:500], content[-100:], content[-300:], content]
    assert store._ranges_refused == (server == "rclone")


def test_wrong_s3_credentials_get_an_error_that_says_what_to_set(fer_store, tmp_path, monkeypatch):
    (tmp_path / "buckets" / "lab").mkdir(parents=True)
    (tmp_path / "buckets" / "lab" / "fer.zarr").symlink_to(fer_store)
    with rclone_s3(tmp_path / "buckets", monkeypatch):  # rclone checks signatures
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
        info = subprocess.run([BIN / "fer-store", "info", "s3://lab/fer.zarr"], capture_output=True, text=True)
    assert info.returncode == 1 and "Traceback" not in info.stderr, info.stderr
    assert "403 Forbidden" in info.stderr and "AWS_SECRET_ACCESS_KEY" in info.stderr, info.stderr
