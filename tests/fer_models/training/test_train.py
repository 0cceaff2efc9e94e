"""Run directories, checkpoints, resume and evaluation on a small real store."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fer_models.training.checkpoint import load_checkpoint
from fer_models.training.config import TrainConfig
from fer_models.training.engine import Trainer
from fer_models.training.evaluation import evaluate_checkpoint
from fer_models.training.run_directory import train
from fer_models.training.run_summary import RunSummary
from pipeline.errors import CheckpointSaveError, ConfigError, TrainingDivergedError
from pipeline.progress import Lines

FER_TRAIN = Path(sys.executable).parent / "fer-train"

QUICK = dict(epochs=3, batch_size=16, lr=3e-3, seed=7)
TIMES = ("seconds", "training_seconds", "data_wait_seconds")  # log.jsonl's clock readings


def test_resume_gives_the_same_result_as_an_uninterrupted_run(fer_store, tmp_path):
    config = TrainConfig(store=str(fer_store), model="guided-stn", **QUICK)
    whole = train(config, tmp_path / "whole")
    first = TrainConfig(store=str(fer_store), model="guided-stn", **{**QUICK, "epochs": 1})
    train(first, tmp_path / "split")
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        train(config, tmp_path / "split")
    with pytest.raises(ConfigError, match="these differ from .*: lr"):
        train(
            TrainConfig(store=str(fer_store), model="guided-stn", **{**QUICK, "lr": 1e-2}),
            tmp_path / "split",
            resume=True,
        )
    resumed = train(config, tmp_path / "split", resume=True)

    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    assert a.epoch == b.epoch == 3
    for key, tensor in a.model.items():
        torch.testing.assert_close(b.model[key], tensor, rtol=0, atol=0, msg=key)
    strip = lambda log: [{k: v for k, v in r.items() if k not in TIMES} for r in log]
    assert strip(a.history) == strip(b.history)
    assert whole.test == resumed.test
    lines = (tmp_path / "split" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_a_run_directory_holds_everything_and_the_checkpoint_scores_again(fer_store, tmp_path):
    out = tmp_path / "run"
    summary = train(TrainConfig(store=str(fer_store), model="cnn", **QUICK), out)
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "log.jsonl",
        "last.pt",
        "best.pt",
        "confusion.png",
        "summary.json",
        "test_predictions.csv",
    }
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["epoch"] == summary.selected_epoch and best["store"]["config_sha256"]
    assert best["store"]["location"] == str(fer_store)
    assert best["class_names"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert json.loads((out / "config.json").read_text())["epochs"] == 3
    for line in (out / "log.jsonl").read_text().splitlines():  # 42 train samples: 2 full batches of 16
        epoch = json.loads(line)
        assert epoch["steps"] == 2 and 0 <= epoch["data_wait_seconds"] <= epoch["training_seconds"]
    assert json.loads((out / "config.json").read_text())["threads"] == summary.threads == torch.get_num_threads()
    scored = evaluate_checkpoint(out / "best.pt", str(fer_store), "test", device="cpu", out=tmp_path / "eval")
    assert scored["accuracy"] == summary.test.accuracy and scored["confusion"] == summary.test.confusion
    assert scored["same_preprocessing"] and scored["samples"] == 42
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="no split 'val'"):
        evaluate_checkpoint(out / "best.pt", str(fer_store), "val", device="cpu")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_a_run_sets_and_records_its_thread_count_and_puts_torch_back(fer_store, tmp_path):
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    summary = train(TrainConfig(store=str(fer_store), threads=2, **{**QUICK, "epochs": 1}), tmp_path / "two")
    assert summary.threads == 2 and json.loads((tmp_path / "two" / "config.json").read_text())["threads"] == 2
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    with pytest.raises(ConfigError, match="these differ from .*threads: 2 != 1"):
        train(TrainConfig(store=str(fer_store), threads=1, **QUICK), tmp_path / "two", resume=True)
    with pytest.raises(ConfigError, match="--threads must be 1 or more"):
        TrainConfig(store=str(fer_store), threads=0)


def test_a_model_with_terms_of_its_own_logs_each_term(fer_store, tmp_path):
    config = TrainConfig(store=str(fer_store), model="pal", options={"width": 8}, **{**QUICK, "epochs": 1})
    train(config, tmp_path / "pal")
    record = json.loads((tmp_path / "pal" / "log.jsonl").read_text())
    assert record["train_classification"] > 0 and -1 <= record["train_privileged_attribution"] <= 1
    assert record["train_loss"] == pytest.approx(
        record["train_classification"] + record["train_privileged_attribution"], abs=1e-5
    )
    train(TrainConfig(store=str(fer_store), model="cnn", **{**QUICK, "epochs": 1}), tmp_path / "cnn")
    plain = json.loads((tmp_path / "cnn" / "log.jsonl").read_text())
    assert [key for key in plain if key.startswith("train_")] == ["train_loss"]


@pytest.mark.slow
def test_a_training_run_killed_mid_epoch_resumes_to_the_same_metrics(fer_store, tmp_path):
    import os
    import signal
    import time

    fer_train = FER_TRAIN
    options = [
        "--store",
        str(fer_store),
        "--model",
        "guided-stn",
        "--epochs",
        "6",
        "--batch-size",
        "4",
        "--seed",
        "5",
        "--no-progress",
    ]
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [fer_train, *options, "--out", killed], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    log, deadline = killed / "log.jsonl", time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 2):
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done = load_checkpoint(killed / "last.pt").epoch
    assert 2 <= done < 6, "the run should have been killed part-way"
    resumed = subprocess.run([fer_train, *options, "--out", killed, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed} after epoch {done}" in resumed.stdout
    subprocess.run([fer_train, *options, "--out", tmp_path / "whole"], check=True, capture_output=True)
    a, b = (json.loads((path / "summary.json").read_text()) for path in (killed, tmp_path / "whole"))
    for key in ("selected_epoch", "test_accuracy", "test_macro_f1", "confusion"):
        assert a[key] == b[key], key
    strip = lambda path: [
        {k: v for k, v in json.loads(line).items() if k not in TIMES}
        for line in (path / "log.jsonl").read_text().splitlines()
    ]
    assert strip(killed) == strip(tmp_path / "whole")


def strict_lines(path):
    """Each line of a JSON-lines file, parsed as strict JSON (NaN and Infinity refused)."""

    def refuse(token):
        raise ValueError(f"{path} holds {token}, which strict JSON parsers reject")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_a_diverging_run_stops_naming_the_cause_and_keeps_its_last_good_epoch(fer_store, tmp_path, monkeypatch):
    code = subprocess.run(
        [
            FER_TRAIN,
            "--store",
            fer_store,
            "--model",
            "cnn",
            "--epochs",
            "2",
            "--lr",
            "1e12",
            "--out",
            tmp_path / "huge",
        ],
        capture_output=True,
        text=True,
    )
    assert code.returncode == 1 and "Traceback" not in code.stderr, code.stderr
    assert re.search(r"Error: epoch \d: the training loss is (nan|inf): the run diverged and stopped", code.stderr)
    assert "Lower --lr (it is 1e+12)" in code.stderr and not (tmp_path / "huge" / "summary.json").exists()

    real_epoch = Trainer.train_epoch

    def diverging_at_epoch_2(trainer, epoch):  # real training, then the weights go bad as in a divergence
        losses = real_epoch(trainer, epoch)
        if epoch == 2:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))
        return losses

    monkeypatch.setattr(Trainer, "train_epoch", diverging_at_epoch_2)
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match=r"epoch 2: the weights are no longer finite.* holds epoch 1"):
        train(TrainConfig(store=str(fer_store), model="cnn", **QUICK), out)
    kept = load_checkpoint(out / "last.pt")
    assert kept.epoch == 1 and kept.non_finite_weights == 0
    assert [record["epoch"] for record in strict_lines(out / "log.jsonl")] == [1]

    broken = tmp_path / "broken.pt"
    next(iter(kept.model.values())).fill_(float("inf"))
    torch.save(kept.to_dict(), broken)
    with pytest.raises(ConfigError, match=r"of the weights in .*broken\.pt are NaN or infinite"):
        evaluate_checkpoint(broken, str(fer_store))


def test_a_checkpoint_that_cannot_be_saved_says_why_and_resume_goes_on_from_the_last_complete_one(fer_store, tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(store=str(fer_store), model="cnn", **QUICK)
    train(TrainConfig(store=str(fer_store), model="cnn", **{**QUICK, "epochs": 1}), out)
    (out / "last.partial").mkdir()  # where the next save writes: the save fails for real
    with pytest.raises(
        CheckpointSaveError, match=r"cannot save the checkpoint .*last\.pt .*the previous last\.pt is kept"
    ):
        train(config, out, resume=True)
    assert load_checkpoint(out / "last.pt").epoch == 1
    (out / "last.partial").rmdir()
    said = []
    summary = train(config, out, resume=True, progress=Lines(said.append))
    assert f"resuming {out} after epoch 1" in said and summary.epochs == 3
    assert [record["epoch"] for record in strict_lines(out / "log.jsonl")] == [1, 2, 3]
    json.loads((out / "summary.json").read_text(), parse_constant=lambda token: pytest.fail(token))


def test_damaged_checkpoints_are_named_not_tracebacks(synthetic_store, tmp_path):
    config = TrainConfig(store=str(synthetic_store), model="cnn", epochs=1, batch_size=16)
    train(config, tmp_path / "run")
    good = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    first = next(iter(good["model"]))
    damaged = {
        "missing.pt": ({**good, "model": {k: v for k, v in good["model"].items() if k != first}}, "missing: "),
        "reshaped.pt": ({**good, "model": {**good["model"], first: torch.zeros(3)}}, r"other shapes: .* \[3\]"),
        "types.pt": ({**good, "epoch": "one", "class_names": 3}, r"its fields 'epoch' \(str; should be an epoch"),
        "no-config.pt": ({k: v for k, v in good.items() if k != "config"}, r"'config' \(missing"),
    }
    for name, (checkpoint, message) in damaged.items():
        torch.save(checkpoint, tmp_path / name)
        with pytest.raises(ConfigError, match=message):
            evaluate_checkpoint(tmp_path / name, str(synthetic_store))
        torch.save(checkpoint, tmp_path / "run" / "last.pt")
        with pytest.raises(ConfigError, match=message):
            train(
                TrainConfig(store=str(synthetic_store), model="cnn", epochs=2, batch_size=16),
                tmp_path / "run",
                resume=True,
            )


def test_a_resume_continues_the_run_as_configured_and_knows_its_store_by_path(fer_store, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(TrainConfig(store=str(fer_store), **{**QUICK, "epochs": 1}), out)
    written = (out / "config.json").read_bytes()
    monkeypatch.chdir(fer_store.parent)
    relative = TrainConfig(store=fer_store.name, batch_size=16, lr=3e-3, seed=7)  # no --epochs: the run's own
    said: list[str] = []
    again = train(relative, out, resume=True, progress=Lines(said.append))
    assert any("finished its 1 epochs; nothing to do" in line for line in said)
    assert again.epochs == 1 and (out / "config.json").read_bytes() == written
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [1]
    extended = train(dataclasses.replace(relative, epochs=2), out, resume=True, progress=Lines(said.append))
    assert extended.epochs == 2 and json.loads((out / "config.json").read_text())["epochs"] == 2
    assert any("extended to 2 epochs" in line for line in said)
    with pytest.raises(ConfigError, match="these differ from .*lr: 0.003 != 0.01 .*may change only --epochs and"):
        train(dataclasses.replace(relative, lr=1e-2), out, resume=True)


def test_a_handful_of_validation_samples_choosing_the_epoch_is_warned_of(fer_store, tmp_path):
    said: list[str] = []
    config = TrainConfig(store=str(fer_store), val_fraction=0.25, **{**QUICK, "epochs": 1})
    summary = train(config, tmp_path / "run", progress=Lines(said.append))
    assert 0 < summary.validation_samples < 100
    assert any(f"warning: {summary.validation_samples} validation samples choose the epoch" in line for line in said)
    assert any(line.startswith("epoch 1/1: train loss ") and "validation accuracy" in line for line in said)


def test_a_summary_written_before_the_processes_were_recorded_reads_as_one_process():
    summary = RunSummary(
        model="cnn", options={}, labels=["a", "b"], label_set="7", device="cpu", threads=1, epochs=1,
        train_split="train", train_samples=4, validation_split=None, validation_samples=0, selected_by="last epoch",
        selected_epoch=1, selected_validation_accuracy=None, test_split=None, test_samples=0,
        world_size=2, backend="gloo",
    )  # fmt: skip
    old = {k: v for k, v in summary.to_dict().items() if k not in ("world_size", "backend", "balance")}
    read = RunSummary.from_dict(old)
    assert (read.world_size, read.backend, read.balance) == (1, None, "weights")
    assert RunSummary.from_dict(summary.to_dict()) == summary
