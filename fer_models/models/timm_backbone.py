"""timm models as backbones of the ResNet-based families (``--option backbone=NAME``).

``resnet18``, ``pal`` and ``keypoint`` read a backbone as four stages of feature maps; here a timm
model's last four feature levels (timm's ``features_only`` interface) are those stages, so stage 4
is the deepest map (usually 1/32 of the face's side) and stage 3 the one before it (1/16).
``feratt``'s classifier is a timm model's pooled features (``num_classes=0``).

Pretrained weights come from a local file only (``backbone_weights=PATH``, a ``.safetensors``,
``.pth`` or ``.bin`` state dict in timm's layout, as timm's ``state_dict()`` and the hub's
``timm/`` repositories hold it), handed to timm through ``pretrained_cfg_overlay``: timm adapts
the first convolution to the store's channel count (a grey store sums the RGB filters) and drops
the classifier. Nothing is downloaded. A file that lacks any of the model's tensors is refused
(timm would load it partly, without a word). The file is read when a run starts,
not when a checkpoint is evaluated or resumed (its weights are then the checkpoint's).

Each backbone normalises its [0, 1] input as its pretrained weights expect (timm's
``pretrained_cfg`` mean and std: :mod:`.input_normalisation`), whether or not weights are loaded.

ImageNet backbones reduce a face 32 times: a 48 x 48 FER-2013 face ends as a 2 x 2 map. Build the
store at a larger ``--size`` (112 or more) for them to see detail.
"""

from __future__ import annotations

import difflib
import os
from types import ModuleType
from typing import Any

import torch
from torch import nn

from fer_models.models.input_normalisation import timm_normalisation
from fer_models.models.resnet import PretrainedStages
from fer_models.models.weight_files import check_inflation
from pipeline.errors import ConfigError

STAGES = 4


def import_timm() -> ModuleType:
    """timm, or a ConfigError saying how to install it (timm imports torchvision, which must be
    the build made for the installed torch)."""
    try:
        import timm
    except Exception as error:  # noqa: BLE001  # ImportError, or torchvision's RuntimeError for another torch
        raise ConfigError(
            f"a timm backbone needs timm and a torchvision built for torch {torch.__version__} ({error}); "
            "`make install` installs the pair the Makefile's TORCH_SPEC names"
        ) from None
    return timm


def create_timm_model(name: str, in_channels: int, weights: str = "", **kwargs: Any) -> Any:
    """``timm.create_model(name, in_chans=in_channels, **kwargs)``, pretrained from the local file
    ``weights`` where one is given: an ``nn.Module`` with timm's attributes (``feature_info``,
    ``num_features``), typed ``Any`` for them.

    Raises:
        ConfigError: an unknown model name (with close names), a weights file that is missing or
            does not fit the model, or options the model does not support.
    """
    timm = import_timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.7)
        hint = (
            f"; close names: {', '.join(close)}"
            if close
            else "; `python -c 'import timm; print(timm.list_models())'` lists them"
        )
        raise ConfigError(f"backbone {name!r} is not a timm model{hint}")
    if weights:
        state = read_weights(timm, weights)
        check_weights_fit(timm, name, in_channels, state, weights)
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"state_dict": state})
    try:
        return timm.create_model(name, in_chans=in_channels, **kwargs)
    except Exception as error:  # noqa: BLE001  # timm raises RuntimeError, KeyError, AssertionError ...
        what = f" with the weights in {weights}" if weights else ""
        raise ConfigError(f"timm cannot build backbone {name!r}{what}: {type(error).__name__}: {error}") from None


def read_weights(timm: ModuleType, path: str) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (safetensors, or a torch file: a state dict or a checkpoint
    holding one under ``state_dict``/``model``), read by timm's own loader.

    Raises:
        ConfigError: not a file, or not readable as weights.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"backbone_weights {path!r} is not a file")
    check_inflation(path, f"backbone_weights {path}")
    try:
        state: dict[str, torch.Tensor] = timm.models.load_state_dict(path)
    except Exception as error:  # noqa: BLE001  # safetensors and torch.load raise many kinds
        raise ConfigError(
            f"backbone_weights {path}: cannot read it as weights ({type(error).__name__}: {error})"
        ) from None
    return state


def check_weights_fit(timm: ModuleType, name: str, in_channels: int, state: dict[str, torch.Tensor], path: str) -> None:
    """Every tensor of timm's ``name`` (classifier aside) must be in ``state`` by name.

    timm loads pretrained weights into a headless or feature model non-strictly, so a file of
    another model would otherwise leave the backbone at its random initialisation, silently.
    Shapes are timm's to check (it adapts the first convolution to ``in_channels``).

    Raises:
        ConfigError: tensors missing, naming the first few.
    """
    with torch.device("meta"):  # names only: no memory, no initialisation
        reference = timm.create_model(name, num_classes=0, in_chans=in_channels)
    expected = list(reference.state_dict())
    missing = [key for key in expected if key not in state]
    if missing:
        raise ConfigError(
            f"backbone_weights {path} does not fit timm's {name}: {len(missing)} of its {len(expected)} tensors are "
            f"missing ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}); give a {name} state dict "
            "in timm's layout (what its state_dict() holds)"
        )


def check_face_size(module: nn.Module, name: str, in_channels: int, image_size: int) -> None:
    """Run ``module`` once on a blank ``(1, in_channels, S, S)`` face, in eval mode and without
    gradients (no state changes, no random draws), so that a backbone that cannot take the
    store's faces is refused before training starts.

    Raises:
        ConfigError: the backbone fails on S x S inputs (fixed-size models such as ViTs).
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, in_channels, image_size, image_size))
    except Exception as error:  # noqa: BLE001  # whatever the model raises on a size it does not take
        raise ConfigError(
            f"backbone {name!r} does not take {image_size} x {image_size} faces ({type(error).__name__}: {error}); "
            "choose a convolutional backbone, or a store of another --size"
        ) from None
    finally:
        module.train(was_training)


class TimmStages(PretrainedStages):
    """A timm model's last ``until`` of its last four feature levels as stages 1..``until``, with a
    linear head on the pooled last stage: the interface of :class:`~fer_models.models.resnet.ResNet18`.

    ``(B, C, S, S) float32 -> logits (B, K)`` and ``features (B, D)``, D the last stage's channels;
    stage i's map is ``(B, channels[i-1], S / reductions[i-1], ...)`` (rounded up by padding).

    Args:
        name: a timm model name (``resnet50``, ``convnext_nano``, ...) with ``features_only`` support.
        in_channels, num_classes, image_size: the store's C, K and S; ``num_classes=0``: no head.
        weights: a local weights file in timm's layout, or "" (random initialisation).
        until: the deepest stage computed (1-4); later ones are not built.
    """

    def __init__(
        self, name: str, in_channels: int, num_classes: int, image_size: int, weights: str = "", until: int = STAGES
    ):
        super().__init__()
        self.normalise = timm_normalisation(name, in_channels)
        self.body = create_timm_model(
            name, in_channels, weights, features_only=True, out_indices=tuple(range(-STAGES, until - STAGES))
        )
        self.channels: tuple[int, ...] = tuple(self.body.feature_info.channels())
        self.reductions: tuple[int, ...] = tuple(self.body.feature_info.reduction())
        self.head = nn.Linear(self.channels[-1], num_classes) if num_classes else None
        check_face_size(self.body, name, in_channels, image_size)


class TimmPooled(nn.Module):
    """A timm model's pooled features: ``(B, C, S, S) float32`` in [0, 1] ``-> (B, num_features)``."""

    backbone_parts = ("body",)  # fine-tuning starts here (backbone_parameters)

    def __init__(self, name: str, in_channels: int, image_size: int, weights: str = ""):
        super().__init__()
        self.normalise = timm_normalisation(name, in_channels)
        self.body = create_timm_model(name, in_channels, weights, num_classes=0)
        self.num_features = int(self.body.num_features)
        check_face_size(self.body, name, in_channels, image_size)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.body(self.normalise(image))
        return features
