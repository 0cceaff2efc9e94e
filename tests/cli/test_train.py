"""fer-train and fer-eval end to end on small real stores."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_models.data.selection import SubjectFolds, select_samples, subject_folds
from fer_models.training.config import TrainConfig
from fer_models.training.run_directory import train
from pipeline.compute.run import SYNCHRONOUS, preprocess
from pipeline.config import build_config
from pipeline.datasets import get_dataset
from pipeline.errors import ConfigError
from tests.support import dataset_trees as trees

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def fer_store(tmp_path_factory, fer2013_small) -> Path:
    store = tmp_path_factory.mktemp("train") / "fer.zarr"
    config = build_config({"detect": {"prior": "full-frame"}, "align": {"size": 48, "color": "gray"}, "shard_size": 32})
    preprocess(store, "folder", fer2013_small, config, scheduler=SYNCHRONOUS)
    return store


def test_fer_train_runs_one_epoch_from_the_store_and_fer_eval_scores_it(fer_store, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [
            BIN / "fer-train",
            "--store",
            fer_store,
            "--model",
            "guided-stn",
            "--option",
            "guidance=saliency",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--out",
            out,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1" in result.stderr  # the progress bar
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1]
    assert log[0]["train_loss"] > 0 and not any("test" in key for key in log[0])  # the test split is read at the end
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["train_samples"] == 42
        and summary["test_samples"] == 42
        and summary["options"] == {"guidance": "saliency"}
    )
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and "no validation data: the last epoch is reported" in result.stdout
    # The console says what it chose and gives one readable line per epoch (log.jsonl keeps the figures).
    assert "labels: classes (the store's first label set; --labels chooses another): 7 classes, angry" in result.stdout
    assert "model guided-stn (guidance=saliency) reads image, saliency" in result.stdout
    assert re.search(r"^epoch 1/1: train loss \d+\.\d{4}; \d+ s$", result.stdout, re.MULTILINE), result.stdout
    one_class = len([column for column in zip(*summary["confusion"]) if sum(column) > 0]) == 1
    assert ("note: every test sample was predicted" in result.stdout) == one_class
    scored = subprocess.run(
        [
            BIN / "fer-eval",
            "--checkpoint",
            out / "best.pt",
            "--store",
            fer_store,
            "--split",
            "test",
            "--out",
            tmp_path / "eval",
        ],
        capture_output=True,
        text=True,
    )
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["accuracy"] == summary["test_accuracy"]
    bad = subprocess.run(
        [
            BIN / "fer-train",
            "--store",
            fer_store,
            "--model",
            "guided-stn",
            "--option",
            "guidence=x",
            "--out",
            tmp_path / "bad",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "KEY among: dropout=0.5, guidance='mask_soft'" in bad.stderr


def test_fer_train_names_a_missing_split(fer_store, tmp_path):
    result = subprocess.run(
        [BIN / "fer-train", "--store", fer_store, "--eval-split", "val", "--out", tmp_path / "r"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "no split 'val'" in result.stderr and "train, test" in result.stderr


def test_subject_folds_never_split_a_subject():
    subjects = np.array(["S010", "S011", "S010", "S020", "S011", "S030", "S040", "S020"])
    folds = subject_folds(subjects, 3)
    for subject in set(subjects):
        assert len(set(folds[subjects == subject])) == 1
    assert set(folds) == {0, 1, 2}
    with pytest.raises(ConfigError, match="6 folds need at least 6 subjects; the store has 5"):
        subject_folds(subjects, 6)


def test_label_sets_and_subject_folds_from_dataset_stores(tmp_path, fer2013_small, dlib_faces):
    """FERPlus's soft schemes (scored by majority), FER-2013 polarity, CK+ subject folds: trained
    from the stores."""
    quick = dict(epochs=1, batch_size=16)
    ferplus_root, ck_root = tmp_path / "ferplus", tmp_path / "ck"
    trees.write_ferplus(ferplus_root, 64)
    trees.write_ckplus(ck_root, fer2013_small)
    stores = {}
    for name, root in (("ferplus", ferplus_root), ("fer2013", ferplus_root), ("ckplus", ck_root)):
        stores[name] = tmp_path / f"{name}.zarr"
        config = build_config(get_dataset(name).config_defaults, {"shard_size": 32})
        preprocess(stores[name], name, root, config, scheduler=SYNCHRONOUS)

    for scheme in ("crossentropy", "probability"):  # soft targets trained on, scored by majority
        run = train(TrainConfig(store=str(stores["ferplus"]), labels=scheme, **quick), tmp_path / scheme)
        assert run.labels[1] == "happiness" and run.validation_split == "val" and run.test_split == "test"
        majority = select_samples(stores["ferplus"], "test", "8")
        assert run.test_samples == len(majority), scheme
        scored = select_samples(stores["ferplus"], "test", scheme, scored=True)
        assert scored.target.ndim == 1 and np.array_equal(scored.index, majority.index)
    polarity = select_samples(stores["fer2013"], "train", "polarity")
    assert polarity.class_names == ("negative", "neutral", "positive")
    labels = select_samples(stores["fer2013"], "train", "7")
    assert len(polarity.target) == int((labels.target != 5).sum())  # surprise left out
    folds = train(TrainConfig(store=str(stores["ckplus"]), folds=3, fold=1, **quick), tmp_path / "ck")
    assert folds.test_split == "fold1" and folds.validation_split == "fold2"
    assert folds.train_samples + folds.validation_samples + folds.test_samples == 21
    with pytest.raises(ConfigError, match="no label set 'votes' in this store; it has: 7, 6"):
        select_samples(stores["ckplus"], "all", "votes")
    with pytest.raises(ConfigError, match="records no subjects"):
        select_samples(stores["fer2013"], "train", None, SubjectFolds.only(3, 0))
