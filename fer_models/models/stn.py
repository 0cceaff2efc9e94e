"""Spatial transformers on the baseline CNN: ``stn`` and the guided ``guided-stn``
(Luna-Jimenez et al., "Guided spatial transformers for facial expression recognition", 2021).

A localisation network predicts one affine map per face (initialised to the identity); the
sampler warps the image with it, and the baseline CNN (:mod:`fer_models.models.cnn`) classifies the
warped face. In ``stn`` the localisation network sees the image (Deep-Emotion's design); in
``guided-stn`` it sees a guidance map from the store instead (a landmark mask or a saliency map,
``guidance`` option), while the sampler warps the image: the paper's "mask generator at the
localisation network". Its second variant, at the localisation network and the sampler
(``sampler_guidance=True``), also gives the sampler the image weighted by the same map (resized
to S x S, bilinear), so the classifier sees the face with the guidance embedded in it.

Departure: the paper's weighted image is our reading of its "image with embedded knowledge"
(the image times the mask, as its landmark-based image weighing builds it).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fer_models.models.cnn import baseline_classifier, baseline_features
from fer_models.models.registry import ModelOutput, register_model
from pipeline.errors import ConfigError
from pipeline.guidance import GUIDANCE_TYPES


class Localisation(nn.Module):
    """Deep-Emotion's localisation network: ``(B, C, n, n) float32 -> (B, 2, 3)`` affine maps in
    normalised coordinates (``affine_grid``'s, output to input), starting at the identity."""

    def __init__(self, in_channels: int, size: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 7),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(8, 10, 5),
            nn.MaxPool2d(2),
            nn.ReLU(),
        )
        side = ((size - 6) // 2 - 4) // 2
        if side < 1:
            raise ConfigError(f"the localisation network needs inputs of at least 18 pixels, got {size}")
        to_theta = nn.Linear(32, 6)
        nn.init.zeros_(to_theta.weight)
        with torch.no_grad():
            to_theta.bias.copy_(torch.tensor([1.0, 0, 0, 0, 1, 0]))
        self.regress = nn.Sequential(nn.Flatten(), nn.Linear(10 * side * side, 32), nn.ReLU(), to_theta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta: torch.Tensor = self.regress(self.features(x))
        return theta.view(-1, 2, 3)


class _TransformerCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int, dropout: float, localisation: Localisation):
        super().__init__()
        self.localisation = localisation
        self.features = baseline_features(in_channels)
        self.classifier = baseline_classifier(image_size, num_classes, dropout)

    def transform(self, image: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta.to(image.dtype), list(image.shape), align_corners=False)
        return F.grid_sample(image, grid, align_corners=False)

    def classify(self, image: torch.Tensor, theta: torch.Tensor) -> ModelOutput:
        warped = self.transform(image, theta)
        return {"logits": self.classifier(self.features(warped)), "theta": theta, "warped": warped}


@register_model("stn", returns=("theta", "warped"), epochs=30, batch_size=64, lr=1e-3)
class SpatialTransformerCNN(_TransformerCNN):
    """Baseline CNN behind a spatial transformer whose localisation network sees the image.

    Returns ``logits (B, K)``, ``theta (B, 2, 3)`` and the ``warped`` image ``(B, C, S, S)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 7, image_size: int = 48, dropout: float = 0.5):
        super().__init__(in_channels, num_classes, image_size, dropout, Localisation(in_channels, image_size))

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        image = batch["image"]
        return self.classify(image, self.localisation(image))


# The maps the localisation network can see: every one-channel map of the catalogue, the paper's
# soft mask first.
GUIDED_STN_GUIDANCE = tuple(
    sorted((name for name, kind in GUIDANCE_TYPES.items() if kind.single_map), key=lambda name: name != "mask_soft")
)


@register_model(
    "guided-stn",
    reads=lambda options: (options["guidance"],),
    returns=("theta", "warped"),
    choices={"guidance": GUIDED_STN_GUIDANCE},
    epochs=30,
    batch_size=64,
    lr=1e-3,
)
class GuidedSpatialTransformerCNN(_TransformerCNN):
    """Guided spatial transformer: the localisation network sees the store's ``guidance`` map
    ``(B, G, H, H)`` (``mask_soft`` by default; ``mask_binary``, ``mask_dilated``, ``saliency``...),
    the sampler warps the image ``(B, C, S, S)`` (times the map with ``sampler_guidance``).

    Returns ``logits (B, K)``, ``theta (B, 2, 3)`` and the ``warped`` image.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 7,
        image_size: int = 48,
        dropout: float = 0.5,
        guidance: str = "mask_soft",
        guidance_size: int = 0,
        sampler_guidance: bool = False,
    ):
        channels = len(GUIDANCE_TYPES[guidance].channels)
        super().__init__(
            in_channels, num_classes, image_size, dropout, Localisation(channels, guidance_size or image_size)
        )
        self.guidance, self.sampler_guidance = guidance, sampler_guidance

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        image, guidance = batch["image"], batch[self.guidance]
        theta = self.localisation(guidance)
        if self.sampler_guidance:
            weight = F.interpolate(guidance, size=image.shape[-2:], mode="bilinear", align_corners=False)
            image = image * weight
        return self.classify(image, theta)
