"""The backbone of the ResNet-based families (``resnet18``, ``pal``, ``keypoint``), and the
``resnet18`` family itself: a backbone with a linear head on its pooled last stage.

``backbone=builtin`` (the default) is the project's own ResNet-18 (:mod:`.resnet`), shaped by
``width`` and ``stem``; ``ir18``/``ir34``/``ir50``/``ir100`` are insightface's face-recognition
networks (:mod:`.ir_backbone`); any other value is a timm model name (:mod:`.timm_backbone`).
The last two may start from a local weights file (``backbone_weights``) and normalise their
input as their weights expect. All give stages 1-4 of feature maps through ``stage_outputs`` and
logits through ``classify``.
"""

from __future__ import annotations

from torch import nn

from fer_models.models.ir_backbone import IR_DEPTHS, IRStages
from fer_models.models.registry import register_model
from fer_models.models.resnet import STEMS, ResNet18
from fer_models.models.timm_backbone import TimmStages
from pipeline.errors import ConfigError

BUILTIN = "builtin"


def check_backbone_options(backbone: str, weights: str, **builtin_option_set: bool) -> None:
    """Options that apply to one kind of backbone only.

    Args:
        backbone: ``builtin`` or a timm model name.
        weights: the ``backbone_weights`` option.
        builtin_option_set: for each option of the built-in network (``width=True``), whether it
            was set away from its default.

    Raises:
        ConfigError: ``backbone_weights`` with the built-in backbone (``--init`` loads those), or a
            built-in option set with a timm backbone.
    """
    if backbone == BUILTIN and weights:
        raise ConfigError(
            f"backbone_weights is read by IR and timm backbones; start the built-in network with --init {weights}"
        )
    changed = [name for name, is_set in builtin_option_set.items() if is_set]
    if backbone != BUILTIN and changed:
        raise ConfigError(
            f"{' and '.join(changed)} shape the built-in network (backbone={BUILTIN}); backbone={backbone} has its own: "
            "drop them, or choose a backbone of the size you want"
        )


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``model``'s backbones, what fine-tuning starts from pretrained weights:
    the submodules each module names in its ``backbone_parts`` attribute (the bodies of IR and
    timm networks, the built-in ResNet-18's stem and stages), not the heads, attention,
    projections or other parts a family adds."""
    found: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name in getattr(module, "backbone_parts", ()):
            found.update((id(parameter), parameter) for parameter in getattr(module, name).parameters())
    return list(found.values())


def backbone_network(
    backbone: str,
    weights: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    width: int = 64,
    stem: str = "auto",
    until: int = 4,
    head: bool = True,
) -> ResNet18 | IRStages | TimmStages:
    """The built-in ResNet-18 (always whole, with its head), or an IR or timm network as stages
    1..``until`` (with a head on the last when ``head``).

    Args:
        backbone: ``builtin``, ``ir18``..``ir100``, or a timm model name.
        weights: a local weights file for an IR or timm backbone, or "".
        in_channels, num_classes, image_size: the store's C, K and S.
        width, stem: the built-in network's (refused away from their defaults with timm).
        until: the deepest stage the caller reads; a timm backbone builds no later one.
        head: whether the caller classifies the last stage with the backbone's head.

    Raises:
        ConfigError: see :func:`check_backbone_options` and
            :func:`~fer_models.models.timm_backbone.create_timm_model`.
    """
    check_backbone_options(backbone, weights, width=width != 64, stem=stem != "auto")
    if backbone == BUILTIN:
        return ResNet18(in_channels, num_classes, image_size, width, stem)
    if backbone in IR_DEPTHS:
        return IRStages(backbone, in_channels, num_classes if head else 0, weights, until)
    return TimmStages(backbone, in_channels, num_classes if head else 0, image_size, weights, until)


@register_model("resnet18", returns=("features",), choices={"stem": STEMS}, epochs=30, batch_size=64, lr=1e-3)
def resnet18(
    in_channels: int = 3,
    num_classes: int = 7,
    image_size: int = 112,
    width: int = 64,
    stem: str = "auto",
    backbone: str = BUILTIN,
    backbone_weights: str = "",
) -> nn.Module:
    """``(B, C, S, S) float32 -> logits (B, K)`` and ``features (B, D)``, the pooled last stage.

    width: channels of the built-in network's first stage (64 in the paper; stages w, 2w, 4w, 8w).
    stem: the built-in network's ``auto`` (small stem for S <= 64), ``small`` or ``imagenet``.
    backbone: ``builtin``, ``ir50`` (insightface's face network; ``ir18``, ``ir34``, ``ir100``) or a
        timm model name (``resnet50``, ``convnext_nano``, ...).
    backbone_weights: a local weights file for an IR or timm backbone.
    """
    return backbone_network(
        backbone,
        backbone_weights,
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        width=width,
        stem=stem,
    )
