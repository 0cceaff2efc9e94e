"""ResNet-18 (He et al. 2016), written here so that no weights or packages are downloaded.

For small faces (S <= 64, e.g. FER-2013's 48x48) the stem is a single 3x3 convolution without
pooling, as in CIFAR-style ResNets, so the last stage still sees a 6x6 map at S = 48; larger
faces get the ImageNet stem (7x7 stride-2 convolution and max pooling).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fer_models.models.registry import ModelOutput
from pipeline.errors import ConfigError

STEMS = ("auto", "small", "imagenet")


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def pooled_classification(head: nn.Linear, last_stage: torch.Tensor) -> ModelOutput:
    """``logits (B, K)`` and ``features (B, D)``: ``last_stage`` ``(B, D, h, w)`` averaged over space,
    then ``head``."""
    features = last_stage.mean(dim=(2, 3))
    return {"logits": head(features), "features": features}


class PretrainedStages(nn.Module):
    """What the IR and timm backbones share: a ``body`` giving stage maps of the ``normalise``-d
    image, and an optional linear ``head`` on the pooled last stage (set by the subclass)."""

    backbone_parts = ("body",)  # fine-tuning starts here (backbone_parameters)
    body: Any  # an IResNetBody, or timm's features_only model (typed Any for its attributes)
    normalise: nn.Module
    head: nn.Linear | None

    def stage_outputs(self, image: torch.Tensor, until: int = 4) -> list[torch.Tensor]:
        """Outputs of stages 1..``until`` for ``(B, C, S, S)`` images in [0, 1]:
        ``(B, channels[i-1], h_i, w_i)`` each."""
        return list(self.body(self.normalise(image)))[:until]

    def classify(self, last_stage: torch.Tensor) -> ModelOutput:
        """Logits and pooled features from the last stage's output."""
        if self.head is None:
            raise TypeError("this backbone was built without a head (num_classes=0)")
        return pooled_classification(self.head, last_stage)

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        return self.classify(self.stage_outputs(batch["image"])[-1])


class ResNet18(nn.Module):
    """``(B, C, S, S) float32 -> logits (B, K)``; also returns ``features`` ``(B, 8w)``, the pooled
    last-stage features, and keeps each stage's output reachable as ``stages[i]``.

    width: channels of the first stage (64 in the paper); stages have w, 2w, 4w, 8w.
    stem: ``auto`` (small stem for S <= 64), ``small`` or ``imagenet``.
    """

    backbone_parts = ("stem", "stages")  # fine-tuning starts here (backbone_parameters)

    def __init__(
        self, in_channels: int = 3, num_classes: int = 7, image_size: int = 112, width: int = 64, stem: str = "auto"
    ):
        super().__init__()
        if stem not in STEMS:
            raise ConfigError(f"resnet18 stem must be one of {', '.join(STEMS)}; got {stem!r}")
        if stem == "small" or (stem == "auto" and image_size <= 64):
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        widths = [width, 2 * width, 4 * width, 8 * width]
        stages, previous = [], width
        for i, channels in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(previous, channels, stride), BasicBlock(channels, channels, 1)))
            previous = channels
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(previous, num_classes)

    def stage_outputs(self, image: torch.Tensor, until: int = 4) -> list[torch.Tensor]:
        """Outputs of stages 1..``until``: ``(B, w * 2**(i-1), S_i, S_i)`` each."""
        x, outputs = self.stem(image), []
        for stage in self.stages[:until]:
            x = stage(x)
            outputs.append(x)
        return outputs

    def classify(self, last_stage: torch.Tensor) -> ModelOutput:
        """Logits and pooled features from the last stage's output."""
        return pooled_classification(self.head, last_stage)

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        return self.classify(self.stage_outputs(batch["image"])[-1])
