"""Privileged attribution loss (Bonnard et al., "Privileged attribution constrained deep networks
for facial expression recognition", ICPR 2022).

During training, the attribution map of a backbone layer is computed with a differentiable
backward pass: the gradient (or gradient times activation) of the score that explains the model's
decision, the training label's logit (``explained=label``, the paper's attribution of the class
being learnt; ``predicted`` explains the arg-max class instead), with respect to that layer's
output. It is standardised and cross-correlated with the store's landmark heatmap resized to that
layer. The loss is minus that correlation, times lambda, added to cross-entropy. Inference is the
plain backbone (ResNet-18 here), so the heatmap is needed only in training.

Why the label's score and not the sum of all logits: softmax cross-entropy ignores a shift common
to every logit, so the summed logits are the one direction the decision does not use. A constraint
on their attribution can be met while the class evidence attends anywhere. With soft targets
(label distributions, mixup) the explained score is the target-weighted sum of the logits.

Channel strategies: ``all`` correlates every channel's attribution with the heatmap and averages;
``mean`` averages the attribution over channels first; ``half`` uses the first half of the
channels only (the rest stay free). Departures: no code of the authors is public, so the defaults
that the paper does not fix here are ours: layer 3, lambda 1, gradient x activation, all
channels; the backbone trains from scratch unless ``--init`` or ``backbone_weights`` loads
weights (the paper fine-tuned pretrained networks).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fer_models.models.backbone import BUILTIN, backbone_network
from fer_models.models.registry import ModelOutput, register_model
from pipeline.errors import ConfigError

STRATEGIES = ("all", "mean", "half")
ATTRIBUTIONS = ("gradient_x_activation", "gradient")
EXPLAINED = ("label", "predicted")


def explained_score(logits: torch.Tensor, target: torch.Tensor | None, explained: str) -> torch.Tensor:
    """The summed score whose attribution PAL constrains.

    Args:
        logits: ``(B, K)``.
        target: ``(B,) int64`` labels or ``(B, K)`` label distributions; needed for ``label``.
        explained: ``label`` (each sample's training label) or ``predicted`` (its arg-max class).

    Returns:
        A scalar: the sum over the batch of each sample's explained logit (soft targets weight
        the logits), so its gradient is each sample's own attribution.
    """
    if explained == "predicted":
        return logits.gather(1, logits.argmax(1, keepdim=True)).sum()
    if target is None:
        raise ConfigError("pal explains the training label's score: the training batch has no target")
    if target.dim() == 2:
        return (logits * target.to(logits.dtype)).sum()
    return logits.gather(1, target.view(-1, 1)).sum()


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation over the last two (spatial) axes."""
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (x - mean) / (std + 1e-6)


def privileged_attribution_loss(
    attribution: torch.Tensor, heatmap: torch.Tensor, strategy: str = "all"
) -> torch.Tensor:
    """Minus the mean cross-correlation of standardised attribution and heatmap.

    Args:
        attribution: ``(B, C, h, w)`` attribution of a layer.
        heatmap: ``(B, 1, H, H)`` landmark heatmap (any scale), resized to h x w by area averaging.
        strategy: ``all``, ``mean`` or ``half`` (see the module docstring).

    Returns:
        A scalar in [-1, 1]: -1 when every used channel matches the heatmap up to scale and offset.
    """
    if strategy == "mean":
        attribution = attribution.mean(1, keepdim=True)
    elif strategy == "half":
        attribution = attribution[:, : max(1, attribution.shape[1] // 2)]
    target = _standardise(F.interpolate(heatmap.float(), size=attribution.shape[-2:], mode="area"))
    correlation = (_standardise(attribution.float()) * target).mean(dim=(-2, -1))  # (B, C')
    return -correlation.mean()


@register_model(
    "pal",
    reads=("heatmap",),
    returns=("features", "attribution"),
    choices={"strategy": STRATEGIES, "attribution": ATTRIBUTIONS, "explained": EXPLAINED},
    ranges={"layer": (1, 4)},
    epochs=30,
    batch_size=64,
    lr=1e-3,
)
class PrivilegedAttributionResNet(nn.Module):
    """A backbone (ResNet-18, or a timm model with ``backbone=NAME``: :mod:`.backbone`) trained with
    the privileged attribution loss against ``heatmap`` ``(B, 1, H, H)``; ``layer`` is its stage 1-4.

    Returns ``logits (B, K)``, ``features``, and in training ``attribution (B, C, h, w)`` and
    ``losses["privileged_attribution"]`` (lambda times the loss). Training batches carry
    ``target``: the label whose score is explained.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 7,
        image_size: int = 112,
        width: int = 64,
        layer: int = 3,
        weight: float = 1.0,
        strategy: str = "all",
        attribution: str = "gradient_x_activation",
        explained: str = "label",
        backbone: str = BUILTIN,
        backbone_weights: str = "",
    ):
        super().__init__()
        self.backbone = backbone_network(
            backbone,
            backbone_weights,
            in_channels=in_channels,
            num_classes=num_classes,
            image_size=image_size,
            width=width,
        )
        self.layer, self.weight, self.strategy, self.attribution = layer, weight, strategy, attribution
        self.explained = explained

    def forward(self, batch: dict[str, torch.Tensor]) -> ModelOutput:
        stages = self.backbone.stage_outputs(batch["image"])
        output = self.backbone.classify(stages[-1])
        if self.training and self.weight > 0 and torch.is_grad_enabled():
            activation = stages[self.layer - 1]
            score = explained_score(output["logits"], batch.get("target"), self.explained)
            gradient = torch.autograd.grad(score, activation, create_graph=True)[0]
            attribution = gradient * activation if self.attribution == "gradient_x_activation" else gradient
            loss = privileged_attribution_loss(attribution, batch["heatmap"], self.strategy)
            output["attribution"] = attribution
            output["losses"] = {"privileged_attribution": self.weight * loss}
        return output
