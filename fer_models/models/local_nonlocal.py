"""Local and non-local region network (after Shi et al., Machine Intelligence Research 2024),
trained from the store's region boxes.

- Non-local part: a U-Net-style network over the whole face gives feature maps at full
  resolution; pooled, they give a global feature and one weight in (0, 1) per region.
- Local part: one small network per facial region, each reading its region (ROI align with the
  store's ``regions`` boxes) of both a shared convolutional trunk's maps and the U-Net's maps, so
  the non-local features reach every local network.
- The region weights scale the local features before fusion, so the gradient of the fused
  classifier reaches the local networks through them. The weighted local features and the
  global feature are concatenated and classified.

The unguided twin is ``regions=grid``: the same network reading fixed regions, the crop cut in
3 rows x 2 columns (six regions, as many as the landmark boxes), so it needs no landmarks.
``weights=False`` (every region weight fixed at 1, no weight head) is an ablation of the
weighting, not a twin: it still reads the landmark boxes.

Departures: the paper's exact layers are not public here; the trunk, the U-Net's widths and the
fusion are ours, and how the paper feeds the weights back into the local part is our reading
(scaling the local features).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fer_models.models.landmark_sampling import roi_align
from fer_models.models.registry import ModelOutput, register_model
from pipeline.stages.regions import REGIONS

REGION_SOURCES = ("landmarks", "grid")


def grid_regions(batch_size: int, image_size: int, device: torch.device) -> torch.Tensor:
    """``(B, 6, 4)`` fixed boxes (left, top, right, bottom) in aligned pixels: the S x S crop cut in
    3 rows x 2 columns, row by row."""
    third, half = image_size / 3, image_size / 2
    boxes = [(c * half, r * third, (c + 1) * half, (r + 1) * third) for r in range(3) for c in range(2)]
    return torch.tensor(boxes, device=device).expand(batch_size, -1, -1)


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()
    )


class NonLocalUNet(nn.Module):
    """``(B, C, S, S) -> (B, F, S, S)`` feature maps over the whole face: two poolings and two
    upsamplings with skip connections."""

    def __init__(self, in_channels: int, maps: int, width: int = 16):
        super().__init__()
        self.enc1, self.enc2, self.enc3 = (
            _conv(in_channels, width),
            _conv(width, 2 * width),
            _conv(2 * width, 4 * width),
        )
        self.dec2, self.dec1 = _conv(6 * width, 2 * width), _conv(3 * width, width)
        self.out = nn.Conv2d(width, maps, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:]), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:]), e1], 1))
        maps: torch.Tensor = self.out(d1)
        return maps


class RegionNet(nn.Module):
    """``(B, C, r, r)`` region crop -> ``(B, D)`` feature."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.body = nn.Sequential(_conv(in_channels, dim), _conv(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps: torch.Tensor = self.body(x)
        return maps.mean(dim=(2, 3))


@register_model(
    "local-nonlocal",
    reads=lambda options: ("regions",) if options["regions"] == "landmarks" else (),
    returns=("region_weights", "local_features"),
    choices={"regions": REGION_SOURCES},
    epochs=30,
    batch_size=64,
    lr=1e-3,
)
class LocalNonLocalNet(nn.Module):
    """``image (B, C, S, S)``, ``regions (B, R, 4)`` -> ``logits (B, K)``, ``region_weights (B, R)``,
    ``local_features (B, R, D)``.

    width: trunk and U-Net output channels. region_size: ROI-align grid side. dim: local feature
    size. weights: the non-local region weights (False: all 1). regions: ``landmarks`` (the store's
    boxes) or ``grid`` (fixed boxes: the unguided twin, which reads the image only).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 7,
        image_size: int = 112,
        width: int = 32,
        region_size: int = 6,
        dim: int = 64,
        weights: bool = True,
        regions: str = "landmarks",
    ):
        super().__init__()
        self.landmark_regions = regions == "landmarks"
        count = len(REGIONS)
        self.region_size = region_size
        self.trunk = nn.Sequential(_conv(in_channels, width, stride=2), _conv(width, width))
        self.local = nn.ModuleList(RegionNet(2 * width, dim) for _ in range(count))
        self.nonlocal_net = NonLocalUNet(in_channels, width)  # U-Net over the whole face
        self.global_feature = nn.Linear(width, dim)
        self.weight_head = nn.Linear(width, count) if weights else None
        self.classifier = nn.Sequential(nn.Dropout(0.3), nn.Linear((count + 1) * dim, num_classes))

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        image = batch["image"]
        size = image.shape[-1]
        boxes = batch["regions"] if self.landmark_regions else grid_regions(len(image), size, image.device)
        nonlocal_maps = self.nonlocal_net(image)  # (B, width, S, S)
        crops = torch.cat(
            [
                roi_align(self.trunk(image), boxes, size, self.region_size),
                roi_align(nonlocal_maps, boxes, size, self.region_size),
            ],
            2,
        )  # (B, R, 2 width, r, r)
        local = torch.stack([net(crops[:, i]) for i, net in enumerate(self.local)], 1)  # (B, R, D)
        pooled = nonlocal_maps.mean(dim=(2, 3))  # (B, width)
        if self.weight_head is not None:
            weights = torch.sigmoid(self.weight_head(pooled))
        else:
            weights = torch.ones(local.shape[:2], device=local.device, dtype=local.dtype)
        fused = torch.cat([(local * weights.unsqueeze(-1)).flatten(1), F.relu(self.global_feature(pooled))], 1)
        return {"logits": self.classifier(fused), "region_weights": weights, "local_features": local}
