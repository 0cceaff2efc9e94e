"""timm backbones (``--option backbone=NAME``) in the ResNet-based families: a training step for
each family, weights from a local file (adapted to grey faces, refused when they do not fit), and
runs that record the file's digest and evaluate and resume once the file is gone."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from fer_models.models.registry import create_model
from fer_models.training.checkpoint import load_checkpoint
from fer_models.training.config import TrainConfig
from fer_models.training.engine import Trainer
from fer_models.training.evaluation import evaluate_checkpoint
from fer_models.training.run_directory import train
from pipeline.errors import ConfigError

FAMILIES = ("resnet18", "pal", "keypoint", "feratt")
BACKBONE = "resnet10t"  # timm's smallest ResNet: 4.9 M parameters, a deep 3-conv stem
FER_TRAIN = Path(sys.executable).parent / "fer-train"


@pytest.fixture(scope="module")
def resnet10t_weights(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A resnet10t state dict in timm's layout (RGB, 1000-class head), as a safetensors file."""
    torch.manual_seed(1)
    state = {k: v.contiguous() for k, v in timm.create_model(BACKBONE).state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / f"{BACKBONE}.safetensors"
    save_file(state, str(path))
    return path, state


@pytest.mark.parametrize("family", FAMILIES)
def test_a_timm_backbone_trains_a_step_in_each_family(synthetic_store, family):
    config = TrainConfig(
        store=str(synthetic_store), model=family, options={"backbone": BACKBONE}, epochs=1, batch_size=64, seed=3
    )
    trainer = Trainer(config)
    body = next(module for module in trainer.model.modules() if type(module).__module__.startswith("timm."))
    before = {name: parameter.detach().clone() for name, parameter in body.named_parameters()}
    losses = trainer.train_epoch(1)
    assert trainer.epoch_timing["steps"] == 1 and torch.isfinite(torch.tensor(losses["loss"]))
    parameters = dict(body.named_parameters())
    assert all(parameter.grad is not None for parameter in parameters.values())  # all in the graph
    moved = {name for name, parameter in parameters.items() if not torch.equal(parameter, before[name])}
    # timm zeroes each block's last BatchNorm scale, so the first step reaches only part of a block
    assert moved == {name for name, parameter in parameters.items() if parameter.grad.any()}
    assert {"conv1.0.weight", list(parameters)[-1]} <= moved  # the first and the deepest


def test_the_families_read_the_stages_the_model_names():
    """Stage 4 is timm's deepest feature level (1/32), stage 3 the one before (1/16)."""
    resnet = create_model("resnet18", in_channels=1, num_classes=7, image_size=64, backbone=BACKBONE)
    assert resnet.channels == (64, 128, 256, 512) and resnet.reductions == (4, 8, 16, 32)
    maps = resnet.stage_outputs(torch.zeros(2, 1, 64, 64))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    keypoint = create_model("keypoint", in_channels=1, num_classes=7, image_size=64, backbone=BACKBONE, stage=3)
    assert keypoint.body.channels[-1] == 256 and keypoint.body.head is None
    assert not any(name.startswith("body.body.layer4") for name in keypoint.state_dict())  # stage 4 is not built
    pal = create_model("pal", in_channels=1, num_classes=7, image_size=64, backbone=BACKBONE, layer=2)
    pal.train()
    batch = {"image": torch.rand(2, 1, 64, 64), "heatmap": torch.rand(2, 1, 16, 16), "target": torch.tensor([0, 3])}
    assert pal(batch)["attribution"].shape == (2, 128, 8, 8)


def test_weights_from_a_local_file_load_adapted_to_grey_faces(resnet10t_weights):
    path, state = resnet10t_weights
    model = create_model(
        "resnet18", in_channels=1, num_classes=7, image_size=48, backbone=BACKBONE, backbone_weights=str(path)
    )
    loaded = list(model.body.state_dict().values())
    source = [tensor for name, tensor in state.items() if not name.startswith("fc.")]
    assert len(loaded) == len(source)
    torch.testing.assert_close(loaded[0], source[0].sum(1, keepdim=True))  # the RGB stem summed to one channel
    for mine, theirs in zip(loaded[1:], source[1:]):
        assert torch.equal(mine, theirs)
    fresh = create_model("resnet18", in_channels=1, num_classes=7, image_size=48, backbone=BACKBONE)
    assert not torch.equal(fresh.body.state_dict()["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])


def test_weights_that_do_not_fit_or_options_that_do_not_apply_are_refused(resnet10t_weights, tmp_path):
    path, _ = resnet10t_weights
    build = lambda family="resnet18", **options: create_model(
        family, in_channels=1, num_classes=7, image_size=48, **options
    )
    # Another model's file: their first stages share names and shapes, which timm would load, leaving the
    # rest of the network at random without a word.
    with pytest.raises(ConfigError, match=r"does not fit timm's resnet18: 64 of its 120 tensors are missing \(conv1"):
        build(backbone="resnet18", backbone_weights=str(path))
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(ConfigError, match="cannot read it as weights"):
        build(backbone=BACKBONE, backbone_weights=str(tmp_path / "notes.txt"))
    with pytest.raises(ConfigError, match="is not a file"):
        build(backbone=BACKBONE, backbone_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="not a timm model; close names: .*resnet50"):
        build(backbone="resnet5")
    with pytest.raises(ConfigError, match="does not take 48 x 48 faces"):
        build(backbone="vit_tiny_patch16_224")
    with pytest.raises(ConfigError, match="width shape the built-in network"):
        build("pal", backbone=BACKBONE, width=32)
    with pytest.raises(ConfigError, match="width shape the built-in network"):
        build("feratt", backbone=BACKBONE, width=16)
    with pytest.raises(ConfigError, match="start the built-in network with --init"):
        build("keypoint", backbone_weights=str(path))


def test_a_run_from_a_weights_file_evaluates_and_resumes_without_it(synthetic_store, resnet10t_weights, tmp_path):
    weights = tmp_path / "backbone.safetensors"
    weights.write_bytes(resnet10t_weights[0].read_bytes())
    out = tmp_path / "run"
    command = [str(FER_TRAIN), "--store", str(synthetic_store), "--model", "keypoint", "--out", str(out)]
    command += ["--option", f"backbone={BACKBONE}", "--option", f"backbone_weights={weights}"]
    command += ["--epochs", "1", "--batch-size", "16", "--device", "cpu"]
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    options = json.loads((out / "config.json").read_text())["options"]
    assert options == {"backbone": BACKBONE, "backbone_weights": str(weights)}
    digest = {str(weights): hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert f"initial weights {weights}: sha256 {digest[str(weights)]}" in printed
    assert json.loads((out / "summary.json").read_text())["initial_weights"] == digest
    assert load_checkpoint(out / "best.pt").initial_weights == digest
    weights.unlink()
    scored = evaluate_checkpoint(out / "best.pt", str(synthetic_store), "test", device="cpu")
    assert scored["samples"] > 0
    config = TrainConfig(
        store=str(synthetic_store), model="keypoint", options=options, epochs=2, batch_size=16, device="cpu"
    )
    resumed = train(config, out, resume=True)
    assert resumed.epochs == 2 and resumed.initial_weights == digest  # kept from the checkpoint
    with pytest.raises(ConfigError, match="is not a file"):
        train(config, tmp_path / "fresh")  # a new run reads the file


def test_a_timm_backbone_normalises_its_input_as_its_pretrained_weights_expect():
    config = timm.models.get_pretrained_cfg(BACKBONE)
    rgb = create_model("resnet18", in_channels=3, num_classes=7, image_size=64, backbone=BACKBONE).eval()
    image = torch.rand(1, 3, 64, 64)
    mean, std = torch.tensor(config.mean).view(1, 3, 1, 1), torch.tensor(config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(rgb.stage_outputs(image)[-1], rgb.body((image - mean) / std)[-1])
    grey = create_model("resnet18", in_channels=1, num_classes=7, image_size=64, backbone=BACKBONE)
    assert grey.normalise.mean.item() == pytest.approx(sum(config.mean) / 3)
