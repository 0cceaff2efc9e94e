"""Data-parallel training: every rank's share of each global batch, and ``torchrun`` with two CPU
processes (gloo) against one process on the same global batches."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_models.data.device_batches import DeviceBatches
from fer_models.data.selection import select_samples
from fer_models.data.stream import StoreBatches
from tests.support.distributed_step import one_step
from tests.support.servers import free_port

VENV_BIN = Path(sys.executable).parent
FIELDS = ("image", "heatmap")


@pytest.mark.parametrize("path", ["in_memory", "streamed", "on_device"])
def test_the_ranks_share_each_global_batch_and_see_every_sample_once(fer_store, path):
    selection = select_samples(fer_store, "train")

    def batches(rank: int, ranks: int):
        made = StoreBatches(
            fer_store, selection, FIELDS, 8, shuffle=True, seed=2, drop_last=True, in_memory=path != "streamed",
            window_shards=1, rank=rank, ranks=ranks,
        )  # fmt: skip
        made.set_epoch(3)
        return list(DeviceBatches(made, torch.device("cpu")) if path == "on_device" else made)

    whole = batches(0, 1)
    shares = [batches(rank, 2) for rank in range(2)]
    assert len(shares[0]) == len(shares[1]) == len(whole)
    for k, batch in enumerate(whole):
        assert [len(share[k]["index"]) for share in shares] == [4, 4]
        for key in batch:
            joined = torch.cat([share[k][key] for share in shares])
            torch.testing.assert_close(joined, batch[key], rtol=0, atol=0)
    seen = np.concatenate([b["index"].numpy() for share in shares for b in share])
    assert len(seen) == len(set(seen.tolist())) == len(selection) // 8 * 8


def test_a_step_of_two_ranks_is_the_step_of_one_process_on_the_global_batch(fer_store, tmp_path):
    one_step(0, 1, str(fer_store), str(tmp_path), 0)
    torch.multiprocessing.spawn(one_step, args=(2, str(fer_store), str(tmp_path), free_port()), nprocs=2)
    load = lambda name: torch.load(tmp_path / name, weights_only=True)
    before, one, two = load("world1-before.pt"), load("world1.pt"), load("world2.pt")
    for key, tensor in load("world2-before.pt").items():
        torch.testing.assert_close(tensor, before[key], rtol=0, atol=0, msg=key)  # the same model on every rank
    for key, tensor in one.items():
        torch.testing.assert_close(two[key], tensor, rtol=1e-5, atol=1e-7, msg=key)
    assert (one["classifier.4.weight"] - before["classifier.4.weight"]).abs().max() > 1e-4  # the step moved them


def test_torchrun_with_two_processes_trains_as_one_process_does(fer_store, tmp_path):
    options = ["--store", str(fer_store), "--model", "cnn", "--option", "dropout=0", "--no-augment"]
    options += ["--balance", "none", "--epochs", "2", "--batch-size", "16", "--seed", "1", "--no-progress"]
    one = subprocess.run([VENV_BIN / "fer-train", *options, "--out", tmp_path / "one"], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr
    command = [VENV_BIN / "torchrun", "--standalone", "--nproc-per-node", "2", VENV_BIN / "fer-train"]
    two = subprocess.run([*command, *options, "--out", tmp_path / "two"], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("done: epoch") == 1  # rank 0 alone reports

    # The same global batches and averaged gradients, but BatchNorm's batch statistics are each
    # rank's own (8 samples, not 16): the losses agree to a few percent, not exactly.
    logs = [
        [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()] for run in ("one", "two")
    ]
    for single, shared in zip(*logs, strict=True):
        assert shared["train_loss"] == pytest.approx(single["train_loss"], rel=0.05)
    first, second = (json.loads((tmp_path / run / "summary.json").read_text()) for run in ("one", "two"))
    assert second["test_samples"] == first["test_samples"] == 42
    assert (first["world_size"], first["backend"], second["world_size"], second["backend"]) == (1, None, 2, "gloo")
    recorded = json.loads((tmp_path / "two" / "config.json").read_text())["processes"]
    assert recorded == {"world_size": 2, "backend": "gloo"}
    assert sum(map(sum, second["confusion"])) == 42  # every test sample scored once, across the ranks
    assert abs(second["test_accuracy"] - first["test_accuracy"]) <= 0.1
    predictions = (tmp_path / "two" / "test_predictions.csv").read_text().splitlines()[1:]
    assert sorted(int(line.split(",")[0]) for line in predictions) == sorted(
        int(line.split(",")[0]) for line in (tmp_path / "one" / "test_predictions.csv").read_text().splitlines()[1:]
    )
