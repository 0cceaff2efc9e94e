"""Keypoint features (So and Han, "Facial landmark-driven keypoint feature extraction for robust
facial expression recognition", Sensors 25(12):3762, 2025), trained from the store's aligned
landmarks.

A backbone's feature maps are sampled bilinearly at the 68 aligned landmarks, giving one feature
per keypoint. Representative keypoint-feature attention uses the nasal-base keypoint (index 33)
as the query over all 68 keypoint features, and the attended feature (plus the query, a residual)
is classified. Keypoint-feature regularisation samples again at landmarks moved by Gaussian noise
(sigma relative to the inter-ocular distance) and penalises the squared difference of the
unit-normalised features, so that features vary smoothly around each keypoint.

The sampled map: the paper samples a face-alignment network's maps, which have a quarter of the
input's resolution. A ResNet stage 3 has a sixteenth (7x7 at S = 112: 68 landmarks in 49 cells,
and a perturbation of 0.05 inter-ocular distances moves a sample by a tenth of a cell). So by
default (``fuse=True``) stages 1..``stage`` are each projected to D channels by a 1x1 convolution,
resized bilinearly to stage 1's grid (a quarter of S with the ImageNet stem, S itself with the
small stem of S <= 64) and summed, as a feature pyramid's top-down path does; ``fuse=False``
samples the stage's own maps.

The penalty is on unit-normalised features: on raw features the backbone could shrink them to pay
less with no change to the logits (the classifier's LayerNorm undoes any scale).

Departures: the paper's feature maps come from a pretrained face-alignment network; here the
backbone (ResNet-18, :mod:`fer_models.models.resnet`, or a timm model) trains end to end from
scratch: nothing can be downloaded, and the store already holds the landmarks the alignment
network would have found. Defaults that the paper does not fix here are ours: feature stage 3,
sigma 0.05 of the inter-ocular distance, regularisation weight 1, 4 attention heads.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fer_models.models.backbone import BUILTIN, backbone_network
from fer_models.models.ir_backbone import IRStages
from fer_models.models.landmark_sampling import sample_points
from fer_models.models.registry import ModelOutput, register_model
from fer_models.models.resnet import ResNet18
from fer_models.models.timm_backbone import TimmStages
from pipeline.errors import ConfigError

NASAL_BASE = 33
RIGHT_EYE, LEFT_EYE = slice(36, 42), slice(42, 48)


def inter_ocular_distance(landmarks: torch.Tensor) -> torch.Tensor:
    """``(B, 68, 2)`` aligned landmarks -> ``(B,)`` distance between the two eye centres, pixels."""
    distance: torch.Tensor = (landmarks[:, RIGHT_EYE].mean(1) - landmarks[:, LEFT_EYE].mean(1)).norm(dim=-1)
    return distance


def keypoint_regularisation(
    maps: torch.Tensor, landmarks: torch.Tensor, moved: torch.Tensor, size: int
) -> torch.Tensor:
    """Mean squared distance between the unit-normalised features at the landmarks and at the
    moved landmarks.

    Args:
        maps: ``(B, D, h, w)`` feature maps covering the S x S crop.
        landmarks, moved: ``(B, 68, 2)`` aligned pixels.
        size: S.

    Returns:
        A scalar in [0, 4]; unchanged when ``maps`` is scaled by a positive factor.
    """
    here = F.normalize(sample_points(maps, landmarks, size), dim=-1, eps=1e-6)
    there = F.normalize(sample_points(maps, moved, size), dim=-1, eps=1e-6)
    return (there - here).pow(2).sum(-1).mean()


@register_model(
    "keypoint",
    reads=("landmarks",),
    returns=("keypoint_features",),
    ranges={"stage": (1, 4), "sigma": (0.0, 1.0)},
    epochs=30,
    batch_size=64,
    lr=1e-3,
)
class KeypointFeatureNet(nn.Module):
    """``image (B, C, S, S)`` and ``landmarks (B, 68, 2)`` -> ``logits (B, K)``, the
    ``keypoint_features (B, 68, D)`` and, in training, ``losses["keypoint_regularisation"]``.

    stage: the deepest backbone stage (1-4) read; D = width * 2**(stage - 1) for the built-in
        ResNet-18, the timm model's channels at that stage with ``backbone=NAME`` (:mod:`.backbone`).
    fuse: sample stages 1..stage fused on stage 1's grid (see the module docstring); False samples
        the stage's own maps.
    sigma: perturbation standard deviation as a fraction of the inter-ocular distance.
    regularisation: weight of the regularisation term (0 turns it off).
    attention: the nasal-base attention (False: the mean keypoint feature is classified).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 7,
        image_size: int = 112,
        width: int = 64,
        stage: int = 3,
        sigma: float = 0.05,
        regularisation: float = 1.0,
        attention: bool = True,
        heads: int = 4,
        fuse: bool = True,
        backbone: str = BUILTIN,
        backbone_weights: str = "",
    ):
        super().__init__()
        network = backbone_network(
            backbone,
            backbone_weights,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            width=width,
            until=stage,
            head=False,
        )
        self.body: IRStages | TimmStages | None = None
        if not isinstance(network, ResNet18):
            self.body, channels = network, list(network.channels)
        else:  # the built-in network's stem and stages, under the names its checkpoints have
            self.stem, self.stages = network.stem, network.stages[:stage]
            self.backbone_parts = ("stem", "stages")  # fine-tuning starts here (backbone_parameters)
            channels = [width * 2**i for i in range(stage)]
        dim = channels[-1]
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in channels) if fuse else None
        if attention and dim % heads:
            raise ConfigError(f"keypoint feature size {dim} is not divisible by heads={heads}")
        self.image_size, self.sigma, self.regularisation = image_size, sigma, regularisation
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True) if attention else None
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def feature_maps(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S)`` -> the sampled ``(B, D, h, w)`` maps: stage 1's grid when fused, the
        last stage's otherwise."""
        if self.body is not None:
            stages = self.body.stage_outputs(image)
        else:
            x, stages = self.stem(image), []
            for stage in self.stages:
                x = stage(x)
                stages.append(x)
        if self.lateral is None:
            return stages[-1]
        grid = stages[0].shape[-2:]
        fused: torch.Tensor = self.lateral[0](stages[0])
        for lateral, maps in zip(self.lateral[1:], stages[1:], strict=True):
            fused = fused + F.interpolate(lateral(maps), size=grid, mode="bilinear", align_corners=False)
        return fused

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        maps = self.feature_maps(batch["image"])
        landmarks = batch["landmarks"]
        size = batch["image"].shape[-1]
        features = sample_points(maps, landmarks, size)  # (B, 68, D)
        if self.attention is not None:
            query = features[:, NASAL_BASE : NASAL_BASE + 1]
            attended, _ = self.attention(query, features, features)
            pooled = self.norm(attended[:, 0] + query[:, 0])
        else:
            pooled = self.norm(features.mean(1))
        output: ModelOutput = {"logits": self.head(pooled), "keypoint_features": features}
        if self.training and self.regularisation > 0:
            scale = (self.sigma * inter_ocular_distance(landmarks)).view(-1, 1, 1)
            moved = landmarks + torch.randn_like(landmarks) * scale
            penalty = keypoint_regularisation(maps, landmarks, moved, size)
            output["losses"] = {"keypoint_regularisation": self.regularisation * penalty}
        return output
