"""Local and non-local region network (after Shi et al., Machine Intelligence Research 2024),
trained from the store's region boxes.

- Local part: a shared convolutional trunk, then one small network per facial region, each
  reading its region of the trunk's maps (ROI align with the store's ``regions`` boxes).
- Non-local part: a U-Net-style network over the whole face gives a global feature and one
  weight in (0, 1) per region.
- The region weights scale the local features before fusion, so the gradient of the fused
  classifier reaches the local networks through them. The weighted local features and the
  global feature are concatenated and classified.

``weights=False`` is the unguided twin's counterpart in this family: the same network with every
region weight fixed at 1 (no weight head). How the paper feeds the weights back into the local
part is not specified beyond this here: scaling the local features is our reading.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fer_models.models.feratt import AttentionUNet
from fer_models.models.landmark_sampling import roi_align
from fer_models.models.registry import ModelOutput, register_model
from pipeline.stages.regions import REGIONS


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()
    )


class RegionNet(nn.Module):
    """``(B, C, r, r)`` region crop -> ``(B, D)`` feature."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.body = nn.Sequential(_conv(in_channels, dim), _conv(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


@register_model("local-nonlocal", epochs=30, batch_size=64, lr=1e-3)
class LocalNonLocalNet(nn.Module):
    """``image (B, C, S, S)``, ``regions (B, R, 4)`` -> ``logits (B, K)``, ``region_weights (B, R)``,
    ``local_features (B, R, D)``.

    width: trunk channels. region_size: ROI-align grid side. dim: local feature size.
    weights: the non-local region weights (False: all 1).
    """

    inputs = ("image", "regions")

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 7,
        image_size: int = 112,
        width: int = 32,
        region_size: int = 6,
        dim: int = 64,
        weights: bool = True,
    ):
        super().__init__()
        regions = len(REGIONS)
        self.region_size = region_size
        self.trunk = nn.Sequential(_conv(in_channels, width, stride=2), _conv(width, width))
        self.local = nn.ModuleList(RegionNet(width, dim) for _ in range(regions))
        self.nonlocal_net = AttentionUNet(in_channels, width, width=16, sigmoid=False)  # U-Net over the whole face
        self.global_feature = nn.Linear(width, dim)
        self.weight_head = nn.Linear(width, regions) if weights else None
        self.classifier = nn.Sequential(nn.Dropout(0.3), nn.Linear((regions + 1) * dim, num_classes))

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        image = batch["image"]
        maps = self.trunk(image)
        crops = roi_align(maps, batch["regions"], image.shape[-1], self.region_size)  # (B, R, C, r, r)
        local = torch.stack([net(crops[:, i]) for i, net in enumerate(self.local)], 1)  # (B, R, D)
        pooled = self.nonlocal_net(image).mean(dim=(2, 3))  # (B, width)
        if self.weight_head is not None:
            weights = torch.sigmoid(self.weight_head(pooled))
        else:
            weights = torch.ones(local.shape[:2], device=local.device, dtype=local.dtype)
        fused = torch.cat([(local * weights.unsqueeze(-1)).flatten(1), F.relu(self.global_feature(pooled))], 1)
        return {"logits": self.classifier(fused), "region_weights": weights, "local_features": local}
