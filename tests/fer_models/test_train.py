"""Run directories, checkpoints, resume and evaluation on a small real store."""

import json

import pytest
import torch

from fer_models.checkpoint import load_checkpoint
from fer_models.config import TrainConfig
from fer_models.evaluation import evaluate_checkpoint
from fer_models.run_directory import train
from pipeline.errors import ConfigError

QUICK = dict(epochs=3, batch_size=16, lr=3e-3, seed=7)


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
    assert a["epoch"] == b["epoch"] == 3
    for key, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][key], tensor, rtol=0, atol=0, msg=key)
    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log]
    assert strip(a["history"]) == strip(b["history"])
    assert whole["test_accuracy"] == resumed["test_accuracy"] and whole["confusion"] == resumed["confusion"]
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
    assert best["epoch"] == summary["selected_epoch"] and best["store"]["config_sha256"]
    assert best["store"]["location"] == str(fer_store)
    assert best["class_names"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert json.loads((out / "config.json").read_text())["epochs"] == 3
    assert json.loads((out / "config.json").read_text())["threads"] == summary["threads"] == torch.get_num_threads()
    scored = evaluate_checkpoint(out / "best.pt", str(fer_store), "test", device="cpu", out=tmp_path / "eval")
    assert scored["accuracy"] == summary["test_accuracy"] and scored["confusion"] == summary["confusion"]
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
    assert summary["threads"] == 2 and json.loads((tmp_path / "two" / "config.json").read_text())["threads"] == 2
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    with pytest.raises(ConfigError, match="these differ from .*threads: 2 != 1"):
        train(TrainConfig(store=str(fer_store), threads=1, **QUICK), tmp_path / "two", resume=True)
    with pytest.raises(ConfigError, match="--threads must be 1 or more"):
        TrainConfig(store=str(fer_store), threads=0)


def test_a_model_with_terms_of_its_own_logs_each_term(fer_store, tmp_path):
    config = TrainConfig(store=str(fer_store), model="pal", options={"width": 8}, **{**QUICK, "epochs": 1})
    train(config, tmp_path / "pal")
    record = json.loads((tmp_path / "pal" / "log.jsonl").read_text())
    assert record["train_classification"] > 0 and -1 <= record["train_privileged_attribution"] <= 0
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
    import subprocess
    import sys
    import time
    from pathlib import Path

    fer_train = Path(sys.executable).parent / "fer-train"
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
    done = load_checkpoint(killed / "last.pt")["epoch"]
    assert 2 <= done < 6, "the run should have been killed part-way"
    resumed = subprocess.run([fer_train, *options, "--out", killed, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {killed} after epoch {done}" in resumed.stdout
    subprocess.run([fer_train, *options, "--out", tmp_path / "whole"], check=True, capture_output=True)
    a, b = (json.loads((path / "summary.json").read_text()) for path in (killed, tmp_path / "whole"))
    for key in ("selected_epoch", "test_accuracy", "test_macro_f1", "confusion"):
        assert a[key] == b[key], key
    strip = lambda path: [
        {k: v for k, v in json.loads(line).items() if k != "seconds"}
        for line in (path / "log.jsonl").read_text().splitlines()
    ]
    assert strip(killed) == strip(tmp_path / "whole")
