"""insightface's IR networks as backbones: the layout of arcface_torch's checkpoints, written here
tensor by tensor, loads strictly; anything else is refused by name."""

import pytest
import torch
from safetensors.torch import save_file

from fer_models.models.registry import create_model
from pipeline.errors import ConfigError


def batch_norm(prefix: str, channels: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": torch.rand(channels, generator=generator) + 0.5,
        f"{prefix}.bias": torch.randn(channels, generator=generator) * 0.1,
        f"{prefix}.running_mean": torch.randn(channels, generator=generator) * 0.1,
        f"{prefix}.running_var": torch.rand(channels, generator=generator) + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(100),
    }


def insightface_state(depths: tuple[int, ...], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """An arcface_torch iresnet state dict (backbones/iresnet.py's names and shapes), identity head
    included."""
    state = {"conv1.weight": torch.randn(64, 3, 3, 3, generator=generator) * 0.1, "prelu.weight": torch.rand(64)}
    state.update(batch_norm("bn1", 64, generator))
    previous = 64
    for stage, blocks in enumerate(depths, start=1):
        channels = 64 * 2 ** (stage - 1)
        for block in range(blocks):
            name, inputs = f"layer{stage}.{block}", previous if block == 0 else channels
            state.update(batch_norm(f"{name}.bn1", inputs, generator))
            state[f"{name}.conv1.weight"] = torch.randn(channels, inputs, 3, 3, generator=generator) * 0.05
            state.update(batch_norm(f"{name}.bn2", channels, generator))
            state[f"{name}.prelu.weight"] = torch.rand(channels, generator=generator)
            state[f"{name}.conv2.weight"] = torch.randn(channels, channels, 3, 3, generator=generator) * 0.05
            state.update(batch_norm(f"{name}.bn3", channels, generator))
            if block == 0:
                state[f"{name}.downsample.0.weight"] = torch.randn(channels, inputs, 1, 1, generator=generator)
                state.update(batch_norm(f"{name}.downsample.1", channels, generator))
        previous = channels
    state.update(batch_norm("bn2", 512, generator))
    state["fc.weight"], state["fc.bias"] = torch.randn(512, 512 * 49, generator=generator), torch.zeros(512)
    state.update(batch_norm("features", 512, generator))
    return state


@pytest.fixture(scope="module")
def ir18_file(tmp_path_factory):
    state = insightface_state((2, 2, 2, 2), torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("ir") / "ms1mv3_arcface_r18.safetensors"
    save_file(state, str(path))
    return path, state


def test_an_insightface_checkpoint_loads_strictly_and_grey_faces_sum_its_rgb_filters(ir18_file):
    path, state = ir18_file
    model = create_model(
        "resnet18", in_channels=1, num_classes=7, image_size=112, backbone="ir18", backbone_weights=str(path)
    )
    loaded = model.body.state_dict()
    torch.testing.assert_close(loaded["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    for key in ("layer3.1.prelu.weight", "layer4.0.downsample.1.running_var", "layer2.0.bn3.bias"):
        torch.testing.assert_close(loaded[key], state[key])
    maps = model.stage_outputs(torch.rand(2, 1, 112, 112))
    assert [tuple(m.shape[1:]) for m in maps] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
    assert model({"image": torch.rand(2, 1, 112, 112)})["logits"].shape == (2, 7)


def test_ir_input_is_normalised_as_insightface_trains():
    model = create_model("resnet18", in_channels=3, num_classes=7, image_size=64, backbone="ir18").eval()
    grey = torch.full((1, 3, 64, 64), 0.5)
    with torch.no_grad():
        torch.testing.assert_close(model.stage_outputs(grey)[-1], model.body(torch.zeros(1, 3, 64, 64))[-1])


def test_a_file_that_does_not_fit_is_refused_naming_what_differs(ir18_file, tmp_path):
    path, state = ir18_file
    cases = {
        "missing": (
            {k: v for k, v in state.items() if k != "layer2.1.conv2.weight"},
            "missing .*layer2.1.conv2.weight",
        ),
        "foreign": ({**state, "head.kernel": torch.zeros(3)}, "not its own .*head.kernel"),
        "shape": ({**state, "layer1.0.prelu.weight": torch.zeros(3)}, r"layer1.0.prelu.weight is \(3,\)"),
    }
    for name, (broken, message) in cases.items():
        save_file(broken, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(ConfigError, match=message):
            create_model(
                "resnet18",
                in_channels=3,
                image_size=112,
                backbone="ir18",
                backbone_weights=str(tmp_path / f"{name}.safetensors"),
            )
    ir50 = tmp_path / "ir50.safetensors"
    save_file(state, str(ir50))
    with pytest.raises(ConfigError, match="does not fit insightface's ir50"):
        create_model("resnet18", in_channels=3, image_size=112, backbone="ir50", backbone_weights=str(ir50))


def test_keypoint_reads_an_ir_network_up_to_its_stage(ir18_file):
    path, _ = ir18_file
    model = create_model(
        "keypoint", in_channels=3, image_size=112, backbone="ir18", backbone_weights=str(path), stage=2
    )
    assert not any(key.startswith("body.body.layer3") for key in model.state_dict())
    batch = {"image": torch.rand(2, 3, 112, 112), "landmarks": torch.rand(2, 68, 2) * 80 + 16}
    assert model(batch)["keypoint_features"].shape == (2, 68, 128)
