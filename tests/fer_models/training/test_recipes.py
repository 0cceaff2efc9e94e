"""Training recipes: the schedules' values, the optimiser's groups, what a run records, and a run
stopped mid-schedule and resumed ending where an uninterrupted one ends."""

import json

import pytest
import torch

from fer_models.models.backbone import backbone_parameters
from fer_models.models.registry import create_model
from fer_models.training.checkpoint import Checkpoint, load_checkpoint
from fer_models.training.config import TrainConfig
from fer_models.training.engine import Trainer, classification_loss
from fer_models.training.recipe import RECIPES, Recipe, resolve_recipe
from fer_models.training.run_directory import train
from pipeline.errors import ConfigError
from pipeline.progress import Lines

QUICK = dict(model="cnn", epochs=3, batch_size=16, seed=5)
MODERN = dict(recipe="adamw-cosine", ema_decay=0.9, clip_grad_norm=1.0)


def test_schedules_reach_the_configured_values():
    steps, epochs = 10, 4  # 40 steps
    constant = Recipe(lr_schedule="constant", warmup_epochs=1)
    assert [constant.lr_factor(s, steps, epochs) for s in (0, 4, 9, 10, 39)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    cosine = Recipe(lr_schedule="cosine", warmup_epochs=1)
    assert cosine.lr_factor(9, steps, epochs) == 1.0 and cosine.lr_factor(10, steps, epochs) == 1.0
    assert cosine.lr_factor(25, steps, epochs) == pytest.approx(0.5)  # half way through the cosine
    assert cosine.lr_factor(39, steps, epochs) == pytest.approx(0.0027, abs=1e-3)
    onecycle = Recipe(lr_schedule="onecycle")
    factors = [onecycle.lr_factor(s, steps, epochs) for s in range(40)]
    assert max(factors) == factors[11] == 1.0 and factors[0] == pytest.approx(1 / 12)  # the peak at 30%
    assert factors[-1] == pytest.approx(1 / 28) and all(a >= b for a, b in zip(factors[11:], factors[12:]))


def test_weight_decay_skips_biases_and_norms_and_sgd_is_nesterov():
    model = create_model("resnet18", in_channels=1, num_classes=7, image_size=48, width=8)
    optimizer = RECIPES["sgd-cosine"].optimizer_for(model)
    decayed, kept = optimizer.param_groups
    assert isinstance(optimizer, torch.optim.SGD) and decayed["nesterov"] and decayed["momentum"] == 0.9
    assert decayed["weight_decay"] == 5e-4 and kept["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim <= 1 for p in kept["params"])
    assert len(decayed["params"]) + len(kept["params"]) == len(list(model.parameters()))
    legacy = RECIPES["legacy"].optimizer_for(model)  # one group, as runs before recipes saved it
    assert isinstance(legacy, torch.optim.Adam) and len(legacy.param_groups) == 1


def test_the_fine_tune_recipe_trains_the_backbone_at_a_tenth_of_the_heads_rate(fer_store):
    model = create_model("keypoint", in_channels=1, num_classes=7, image_size=48, width=8)
    backbone = backbone_parameters(model)
    assert {id(p) for p in backbone} == {id(p) for p in [*model.stem.parameters(), *model.stages.parameters()]}
    optimizer = RECIPES["fine-tune"].optimizer_for(model, backbone)
    scales = {group["lr_scale"] for group in optimizer.param_groups}
    assert scales == {1.0, 0.1}
    slow = {id(p) for group in optimizer.param_groups if group["lr_scale"] == 0.1 for p in group["params"]}
    assert slow == {id(p) for p in backbone}
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(list(model.parameters()))
    config = TrainConfig(store=str(fer_store), model="resnet18", options={"width": 8}, recipe="fine-tune", epochs=4)
    trainer = Trainer(config)
    trainer._set_lr(25, steps_per_epoch=10)  # past the 2 epochs of warmup, on the cosine
    rates = {group["lr_scale"]: group["lr"] for group in trainer.optimizer.param_groups}
    assert rates[0.1] == pytest.approx(0.1 * rates[1.0]) and rates[1.0] > 0


def test_label_smoothing_mixes_each_target_with_the_uniform_distribution():
    logits = torch.randn(4, 3)
    hard = torch.tensor([0, 2, 1, 1])
    soft = torch.nn.functional.one_hot(hard, 3).float()
    for smoothing in (0.0, 0.1):
        assert classification_loss(logits, hard, None, smoothing) == pytest.approx(
            classification_loss(logits, soft, None, smoothing).item()
        )
    assert classification_loss(logits, hard, None, 0.1) != classification_loss(logits, hard, None, 0.0)


def test_a_recipe_is_resolved_from_the_model_the_preset_and_the_options():
    config = TrainConfig(store="s", **QUICK)
    assert config.schedule().recipe_name == "legacy" and config.schedule().recipe == RECIPES["legacy"]
    chosen = TrainConfig(store="s", recipe="sgd-cosine", lr=0.01, label_smoothing=0.0, **QUICK).schedule().recipe
    assert (chosen.optimizer, chosen.lr, chosen.label_smoothing, chosen.weight_decay) == ("sgd", 0.01, 0.0, 5e-4)
    with pytest.raises(ConfigError, match="--recipe must be one of legacy, adamw-cosine"):
        TrainConfig(store="s", recipe="fast", **QUICK).schedule()
    with pytest.raises(ConfigError, match="--label-smoothing must be between 0 and 0.5, got 0.7"):
        resolve_recipe("legacy", {"label_smoothing": 0.7})


def test_a_run_records_its_recipe_and_keeps_a_weight_average(fer_store, tmp_path):
    summary = train(TrainConfig(store=str(fer_store), **QUICK, **MODERN), tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    expected = {**RECIPES["adamw-cosine"].to_dict(), "ema_decay": 0.9, "clip_grad_norm": 1.0}
    assert recorded["recipe"] == "adamw-cosine" and {k: recorded[k] for k in expected} == expected
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert isinstance(last, Checkpoint) and last.average is not None
    assert any(not torch.equal(last.average[k], last.model[k]) for k in last.model)
    assert summary.test is not None
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert summary.seconds == log[-1]["seconds"]  # the whole run's, whichever epoch was selected


def test_a_run_stopped_mid_schedule_and_resumed_ends_as_an_uninterrupted_one(fer_store, tmp_path):
    config = TrainConfig(store=str(fer_store), **QUICK, **MODERN)
    whole = train(config, tmp_path / "whole")

    def stop_after_the_first_epoch(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt  # as a user's ^C after epoch 1 was saved

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "split", progress=Lines(stop_after_the_first_epoch))
    assert load_checkpoint(tmp_path / "split" / "last.pt").epoch == 1
    with pytest.raises(ConfigError, match="these differ from .*: weight_decay"):
        train(TrainConfig(store=str(fer_store), **QUICK, **MODERN, weight_decay=0.1), tmp_path / "split", resume=True)
    resumed = train(TrainConfig(store=str(fer_store), **QUICK), tmp_path / "split", resume=True)  # the run's recipe
    a, b = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(tmp_path / "split" / "last.pt")
    for name in a.model:
        torch.testing.assert_close(b.model[name], a.model[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(b.average[name], a.average[name], rtol=0, atol=0, msg=name)
    assert whole.test == resumed.test


def test_a_run_recorded_before_recipes_resumes_with_the_legacy_recipe(fer_store, tmp_path):
    config = TrainConfig(store=str(fer_store), **{**QUICK, "epochs": 1})
    train(config, tmp_path / "run")
    last = tmp_path / "run" / "last.pt"
    data = torch.load(last, weights_only=True)
    for name in ("recipe", "optimizer", "momentum", "weight_decay", "lr_schedule", "warmup_epochs"):
        del data["config"][name]
    for name in ("label_smoothing", "clip_grad_norm", "ema_decay"):
        del data["config"][name]
    del data["average"]
    torch.save(data, last)
    summary = train(TrainConfig(store=str(fer_store), **QUICK), tmp_path / "run", resume=True)
    assert summary.epochs == 3
    assert json.loads((tmp_path / "run" / "config.json").read_text())["recipe"] == "legacy"
