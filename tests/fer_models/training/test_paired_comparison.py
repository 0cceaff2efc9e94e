"""fer-compare: a model against its twin over seeds, on a small real store."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_models.training.config import TrainConfig
from fer_models.training.paired_comparison import compare_models, guidance_table_markdown, paired_bootstrap
from fer_models.training.run_directory import train
from pipeline.errors import ConfigError
from pipeline.run_predictions import Predictions
from tests.support.stores import build_fer_store

FER_COMPARE = Path(sys.executable).parent / "fer-compare"
QUICK = dict(epochs=2, batch_size=16)


def test_the_comparison_equals_its_separate_runs_and_is_read_back(fer_store, tmp_path):
    a = TrainConfig(
        store=str(fer_store), model="guided-stn", options={"guidance": "mask_soft", "dropout": 0.3}, **QUICK
    )
    b = TrainConfig(store=str(fer_store), model="stn", options={"dropout": 0.3}, **QUICK)
    table = compare_models(a, b, [0, 1], tmp_path / "cmp")
    for row in table["seeds"]:
        alone = train(dataclasses.replace(b, seed=row["seed"]), tmp_path / f"b{row['seed']}")
        assert row["b"] == {"accuracy": alone.test.accuracy, "macro_f1": alone.test.macro_f1}
        assert row["difference"]["accuracy"] == pytest.approx(row["a"]["accuracy"] - row["b"]["accuracy"])
    low, high = table["interval_95"]["accuracy"]
    assert low <= table["mean_difference"]["accuracy"] <= high
    row = guidance_table_markdown([table, table]).splitlines()[2]
    verdict = "helps" if low > 0 else "hurts" if high < 0 else "no difference shown"
    assert row.startswith("| `guided-stn guidance=mask_soft dropout=0.3` | `stn dropout=0.3` | 2 |") and row.endswith(
        f"| {verdict} |"
    )
    assert f"[{100 * low:+.2f}, {100 * high:+.2f}]" in row
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text())["seeds"] == table["seeds"]
    assert "95% interval of the mean difference" in (tmp_path / "cmp" / "comparison.md").read_text()
    assert np.asarray(Image.open(tmp_path / "cmp" / "comparison.png")).std() > 0
    again = subprocess.run(
        [FER_COMPARE, "--store", str(fer_store), "--model", "guided-stn", "--option", "guidance=mask_soft",
         "--option", "dropout=0.3", "--twin", "stn", "--seeds", "0,1", "--epochs", "2", "--batch-size", "16",
         "--no-progress", "--out", str(tmp_path / "cmp")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "seed 0 ->" not in again.stdout and "accuracy" in again.stdout  # every run read back
    assert "twin stn takes dropout=0.3 from --option" in again.stdout  # the options the twin has too
    with pytest.raises(ConfigError, match="at least two different seeds"):
        compare_models(a, b, [3], tmp_path / "one")


def test_the_paired_bootstrap_interval_is_zero_for_twins_and_covers_a_real_gap():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, 600)
    index = np.arange(600)
    good = np.where(rng.random(600) < 0.8, target, (target + 1) % 3)  # about 80% right
    bad = np.where(rng.random(600) < 0.6, target, (target + 1) % 3)  # about 60% right
    same = paired_bootstrap([Predictions(index, target, good)] * 2, [Predictions(index, target, good)] * 2, 3, 200)
    assert same["accuracy"] == [0.0, 0.0]
    shuffled = rng.permutation(600)  # b listed in another order: paired by store index
    gap = paired_bootstrap(
        [Predictions(index, target, good)] * 3,
        [Predictions(index[shuffled], target[shuffled], bad[shuffled])] * 3,
        3,
        200,
    )
    low, high = gap["accuracy"]
    observed = float(np.mean(good == target) - np.mean(bad == target))
    assert 0 < low < observed < high < 0.3


def test_predictions_files_read_back_with_their_confidences_and_without_them(tmp_path):
    written = Predictions(np.array([4, 9]), np.array([1, 0]), np.array([1, 2]), np.array([0.75, 0.5], np.float32))
    written.write_csv(tmp_path / "new.csv")
    read = Predictions.read_csv(tmp_path / "new.csv")
    np.testing.assert_array_equal(read.predicted, written.predicted)
    np.testing.assert_array_equal(read.confidence, written.confidence)
    (tmp_path / "old.csv").write_text("index,target,predicted\n4,1,1\n9,0,2\n")  # before confidences were recorded
    old = Predictions.read_csv(tmp_path / "old.csv")
    assert old.confidence is None and old.index.tolist() == [4, 9] and old.index.dtype == np.int64


def test_one_model_is_compared_on_two_builds_of_the_same_faces_and_with_two_balances(
    fer_store, fer2013_small, synthetic_store, tmp_path
):
    crops = build_fer_store(tmp_path / "crops.zarr", fer2013_small, align="crop")
    result = subprocess.run(
        [FER_COMPARE, "--store", str(crops), "--model", "cnn", "--twin-store", str(fer_store), "--seeds", "0,1",
         "--epochs", "1", "--batch-size", "16", "--no-progress", "--out", str(tmp_path / "stores")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "stores" / "comparison.json").read_text())
    assert table["a"]["settings"] == {"store": str(crops)} and table["b"]["settings"] == {"store": str(fer_store)}
    assert "cnn store=crops.zarr - cnn store=fer.zarr accuracy" in result.stdout
    a = TrainConfig(store=str(crops), model="cnn", balance="weights", **QUICK)
    weighted = compare_models(a, dataclasses.replace(a, balance="none"), [0, 1], tmp_path / "balance")
    assert weighted["b"]["settings"] == {"balance": "none"} and weighted["b"]["name"] == "cnn balance=none"
    with pytest.raises(ConfigError, match="the two sides are the same config"):
        compare_models(a, a, [0, 1], tmp_path / "same")
    with pytest.raises(ConfigError, match="hold other samples .manifest hashes"):
        compare_models(a, dataclasses.replace(a, store=str(synthetic_store)), [0, 1], tmp_path / "other")
