"""Training and inspecting from stores served over HTTP (nginx, fer-store serve) and S3 (moto)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import s3fs

from fer_models.config import TrainConfig
from fer_models.evaluation import evaluate_checkpoint
from fer_models.run_directory import train
from pipeline.store import open_store
from tests.sharing.servers import NGINX, nginx, s3_server, store_server

BIN = Path(sys.executable).parent
QUICK = dict(model="cnn", epochs=1, batch_size=16, seed=3)


@pytest.fixture(scope="module")
def local_run(fer_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("local-run") / "run"
    return train(TrainConfig(store=str(fer_store), **QUICK), out), out


def same_as_local(summary: dict, local: dict) -> None:
    assert summary["train_samples"] == local["train_samples"] == 42
    assert summary["test_accuracy"] == local["test_accuracy"] and summary["confusion"] == local["confusion"]


def test_training_from_fer_store_serve_equals_training_from_disk(fer_store, local_run, tmp_path):
    local, local_out = local_run
    with store_server(fer_store) as url:
        summary = train(TrainConfig(store=url, **QUICK), tmp_path / "run")
        same_as_local(summary, local)
        streamed = train(TrainConfig(store=url, in_memory=False, workers=2, **QUICK), tmp_path / "workers")
        same_as_local(streamed, local)  # spawned loader workers open the URL themselves
        scored = evaluate_checkpoint(local_out / "best.pt", url, "test", device="cpu")
        assert scored["accuracy"] == local["test_accuracy"] and scored["same_preprocessing"]
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
        bucket = s3fs.S3FileSystem()
        bucket.mkdir("lab-stores")
        bucket.put(str(fer_store), "lab-stores/fer.zarr", recursive=True)
        summary = train(TrainConfig(store="s3://lab-stores/fer.zarr", **QUICK), tmp_path / "run")
        same_as_local(summary, local)
        np.testing.assert_array_equal(
            open_store("s3://lab-stores/fer.zarr")["image"][:], open_store(fer_store)["image"][:]
        )
