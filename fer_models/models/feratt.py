"""FERAtt (Marrero Fernández et al., "FERAtt: facial expression recognition with attention net",
CVPR Workshops 2019), trained from the store's face hull masks.

- An encoder-decoder (a small U-Net) produces attention maps from the face; they multiply,
  pixel-wise, the maps of a convolutional feature extractor.
- A reconstruction head turns the product into an *attention image*. It is supervised with the
  face on black, the image times the store's ``mask_hull`` (L1 loss).
- A PreActResNet-18-style classifier (or a timm model, ``backbone=NAME``) reads the attention
  image and gives an embedding and logits.
- The Gaussian-structure representation loss: the class means of the embeddings in the batch;
  each sample's soft assignment to the class means (a Gaussian of its squared distance to each)
  is compared with its label by cross-entropy.

The paper's encoder was ImageNet-pretrained. Nothing can be downloaded here, so it trains from
scratch; ``fer-train --init PATH`` loads a user's weights. ``attention=False`` is the unguided
twin: the same classifier and structure loss on the image itself.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fer_models.models.backbone import BUILTIN, check_backbone_options
from fer_models.models.registry import ModelOutput, register_model
from fer_models.models.timm_backbone import TimmPooled


def _conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()
    )


class AttentionUNet(nn.Module):
    """``(B, C, S, S) -> (B, F, S, S)`` maps: attention in (0, 1), or raw features with
    ``sigmoid=False``. Two poolings and two upsamplings with skip connections."""

    def __init__(self, in_channels: int, maps: int, width: int = 32, sigmoid: bool = True):
        super().__init__()
        self.sigmoid = sigmoid
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
        out = self.out(d1)
        return torch.sigmoid(out) if self.sigmoid else out


class PreActBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Conv2d(in_channels, channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + shortcut


class PreActResNet18(nn.Module):
    """``(B, C, S, S) -> (B, 8w)`` pooled features; 3x3 stem, stages of w, 2w, 4w, 8w."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        layers, previous = [], width
        for i, channels in enumerate((width, 2 * width, 4 * width, 8 * width)):
            layers += [PreActBlock(previous, channels, 1 if i == 0 else 2), PreActBlock(channels, channels, 1)]
            previous = channels
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(previous)
        self.num_features = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.layers(self.stem(x)))).mean(dim=(2, 3))


def gaussian_structure_loss(
    embedding: torch.Tensor, target: torch.Tensor, num_classes: int, sigma: float = 1.0
) -> torch.Tensor:
    """Cross-entropy between each sample's soft assignment to the batch's class means and its class.

    Computed without reading any value back to the host (no ``unique``, no boolean indexing), so
    a CUDA step does not wait for the GPU: classes absent from the batch are masked out.

    Args:
        embedding: ``(B, D)``; the loss is computed in float32.
        target: ``(B,) int64`` class indices in ``[0, num_classes)``.
        num_classes: K.
        sigma: width of the Gaussians, in embedding units.

    Returns:
        A scalar; 0 when fewer than two classes are in the batch (no structure to compare).
    """
    embedding = embedding.float()
    one_hot = (target.unsqueeze(1) == torch.arange(num_classes, device=target.device)).float()  # (B, K)
    counts = one_hot.sum(0)  # (K,)
    means = (one_hot.T @ embedding) / counts.clamp(min=1).unsqueeze(1)  # (K, D); absent classes 0
    distance = torch.cdist(embedding, means).pow(2)  # (B, K)
    logits = (-distance / (2 * sigma**2)).masked_fill(counts == 0, float("-inf"))
    loss = F.cross_entropy(logits, target)
    return torch.where((counts > 0).sum() >= 2, loss, embedding.sum() * 0.0)


@register_model("feratt", epochs=30, batch_size=32, lr=1e-3)
class FERAtt(nn.Module):
    """``image (B, C, S, S)`` (+ ``mask_hull (B, 1, H, H)`` in training) -> ``logits (B, K)``,
    ``embedding (B, E)``, and with attention ``attention (B, F, S, S)`` and ``attention_image
    (B, C, S, S)``; in training ``losses`` ``reconstruction`` and ``structure``.

    width: first-stage channels of the classifier. maps: attention maps (and feature channels).
    backbone: the classifier: ``builtin`` (PreActResNet-18 of ``width``) or a timm model name, its
    pooled features (optionally from the local file ``backbone_weights``; :mod:`.timm_backbone`).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 7,
        image_size: int = 112,
        width: int = 32,
        maps: int = 32,
        embedding: int = 64,
        attention: bool = True,
        reconstruction_weight: float = 1.0,
        structure_weight: float = 0.1,
        structure_sigma: float = 1.0,
        backbone: str = BUILTIN,
        backbone_weights: str = "",
    ):
        super().__init__()
        check_backbone_options(backbone, backbone_weights, width=width != 32)
        self.use_attention = attention
        self.inputs = ("image", "mask_hull") if attention else ("image",)
        if attention:
            self.features = nn.Sequential(_conv(in_channels, maps), _conv(maps, maps))
            self.attention = AttentionUNet(in_channels, maps)
            self.reconstruct = nn.Conv2d(maps, in_channels, 3, 1, 1)
        self.classifier: PreActResNet18 | TimmPooled = (
            PreActResNet18(in_channels, width)
            if backbone == BUILTIN
            else TimmPooled(backbone, in_channels, image_size, backbone_weights)
        )
        self.embed = nn.Linear(self.classifier.num_features, embedding)
        self.head = nn.Linear(embedding, num_classes)
        self.reconstruction_weight, self.structure_weight, self.structure_sigma = (
            reconstruction_weight,
            structure_weight,
            structure_sigma,
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        image, losses = batch["image"], dict[str, torch.Tensor]()
        x, attention = image, None
        if self.use_attention:
            attention = self.attention(image)
            x = torch.sigmoid(self.reconstruct(self.features(image) * attention))
            if self.training and self.reconstruction_weight > 0 and "mask_hull" in batch:
                hull = F.interpolate(batch["mask_hull"], size=image.shape[-2:], mode="bilinear", align_corners=False)
                losses["reconstruction"] = self.reconstruction_weight * F.l1_loss(x, image * hull)
        embedding = self.embed(self.classifier(x))
        output: ModelOutput = {"logits": self.head(embedding), "embedding": embedding}
        if attention is not None:
            output["attention"], output["attention_image"] = attention, x
        if self.training and self.structure_weight > 0 and "target" in batch:
            target = batch["target"] if batch["target"].dim() == 1 else batch["target"].argmax(1)
            losses["structure"] = self.structure_weight * gaussian_structure_loss(
                embedding, target, self.head.out_features, self.structure_sigma
            )
        if losses:
            output["losses"] = losses
        return output
