"""Every registered model on a batch from a store (synthetic, then real): forward, backward, finite
gradients, and a few steps of learning on real faces."""

import pytest
import torch

from fer_models.data.selection import select_samples
from fer_models.data.stream import StoreBatches
from fer_models.models.registry import create_model, get_model_entry, list_models, model_reads
from fer_models.training.config import TrainConfig
from fer_models.training.engine import classification_loss, prepare_batch
from fer_models.training.store_view import StoreView, build_model
from pipeline.errors import ConfigError

VARIANTS = [(name, {}) for name in list_models()] + [
    ("guided-stn", {"guidance": "saliency"}),
    ("guided-stn", {"guidance": "mask_binary"}),
    ("guided-stn", {"sampler_guidance": True}),
    ("feratt", {"attention": False}),
    ("feratt", {"structure_mixup": True}),
    ("local-nonlocal", {"weights": False}),
    ("local-nonlocal", {"regions": "grid"}),
    ("keypoint", {"attention": False}),
    ("pal", {"strategy": "half", "attribution": "gradient"}),
]
SMALL = {
    "resnet18": {"width": 16},
    "pal": {"width": 16},
    "keypoint": {"width": 16},
    "feratt": {"width": 16, "attention_width": 16, "embedding": 64},
}


def store_batch(store, model, n=8):
    selection = select_samples(store, "train")
    fields = tuple(dict.fromkeys(("image", *model.inputs)))
    return prepare_batch(next(iter(StoreBatches(store, selection, fields, n))), torch.device("cpu"))


def total_loss(output, batch):
    return classification_loss(output["logits"], batch["target"], None) + sum(output.get("losses", {}).values())


@pytest.mark.parametrize("name, options", VARIANTS, ids=lambda v: str(v))
def test_each_model_runs_forward_and_backward_on_a_store_batch(synthetic_store, name, options):
    view = StoreView.open(str(synthetic_store))
    torch.manual_seed(0)
    model = build_model(TrainConfig(store=str(synthetic_store), model=name, options=options), view, num_classes=7)
    batch = store_batch(synthetic_store, model)
    output = model(batch)
    assert output["logits"].shape == (8, 7)
    loss = total_loss(output, batch)
    loss.backward()
    assert torch.isfinite(loss)
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
    entry = get_model_entry(name)
    assert set(output) <= {"logits", "losses", *entry.returns}, "returns what it declares"
    assert model.inputs == model_reads(name, options) and set(model.inputs) <= set(batch)
    if name in ("stn", "guided-stn"):
        assert output["theta"].shape == (8, 2, 3) and output["warped"].shape == batch["image"].shape
    model.eval()
    with torch.no_grad():
        assert "losses" not in model(batch)  # auxiliary terms are for training only


@pytest.mark.parametrize("name, options", VARIANTS, ids=lambda v: str(v))
def test_each_model_learns_a_few_steps_on_a_small_real_store(fer_store, name, options):
    view = StoreView.open(str(fer_store))
    torch.manual_seed(0)
    config = TrainConfig(store=str(fer_store), model=name, options={**SMALL.get(name, {}), **options})
    model = build_model(config, view, num_classes=7)
    batch = store_batch(fer_store, model, n=16)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = total_loss(model(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_transformers_start_at_the_identity():
    image = torch.rand(2, 1, 48, 48)
    model = create_model("stn", in_channels=1, num_classes=7, image_size=48)
    output = model({"image": image})
    torch.testing.assert_close(output["warped"], image, atol=1e-5, rtol=0)


def test_a_model_reading_guidance_the_store_lacks_says_how_to_add_it(synthetic_store):
    view = StoreView.open(str(synthetic_store))
    config = TrainConfig(store=str(synthetic_store), model="guided-stn", options={"guidance": "saliency_fine_grained"})
    with pytest.raises(
        ConfigError,
        match=r"reads saliency_fine_grained, which the store .* lacks; add it with "
        r"`fer-preprocess .* --guidance saliency_fine_grained`",
    ):
        build_model(config, view, 7)
    with pytest.raises(ConfigError, match="guided-stn guidance must be one of mask_soft"):
        create_model("guided-stn", guidance="regions")
    with pytest.raises(ConfigError, match="model 'cnn' has no option 'guidance'; its options: dropout=0.5"):
        create_model("cnn", guidance="mask_soft")
    assert get_model_entry("guided-stn").options()["guidance"] == "mask_soft"
