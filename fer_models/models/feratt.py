"""FERAtt (Marrero Fernández et al., "FERAtt: facial expression recognition with attention net",
CVPR Workshops 2019), as its authors' code builds its Gaussian-structure variant
(``pedrodiamel/ferattention``: ``FERAttentionGMMNet`` in ``torchlib/models/ferattentionnet.py``,
trained by ``AttentionGMMNeuralNet`` of ``torchlib/attentionnet.py`` with ``runs/train.sh``'s
``attgmmnet`` / ``ferattentiongmm``), supervised by the store's face hull masks.

- Attention module: a U-Net (convolution + ReLU pairs of 64, 128 and 256 channels, two max
  poolings, bilinear upsampling with skip connections) gives one attention map A.
- Feature module: a 9x9 convolution, four residual blocks (3x3, LeakyReLU 0.2, 3x3), a 3x3
  convolution and a long skip give maps F.
- Reconstruction: sigmoid(A) * F goes through two convolution + ReLU layers (F/2, F/4 channels)
  and a 1x1 convolution to the *attention image*, C channels, no output activation.
- Classifier: the attention image, average-pooled to about 32 x 32 as the authors pool their
  128 x 128 faces (pool ``S // 32``, at least 1), enters a PreActResNet-18 whose pooled features
  become an embedding (``embedding``, 1000 in the training script) and logits.
- Losses, all added to cross-entropy with weight 1, as ``AttentionGMMNeuralNet`` adds them:
  ``reconstruction``: ``Attloss``, 10 x the mean squared error between the attention image and
  the face, clamped at 30; ``structure``: ``DGMMLoss``, the squared error between each
  embedding's normalised Gaussian posteriors over the batch's class means (sigma 1) and its
  one-hot label, summed over classes, averaged over samples.

Which version: the losses of ``torchlib/netlosses.py`` differ between the repository's commits
(one ``Attloss`` is 5 x tanh(3 |x - a|)); this module follows the version the training scripts
above construct (``Attloss()``, ``DGMMLoss(num_classes)``: sigma 1, no mixup, no k-NN term).
``DGMMLoss`` can also mix embeddings (Beta(2, 2), the mixed points labelled by the mode of their
3 nearest embeddings); the scripts leave it off, and so does ``structure_mixup=False``.

Departures, with their reasons:
- The reconstruction target. The authors paste each face on a COCO background and ask the
  attention image for the face before the paste (``x_org``); a line in ``Attloss`` that masks it
  with the face mask is overwritten. Our faces keep their own backgrounds, so the target is the
  face hull of the store times the image (the face on black): the masked line's target, and the
  guidance this family reads.
- The posteriors are a softmax over the classes present in the batch: the same values as
  ``exp(-d / 2 sigma^2)`` normalised, without the underflow to 0 that ``exp`` gives at large
  distances (where the authors' loss loses its gradient).
- Their PreActResNet pools its last stage with a fixed 4 x 4 window (32 x 32 inputs); ours pools
  globally, which is the same at that size and defined at the others.
- The training script's optimiser (Adam, lr 1e-4, 500 epochs, step decay) is a recipe; the
  encoder is trained from scratch (no download; ``--init`` loads weights).

``attention=False`` is the unguided twin: the same classifier and structure loss on the pooled
image itself.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fer_models.models.backbone import BUILTIN, check_backbone_options
from fer_models.models.registry import ModelOutput, register_model
from fer_models.models.timm_backbone import TimmPooled

RECONSTRUCTION_SCALE, RECONSTRUCTION_CLAMP = 10.0, 30.0  # Attloss: 10 x MSE, clamped at 30
MIXUP_ALPHA, MIXUP_NEIGHBOURS = 2.0, 3  # DGMMLoss(mix=True): Beta(2, 2), labels from 3 neighbours


def _conv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.ReLU())


def _conv_relu2(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(_conv_relu(in_channels, out_channels), _conv_relu(out_channels, out_channels))


class AttentionNet(nn.Module):
    """The authors' attention U-Net: ``(B, C, S, S) -> (B, 1, S, S)`` attention logits.

    width: channels of the first level (64 in the authors' code); levels w, 2w, 4w.
    """

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        self.down1, self.down2 = _conv_relu2(in_channels, width), _conv_relu2(width, 2 * width)
        self.center = _conv_relu2(2 * width, 4 * width)
        self.up2, self.up1 = _conv_relu2(6 * width, 2 * width), _conv_relu2(3 * width, width)
        self.final = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip1 = self.down1(x)
        skip2 = self.down2(F.max_pool2d(skip1, 2))
        x = self.center(F.max_pool2d(skip2, 2))
        x = self.up2(torch.cat([skip2, F.interpolate(x, size=skip2.shape[-2:], mode="bilinear")], 1))
        x = self.up1(torch.cat([skip1, F.interpolate(x, size=skip1.shape[-2:], mode="bilinear")], 1))
        attention: torch.Tensor = self.final(x)
        return attention


class ResidualBlock(nn.Module):
    """3x3 convolution, LeakyReLU 0.2, 3x3 convolution, plus the input (``_Residual_Block_SR``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1), nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual: torch.Tensor = self.conv2(F.leaky_relu(self.conv1(x), 0.2))
        return x + residual


class FeatureNet(nn.Module):
    """The authors' feature module: ``(B, C, S, S) -> (B, maps, S, S)``."""

    def __init__(self, in_channels: int, maps: int):
        super().__init__()
        self.conv_input = nn.Conv2d(in_channels, maps, 9, 1, 4)
        self.blocks = nn.Sequential(*(ResidualBlock(maps) for _ in range(4)))
        self.conv_mid = nn.Conv2d(maps, maps, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual: torch.Tensor = self.conv_input(x)
        features: torch.Tensor = self.conv_mid(self.blocks(residual))
        return features + residual


class PreActBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Conv2d(in_channels, channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = F.relu(self.bn1(x))
        shortcut: torch.Tensor = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """The authors' PreActResNet-18 body: ``(B, C, S, S) -> (B, 8w)`` pooled features of its last
    stage (3x3 stem, stages of w, 2w, 4w, 8w, no activation after the last block)."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        layers, previous = [], width
        for i, channels in enumerate((width, 2 * width, 4 * width, 8 * width)):
            layers += [PreActBlock(previous, channels, 1 if i == 0 else 2), PreActBlock(channels, channels, 1)]
            previous = channels
        self.layers = nn.Sequential(*layers)
        self.num_features = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps: torch.Tensor = self.layers(self.stem(x))
        return maps.mean(dim=(2, 3))


def reconstruction_loss(attention_image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``Attloss``: 10 x the mean squared error, clamped at 30.

    Args:
        attention_image, target: ``(B, C, S, S)``; the loss is computed in float32.
    """
    error = (target.float() - attention_image.float()).pow(2).mean()
    return RECONSTRUCTION_SCALE * error.clamp(max=RECONSTRUCTION_CLAMP)


def mix_embeddings(
    embedding: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``DGMMLoss``'s mixup: the batch, then each embedding mixed with a shuffled partner with one
    Beta(2, 2) weight, labelled by the most common label of its 3 nearest original embeddings.

    Args:
        embedding: ``(B, D)``. target: ``(B,) int64``.

    Returns:
        ``(2B, D)`` embeddings and ``(2B,)`` labels.
    """
    device = embedding.device
    weight = torch.distributions.Beta(
        torch.tensor(MIXUP_ALPHA, device=device), torch.tensor(MIXUP_ALPHA, device=device)
    ).sample()
    partner = torch.randperm(len(embedding), device=device, generator=generator)
    mixed = embedding * weight + embedding[partner] * (1 - weight)
    nearest = torch.cdist(mixed, embedding).topk(min(MIXUP_NEIGHBOURS, len(embedding)), largest=False).indices
    labels = target[nearest].mode(dim=1).values
    return torch.cat([embedding, mixed]), torch.cat([target, labels])


def gaussian_structure_loss(
    embedding: torch.Tensor, target: torch.Tensor, num_classes: int, sigma: float = 1.0
) -> torch.Tensor:
    """``DGMMLoss``: squared error between each sample's Gaussian posteriors over the batch's class
    means and its one-hot label, summed over the classes, averaged over the samples.

    Computed without reading any value back to the host (no ``unique``, no boolean indexing), so
    a CUDA step does not wait for the GPU: classes absent from the batch get posterior 0.

    Args:
        embedding: ``(B, D)``; the loss is computed in float32.
        target: ``(B,) int64`` class indices in ``[0, num_classes)``.
        num_classes: K.
        sigma: width of the Gaussians, in embedding units.

    Returns:
        A scalar in [0, 2]; 0 when one class fills the batch.
    """
    embedding = embedding.float()
    one_hot = (target.unsqueeze(1) == torch.arange(num_classes, device=target.device)).float()  # (B, K)
    counts = one_hot.sum(0)  # (K,)
    means = (one_hot.T @ embedding) / counts.clamp(min=1).unsqueeze(1)  # (K, D); absent classes 0
    distance = torch.cdist(embedding, means).pow(2)  # (B, K)
    posterior = torch.softmax((-distance / (2 * sigma**2)).masked_fill(counts == 0, float("-inf")), dim=1)
    return (posterior - one_hot).pow(2).sum(1).mean()


@register_model(
    "feratt",
    reads=lambda options: ("mask_hull",) if options["attention"] else (),
    returns=("embedding", "attention", "attention_image"),
    epochs=30,
    batch_size=32,
    lr=1e-3,
)
class FERAtt(nn.Module):
    """``image (B, C, S, S)`` (+ ``mask_hull (B, 1, H, H)`` in training) -> ``logits (B, K)``,
    ``embedding (B, E)``, and with attention ``attention (B, 1, S, S)`` (sigmoid(A)) and
    ``attention_image (B, C, S, S)``; in training ``losses`` ``reconstruction`` and ``structure``.

    width: first-stage channels of the classifier (64 in the authors' code). maps: channels of
    the feature module (32). attention_width: first level of the attention U-Net (64).
    embedding: the embedding's size (1000 in the training script). structure_mixup: DGMMLoss's
    mixup (off in the authors' scripts).
    backbone: the classifier: ``builtin`` (PreActResNet-18 of ``width``) or a timm model name, its
    pooled features (optionally from the local file ``backbone_weights``; :mod:`.timm_backbone`).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 7,
        image_size: int = 112,
        width: int = 64,
        maps: int = 32,
        attention_width: int = 64,
        embedding: int = 1000,
        attention: bool = True,
        reconstruction_weight: float = 1.0,
        structure_weight: float = 1.0,
        structure_sigma: float = 1.0,
        structure_mixup: bool = False,
        backbone: str = BUILTIN,
        backbone_weights: str = "",
    ):
        super().__init__()
        check_backbone_options(backbone, backbone_weights, width=width != 64)
        self.use_attention = attention
        if attention:
            self.attention = AttentionNet(in_channels, attention_width)
            self.features = FeatureNet(in_channels, maps)
            self.reconstruct = nn.Sequential(
                _conv_relu(maps, maps // 2), _conv_relu(maps // 2, maps // 4), nn.Conv2d(maps // 4, in_channels, 1)
            )
        self.pool = max(1, image_size // 32)
        pooled_size = image_size // self.pool
        self.classifier: PreActResNet18 | TimmPooled = (
            PreActResNet18(in_channels, width)
            if backbone == BUILTIN
            else TimmPooled(backbone, in_channels, pooled_size, backbone_weights)
        )
        self.embed = nn.Linear(self.classifier.num_features, embedding)
        self.head = nn.Linear(embedding, num_classes)
        self.reconstruction_weight, self.structure_weight = reconstruction_weight, structure_weight
        self.structure_sigma, self.structure_mixup = structure_sigma, structure_mixup

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        image, losses = batch["image"], dict[str, torch.Tensor]()
        x, attention = image, None
        if self.use_attention:
            attention = torch.sigmoid(self.attention(image))
            x = self.reconstruct(self.features(image) * attention)
            if self.training and self.reconstruction_weight > 0 and "mask_hull" in batch:
                hull = F.interpolate(batch["mask_hull"], size=image.shape[-2:], mode="bilinear", align_corners=False)
                losses["reconstruction"] = self.reconstruction_weight * reconstruction_loss(x, image * hull)
        pooled = F.avg_pool2d(x, self.pool) if self.pool > 1 else x
        embedding = self.embed(self.classifier(pooled))
        output: ModelOutput = {"logits": self.head(embedding), "embedding": embedding}
        if attention is not None:
            output["attention"], output["attention_image"] = attention, x
        if self.training and self.structure_weight > 0 and "target" in batch:
            target = batch["target"] if batch["target"].dim() == 1 else batch["target"].argmax(1)
            points, labels = mix_embeddings(embedding, target) if self.structure_mixup else (embedding, target)
            losses["structure"] = self.structure_weight * gaussian_structure_loss(
                points, labels, self.head.out_features, self.structure_sigma
            )
        if losses:
            output["losses"] = losses
        return output
