"""fer-train end to end on a small real FER-2013 store."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fer_models.registry import create_model, list_models
from pipeline.config import build_config
from pipeline.run import SYNCHRONOUS, preprocess

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def fer_store(tmp_path_factory, fer2013_small) -> Path:
    store = tmp_path_factory.mktemp("train") / "fer.zarr"
    config = build_config({"detect": {"prior": "full-frame"}, "align": {"size": 48, "color": "gray"}, "shard_size": 32})
    preprocess(store, "folder", fer2013_small, config, scheduler=SYNCHRONOUS, progress=False, echo=lambda _: None)
    return store


def test_every_registered_model_runs_forward_and_backward():
    for name in list_models():
        model = create_model(name, in_channels=1, num_classes=7, image_size=48)
        out = model({"image": torch.rand(4, 1, 48, 48)})
        loss = torch.nn.functional.cross_entropy(out["logits"], torch.tensor([0, 1, 2, 3]))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_fer_train_runs_one_epoch_from_the_store(fer_store, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [BIN / "fer-train", "--store", fer_store, "--model", "cnn", "--epochs", "2", "--batch-size", "16", "--out", out],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 and r["train_loss"] > 0 for r in log)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_samples"] == 42 and summary["eval_samples"] == 42
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    assert checkpoint["store_config_sha256"] and "model" in checkpoint


def test_fer_train_names_a_missing_split(fer_store, tmp_path):
    result = subprocess.run([BIN / "fer-train", "--store", fer_store, "--eval-split", "val", "--out", tmp_path / "r"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1 and "no split 'val'" in result.stderr and "train, test" in result.stderr
