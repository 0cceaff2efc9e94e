"""The evaluation protocol: the epoch is chosen on validation samples, the test samples are read
once at the end, folds are subject-disjoint, the all-folds table equals the separate runs, and
fer-eval refuses samples a checkpoint trained on. Real CK+-layout and FER-2013 stores."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fer_models.training.engine as engine
from fer_models.data.selection import read_subjects
from fer_models.training.config import TrainConfig
from fer_models.training.cross_validation import train_all_folds
from fer_models.training.evaluation import evaluate_checkpoint
from fer_models.training.protocol import class_balance, resolve_protocol
from fer_models.training.run_directory import train
from pipeline.compute.run import SYNCHRONOUS, preprocess
from pipeline.config import build_config
from pipeline.datasets import get_dataset
from pipeline.errors import ConfigError
from pipeline.progress import Lines
from pipeline.run_predictions import Predictions
from tests.support import dataset_trees as trees

QUICK = dict(epochs=2, batch_size=8, lr=3e-3, seed=3)
quiet = lambda _: None


@pytest.fixture(scope="module")
def ck_store(tmp_path_factory, fer2013_small) -> Path:
    """42 CK+-layout frames (real FER-2013 faces) of 6 subjects, 48x48 gray."""
    root = tmp_path_factory.mktemp("ck") / "ck"
    trees.write_ckplus(root, fer2013_small, per_class=6, subjects=6)
    store = root.parent / "ck.zarr"
    config = build_config(get_dataset("ckplus").config_defaults, {"shard_size": 32})
    preprocess(store, "ckplus", root, config, scheduler=SYNCHRONOUS)
    return store


@pytest.fixture
def evaluated(monkeypatch) -> list[np.ndarray]:
    """The store indices of every evaluation a run makes, in order."""
    calls = []
    real = engine.evaluate_model

    def recording(*args, **kwargs):
        scores = real(*args, **kwargs)
        calls.append(np.sort(scores.predictions.index))
        return scores

    monkeypatch.setattr(engine, "evaluate_model", recording)
    return calls


def test_a_fold_run_chooses_its_epoch_on_the_next_fold_and_reads_its_test_fold_only_at_the_end(
    ck_store, tmp_path, evaluated
):
    config = TrainConfig(store=str(ck_store), folds=3, fold=1, **{**QUICK, "epochs": 3})
    protocol = resolve_protocol(config, str(ck_store), ["all"])
    subjects = {
        name: set(read_subjects(ck_store, part.index))
        for name, part in (("train", protocol.train), ("validation", protocol.validation), ("test", protocol.test))
    }
    assert all(subjects.values())
    assert not (
        subjects["train"] & subjects["validation"]
        or subjects["train"] & subjects["test"]
        or subjects["validation"] & subjects["test"]
    )
    assert len(protocol.train) + len(protocol.validation) + len(protocol.test) == 42

    summary = train(config, tmp_path / "run")
    assert len(evaluated) >= 4  # one validation pass per epoch, then the test fold
    for scored in evaluated[:3]:
        np.testing.assert_array_equal(scored, protocol.validation.index)
    for scored in evaluated[3:]:
        np.testing.assert_array_equal(scored, protocol.test.index)
    assert summary.validation_split == "fold2" and summary.test_split == "fold1"
    assert summary.selected_by == f"best validation accuracy on fold2 ({len(protocol.validation)} samples)"
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    best = max(log, key=lambda r: (r["validation_accuracy"], -r["epoch"]))
    assert summary.selected_epoch == best["epoch"] and not any("test" in key for r in log for key in r)
    predictions = Predictions.read_csv(tmp_path / "run" / "test_predictions.csv")
    np.testing.assert_array_equal(np.sort(predictions.index), protocol.test.index)
    assert float(np.mean(predictions.target == predictions.predicted)) == summary.test.accuracy


def test_without_validation_data_the_last_epoch_is_reported_and_says_so(fer_store, tmp_path, evaluated):
    lines = []
    summary = train(TrainConfig(store=str(fer_store), **QUICK), tmp_path / "run", progress=Lines(lines.append))
    assert "no validation data: the last epoch is reported" in "\n".join(lines)
    assert summary.selected_by == "last epoch (no validation data)" and summary.selected_epoch == 2
    assert summary.validation_split is None and summary.test_split == "test"
    assert summary.test.accuracy == summary.test.last_epoch_accuracy
    assert len(evaluated) == 1  # the test split, once
    held = train(TrainConfig(store=str(fer_store), val_fraction=0.25, **QUICK), tmp_path / "held")
    assert held.validation_samples == 10 and held.train_samples == 32 and held.validation_split == "train held out"
    with pytest.raises(
        ConfigError, match="--eval-split test is also the test split: the epoch would be chosen on the samples reported"
    ):
        train(TrainConfig(store=str(fer_store), eval_split="test", **QUICK), tmp_path / "bad")


def test_hold_out_keeps_each_subject_on_one_side(ck_store):
    protocol = resolve_protocol(
        TrainConfig(store=str(ck_store), folds=3, fold=0, val_fraction=0.3, seed=1), str(ck_store), ["all"]
    )
    train_subjects = set(read_subjects(ck_store, protocol.train.index))
    validation_subjects = set(read_subjects(ck_store, protocol.validation.index))
    assert train_subjects and validation_subjects and not train_subjects & validation_subjects
    assert not np.isin(protocol.test.index, np.r_[protocol.train.index, protocol.validation.index]).any()
    with pytest.raises(ConfigError, match="--folds 2 leaves no fold to train on"):
        resolve_protocol(TrainConfig(store=str(ck_store), folds=2), str(ck_store), ["all"])


def test_all_folds_equals_the_separate_runs_and_resumes_fold_by_fold(ck_store, tmp_path):
    config = TrainConfig(store=str(ck_store), folds=3, **QUICK)
    table = train_all_folds(config, tmp_path / "cv", commands=["fer-train ..."])
    for fold in range(3):
        alone = train(TrainConfig(store=str(ck_store), folds=3, fold=fold, **QUICK), tmp_path / f"alone{fold}")
        row = table["folds"][fold]
        assert (row["accuracy"], row["macro_f1"], row["selected_epoch"], row["test_samples"]) == (
            alone.test.accuracy,
            alone.test.macro_f1,
            alone.selected_epoch,
            alone.test_samples,
        )
    assert table["pooled"]["samples"] == 42 and sum(r["test_samples"] for r in table["folds"]) == 42
    correct = sum(round(r["accuracy"] * r["test_samples"]) for r in table["folds"])
    assert table["pooled"]["accuracy"] == pytest.approx(correct / 42)
    assert table["mean"]["accuracy"] == pytest.approx(np.mean([r["accuracy"] for r in table["folds"]]))
    assert (tmp_path / "cv" / "confusion.png").stat().st_size > 1000
    assert "| pooled (42 test predictions) |" in (tmp_path / "cv" / "folds.md").read_text()

    import shutil

    shutil.rmtree(tmp_path / "cv" / "fold2")
    lines = []
    again = train_all_folds(config, tmp_path / "cv", progress=Lines(lines.append))
    assert [line for line in lines if line.startswith("fold ")] == [
        f"fold 0 of 3: finished earlier in {tmp_path / 'cv' / 'fold0'}",
        f"fold 1 of 3: finished earlier in {tmp_path / 'cv' / 'fold1'}",
        f"fold 2 of 3 -> {tmp_path / 'cv' / 'fold2'}",
    ]
    assert again["folds"] == table["folds"] and again["pooled"] == table["pooled"]
    with pytest.raises(ConfigError, match="holds a run with other options .*lr"):
        train_all_folds(TrainConfig(store=str(ck_store), folds=3, **{**QUICK, "lr": 1e-2}), tmp_path / "cv")


def test_fer_eval_scores_the_held_out_fold_and_refuses_trained_samples(ck_store, tmp_path):
    summary = train(TrainConfig(store=str(ck_store), folds=3, fold=0, **QUICK), tmp_path / "run")
    best = tmp_path / "run" / "best.pt"
    held_out = evaluate_checkpoint(best, str(ck_store), device="cpu")
    assert held_out["scored"] == "fold0" and held_out["accuracy"] == summary.test.accuracy
    assert held_out["trained_samples_scored"] == 0 and held_out["validation_samples_scored"] == 0
    with pytest.raises(ConfigError, match=r"\d+ of the 42 samples of all were trained on by .*best.pt"):
        evaluate_checkpoint(best, str(ck_store), "all", device="cpu")
    with pytest.raises(ConfigError, match="samples of fold2 were trained on"):
        evaluate_checkpoint(best, str(ck_store), fold=2, device="cpu")
    validation = evaluate_checkpoint(best, str(ck_store), fold=1, device="cpu")
    assert validation["validation_samples_scored"] == validation["samples"] > 0
    seen = evaluate_checkpoint(best, str(ck_store), "all", device="cpu", allow_seen=True)
    assert seen["trained_samples_scored"] == summary.train_samples

    fer_eval = Path(sys.executable).parent / "fer-eval"
    refused = subprocess.run(
        [fer_eval, "--checkpoint", best, "--store", ck_store, "--split", "all"], capture_output=True, text=True
    )
    assert refused.returncode == 1 and "--allow-seen" in refused.stderr and "Traceback" not in refused.stderr
    loud = subprocess.run(
        [fer_eval, "--checkpoint", best, "--store", ck_store, "--split", "all", "--allow-seen"],
        capture_output=True,
        text=True,
    )
    assert loud.returncode == 0 and "WARNING: " in loud.stderr and "were trained on by this checkpoint" in loud.stderr


def test_fer_train_all_folds_writes_the_table_and_the_commands(ck_store, tmp_path):
    fer_train = Path(sys.executable).parent / "fer-train"
    out = tmp_path / "cv"
    args = [
        fer_train,
        "--store",
        ck_store,
        "--folds",
        "3",
        "--all-folds",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--no-progress",
        "--out",
        out,
    ]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "done: 3 folds, accuracy" in result.stdout
    table = json.loads((out / "folds.json").read_text())
    assert table["commands"][0].startswith("fer-train --store") and "--all-folds" in table["commands"][0]
    assert table["commands"][2] == (
        f"fer-train --store {ck_store} --folds 3 --epochs 1 --batch-size 8 --no-progress --fold 1 --out {out / 'fold1'}"
    )
    assert {p.name for p in out.iterdir()} == {"fold0", "fold1", "fold2", "folds.json", "folds.md", "confusion.png"}


def test_the_class_balance_is_the_datasets_unless_named_and_is_recorded(fer_store, tmp_path):
    assert class_balance(TrainConfig(store="x"), "affectnet") == ("weights", "affectnet's protocol; --balance chooses")
    assert class_balance(TrainConfig(store="x"), "rafdb")[0] == "none"
    assert class_balance(TrainConfig(store="x", balance="weights"), "fer2013") == ("weights", "--balance")
    for balance, expected in ((None, "none"), ("weights", "weights")):  # fer_store: a folder of FER-2013 faces
        lines = []
        out = tmp_path / str(balance)
        config = TrainConfig(store=str(fer_store), epochs=1, batch_size=16, balance=balance)
        summary = train(config, out, progress=Lines(lines.append))
        assert summary.balance == expected and json.loads((out / "summary.json").read_text())["balance"] == expected
        assert json.loads((out / "config.json").read_text())["balance"] == expected
        assert any(line.startswith(f"class balance: {expected} (") for line in lines), lines
