"""bench/gpu_campaign.py, the GPU campaign, end to end on the CPU at tiny scale: the store built and
cut into parts, the parts put back together, runs of several seeds trained at once to a deadline,
each pair alike, the guidance table."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.shared_data import FER2013_TGZ

BENCH = Path(__file__).parents[2] / "bench" / "gpu_campaign.py"
sys.path.insert(0, str(BENCH.parent))

from gpu_campaign import PAIRS, RUNS, first_epoch_is_planned_alike, group_epochs, groups, pack_parts  # noqa: E402


def test_parts_hold_every_file_once_and_none_is_over_the_size(tmp_path):
    sizes = {"store.zarr/image/c/0": 700, "store.zarr/image/c/1": 500, "store.zarr/zarr.json": 90, "wheels/a.whl": 400}
    for name, size in sizes.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(bytes([len(name)]) * size)
    parts = pack_parts([tmp_path / "store.zarr", tmp_path / "wheels"], tmp_path, part_bytes=1000)
    held = {
        path.relative_to(part).as_posix(): path.read_bytes()
        for part in parts
        for path in part.rglob("*")
        if path.is_file()
    }
    assert held == {name: (tmp_path / name).read_bytes() for name in sizes}
    assert all(sum(f.stat().st_size for f in part.rglob("*") if f.is_file()) <= 1000 for part in parts)
    assert len(parts) == 2  # 700 + 90, 500 + 400
    with pytest.raises(SystemExit, match="larger than a part"):
        pack_parts([tmp_path / "store.zarr"], tmp_path / "again", part_bytes=600)


def test_runs_are_sized_after_their_first_epoch_only_where_that_epoch_is_planned_alike():
    assert first_epoch_is_planned_alike("adamw-cosine") and first_epoch_is_planned_alike("legacy")
    assert not first_epoch_is_planned_alike("sgd-onecycle")  # its rise spans 30% of all the steps


def test_the_runs_a_pair_joins_train_alike():
    found = groups(list(RUNS))
    assert ["stn", "guided-stn-mask", "guided-stn-saliency"] in found and ["resnet18", "pal", "keypoint"] in found
    assert sorted(name for group in found for name in group) == sorted(RUNS)
    assert all(any(guided in group and twin in group for group in found) for guided, twin in PAIRS)
    assert groups(["stn", "feratt"]) == [["stn"], ["feratt"]]
    assert group_epochs([10.0, 30.0], deadline=400.0, max_epochs=60, now=100.0) == 10  # the slowest: 300 s / 30 s
    assert group_epochs([10.0], deadline=400.0, max_epochs=4, now=100.0) == 4
    assert group_epochs([], deadline=100.0, max_epochs=4, now=200.0) == 1


@pytest.mark.slow
def test_the_campaign_trains_every_run_to_its_deadline_and_tables_them(tmp_path):
    if not FER2013_TGZ.is_file():
        pytest.skip(f"{FER2013_TGZ} is absent (../shared/data)")
    out = tmp_path / "campaign"
    prepare = [
        sys.executable,
        str(BENCH),
        "prepare",
        "--out",
        str(out),
        "--images-per-class",
        "4",
        "--part-mib",
        "0.13",
    ]
    prepared = json.loads(subprocess.run(prepare, capture_output=True, text=True, check=True).stdout)
    calls = prepared["device_calls_in_order"]
    assert len(calls) >= 2 and all(size <= 0.13 for size in prepared["parts_mib"])
    assert calls[-1]["command"].startswith("bash bench/gpu_campaign.sh") and {c["command"] for c in calls[:-1]} == {
        "true"
    }

    runs = tmp_path / "runs"
    command = [sys.executable, str(BENCH), "run", "--parts", str(out), "--out", str(runs), "--device", "cpu"]
    command += ["--runs", "stn,guided-stn-mask", "--seeds", "0,1", "--minutes", "0.5", "--max-epochs", "2"]
    command += ["--batch-size", "16"]
    report = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    expected = {f"{name} seed {seed}" for name in ("stn", "guided-stn-mask") for seed in (0, 1)}
    assert report["failed"] == {} and set(report["runs"]) == expected
    for key, row in report["runs"].items():
        name, _, seed = key.split()
        summary = json.loads((runs / name / f"seed{seed}" / "summary.json").read_text())
        assert row["test_accuracy"] == summary["test_accuracy"] and row["epochs"] == summary["epochs"] in (1, 2)
        assert row["steps_per_s"] > 0 and 0 <= row["data_wait_share"] <= 1
    assert len({row["epochs"] for row in report["runs"].values()}) == 1  # the pair trained alike
    config = json.loads((runs / "guided-stn-mask" / "seed1" / "config.json").read_text())
    assert config["options"] == {"guidance": "mask_soft"} and config["seed"] == 1
    (comparison,) = report["comparisons"]
    runs_a = [report["runs"][f"guided-stn-mask seed {seed}"]["test_accuracy"] for seed in (0, 1)]
    runs_b = [report["runs"][f"stn seed {seed}"]["test_accuracy"] for seed in (0, 1)]
    difference = (sum(runs_a) - sum(runs_b)) / 2
    assert comparison["mean_difference"]["accuracy"] == pytest.approx(difference)
    assert "| `guided-stn guidance=mask_soft` | `stn` | 2 | " in (runs / "campaign.md").read_text()
