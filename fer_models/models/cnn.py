"""The small baseline CNN of the guided-STN paper (Luna-Jimenez et al. 2021).

The network the guided-STN paper builds on (after Minaee et al.'s Deep-Emotion): two blocks of
two 3x3 convolutions with 10 filters and 2x2 max pooling, dropout, a 50-unit fully connected
layer and the classifier. The paper fed 48x48 grayscale faces; any S and channel count work here.
"""

from __future__ import annotations

import torch
from torch import nn

from fer_models.models.registry import ModelOutput, register_model


def baseline_features(in_channels: int) -> nn.Sequential:
    """``(B, C, S, S) -> (B, 10, s, s)`` with ``s = ((S - 4) // 2 - 4) // 2``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 10, 3),
        nn.ReLU(),
        nn.Conv2d(10, 10, 3),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(10, 10, 3),
        nn.ReLU(),
        nn.Conv2d(10, 10, 3),
        nn.BatchNorm2d(10),
        nn.MaxPool2d(2),
        nn.ReLU(),
    )


def baseline_classifier(image_size: int, num_classes: int, dropout: float) -> nn.Sequential:
    side = ((image_size - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Dropout(dropout), nn.Flatten(), nn.Linear(10 * side * side, 50), nn.ReLU(), nn.Linear(50, num_classes)
    )


@register_model("cnn", ranges={"dropout": (0.0, 1.0)}, epochs=30, batch_size=64, lr=1e-3)
class BaselineCNN(nn.Module):
    """Guided-STN paper's baseline CNN: 4 conv (10 filters), 2 max-pools, FC 50, classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 7, image_size: int = 48, dropout: float = 0.5):
        super().__init__()
        self.features = baseline_features(in_channels)
        self.classifier = baseline_classifier(image_size, num_classes, dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        """``batch["image"]``: ``(B, C, S, S) float32`` in [0, 1] -> ``{"logits": (B, K)}``."""
        return {"logits": self.classifier(self.features(batch["image"]))}
