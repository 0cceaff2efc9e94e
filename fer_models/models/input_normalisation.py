"""The input normalisation a backbone's weights were trained with.

Store images enter every model as ``float32`` in [0, 1]. A pretrained backbone expects its own
normalisation, ``(x - mean) / std`` per channel: timm's models their ``pretrained_cfg`` (ImageNet's
mean and std for most, 0.5 / 0.5 for some), insightface's IR networks ``(x - 0.5) / 0.5``. The
backbone applies it as its first operation, so a checkpoint, an export or a caller's own loop feed
the store's [0, 1] images unchanged. Grey stores (C = 1) get the mean of the three channels'
statistics: the backbones' first convolution is adapted to one channel by summing its RGB filters,
which assumes a grey face is the same value in R, G and B.

The built-in networks train from scratch on [0, 1] inputs and have no normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INSIGHTFACE_MEAN, INSIGHTFACE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


class InputNormalisation(nn.Module):
    """``(B, C, S, S)`` in [0, 1] -> ``(x - mean) / std`` per channel.

    Args:
        mean, std: the weights' per-channel statistics, three (RGB) or ``in_channels`` values.
        in_channels: C; three-channel statistics are averaged for C = 1.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], in_channels: int):
        super().__init__()
        if in_channels != len(mean):
            mean, std = [sum(mean) / len(mean)] * in_channels, [sum(std) / len(std)] * in_channels
        # Not in the state dict: the statistics belong to the backbone's kind, not to its training.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def timm_normalisation(name: str, in_channels: int) -> InputNormalisation:
    """The normalisation of timm model ``name``'s default pretrained weights (ImageNet's where
    timm names none)."""
    import timm

    config = timm.models.get_pretrained_cfg(name)
    mean = getattr(config, "mean", None) or IMAGENET_MEAN
    std = getattr(config, "std", None) or IMAGENET_STD
    return InputNormalisation(mean, std, in_channels)
