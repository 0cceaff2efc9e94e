"""Model registry: ``register_model`` / ``create_model`` / ``list_models``.

Every model is an ``nn.Module`` built as ``build(in_channels, num_classes, image_size, **options)``;
it takes a batch dict (``image``: ``(B, C, S, S) float32`` in [0, 1], plus the store arrays it
names in its ``inputs`` attribute, guidance maps as float in [0, 1]) and returns a
:class:`ModelOutput`: ``logits`` ``(B, K)`` plus any maps it exposes and its own loss terms. ``inputs`` lets a run check the store before it
starts. ``defaults`` are the model's training defaults (``epochs``, ``batch_size``, and the
``recipe`` preset of :mod:`fer_models.training.recipe` it trains with).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Required, TypedDict

import torch
from torch import nn

from pipeline.errors import ConfigError


class ModelOutput(TypedDict, total=False):
    """What a model's ``forward`` returns: ``logits`` always; the rest where the family has them
    (``B`` samples, ``K`` classes)."""

    logits: Required[torch.Tensor]  # (B, K)
    losses: dict[str, torch.Tensor]  # the model's own loss terms, weighted, scalar (training only)
    features: torch.Tensor  # resnet (and pal): (B, 8w) pooled features of the last stage
    embedding: torch.Tensor  # feratt: (B, D) before the head
    attention: torch.Tensor  # feratt: (B, 1, S, S) the attention map, in (0, 1)
    attention_image: torch.Tensor  # feratt: (B, C, S, S) the face the classifier sees
    attribution: torch.Tensor  # pal: (B, C', h, w) attribution maps of the chosen stage (training only)
    theta: torch.Tensor  # stn, guided-stn: (B, 2, 3) affine transforms, normalised coordinates
    warped: torch.Tensor  # stn, guided-stn: (B, C, S, S) the transformed input
    region_weights: torch.Tensor  # local-nonlocal: (B, R) weight of each region
    local_features: torch.Tensor  # local-nonlocal: (B, R, D) per-region features
    keypoint_features: torch.Tensor  # keypoint: (B, 68, D) features sampled at the landmarks


def model_inputs(model: nn.Module) -> tuple[str, ...]:
    """The store arrays ``model`` reads besides the image (its ``inputs`` attribute)."""
    inputs = getattr(model, "inputs", None)
    if not isinstance(inputs, tuple):
        raise TypeError(f"{type(model).__name__} does not name the arrays it reads (a tuple attribute `inputs`)")
    return inputs


TRAINING_DEFAULTS: dict[str, Any] = {"epochs": 20, "batch_size": 64, "recipe": "legacy"}

# Options naming a file of initial weights: read when a run starts, not when a checkpoint's weights
# replace them (evaluation, resuming).
WEIGHT_FILE_OPTIONS = ("backbone_weights",)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        """The model's own options (constructor keywords beyond the input and class counts) with
        their defaults."""
        fixed = {"in_channels", "num_classes", "image_size"}
        return {
            name: parameter.default
            for name, parameter in inspect.signature(self.build).parameters.items()
            if name not in fixed and parameter.default is not inspect.Parameter.empty
        }


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, **defaults: Any):
    """Class or function decorator adding a model constructor under ``name``; ``defaults``
    override :data:`TRAINING_DEFAULTS` for it."""

    def decorate(build):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, build, {**TRAINING_DEFAULTS, **defaults})
        return build

    return decorate


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; ``kwargs`` go to its constructor (``in_channels``,
    ``num_classes``, ``image_size`` and its options).

    Raises:
        ConfigError: an unknown model or option, or an option value the model refuses.
    """
    entry = get_model_entry(name)
    unknown = set(kwargs) - set(entry.options()) - {"in_channels", "num_classes", "image_size"}
    if unknown:
        known = ", ".join(f"{k}={v!r}" for k, v in entry.options().items()) or "none"
        raise ConfigError(f"model {name!r} has no option {sorted(unknown)[0]!r}; its options: {known}")
    return entry.build(**kwargs)


def list_models() -> list[str]:
    return sorted(_REGISTRY)
