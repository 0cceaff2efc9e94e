"""Model registry: ``register_model`` / ``create_model`` / ``list_models``.

Every model is an ``nn.Module`` built as ``build(in_channels, num_classes, image_size, **options)``;
it takes a batch dict (``image``: ``(B, C, S, S) float32`` in [0, 1], plus the store arrays it
reads, guidance maps as float in [0, 1]) and returns a :class:`ModelOutput`: ``logits`` ``(B, K)``
plus any maps it exposes and its own loss terms.

Each model declares at registration (:class:`ModelEntry`) what it reads (``reads``: the store
arrays beside the image, a tuple or a function of its resolved options), what it returns beside
the logits (``returns``), the values its options may take (``choices``, ``ranges``) and its
training defaults (``epochs``, ``batch_size``, and the ``recipe`` preset of
:mod:`fer_models.training.recipe` it trains with). :func:`create_model` is the one builder, as
timm's ``build_model_with_cfg``: it checks the options against the declaration with the same
messages for every family, builds, and gives the model its ``inputs``, so a run can check the
store before it builds anything (:func:`model_reads`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Required, TypedDict, TypeVar

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
    """The store arrays ``model`` reads, the image first (its ``inputs``, which :func:`create_model`
    gives it)."""
    inputs = getattr(model, "inputs", None)
    if not isinstance(inputs, tuple):
        raise TypeError(f"{type(model).__name__} was not built by create_model: it has no tuple `inputs`")
    return inputs


SIZES = ("in_channels", "num_classes", "image_size")  # what the store fixes, beside the options
TRAINING_DEFAULTS: dict[str, Any] = {"epochs": 20, "batch_size": 64, "recipe": "legacy"}

# Options naming a file of initial weights: read when a run starts, not when a checkpoint's weights
# replace them (evaluation, resuming).
WEIGHT_FILE_OPTIONS = ("backbone_weights",)


Reads = tuple[str, ...] | Callable[[dict[str, Any]], tuple[str, ...]]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its constructor and its declaration (see the module docstring)."""

    name: str
    build: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    reads: Reads = ()
    returns: tuple[str, ...] = ()
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def resolved_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The model's options with ``options`` in place of their defaults."""
        return {**self.options(), **options}

    def read_arrays(self, options: dict[str, Any]) -> tuple[str, ...]:
        """The store arrays the model reads beside the image, for ``options`` (defaults elsewhere)."""
        reads = self.reads(self.resolved_options(options)) if callable(self.reads) else self.reads
        return tuple(reads)

    def check_options(self, options: dict[str, Any]) -> None:
        """Raises ConfigError for an option outside its declared choices or range."""
        for option, allowed in self.choices.items():
            if option in options and options[option] not in allowed:
                raise ConfigError(
                    f"{self.name} {option} must be one of {', '.join(map(str, allowed))}; got {options[option]!r}"
                )
        for option, (low, high) in self.ranges.items():
            if option in options and not low <= options[option] <= high:
                raise ConfigError(f"{self.name} {option} must be {low:g} to {high:g}, got {options[option]}")

    def options(self) -> dict[str, Any]:
        """The model's own options (constructor keywords beyond the input and class counts) with
        their defaults."""
        return {
            name: parameter.default
            for name, parameter in inspect.signature(self.build).parameters.items()
            if name not in SIZES and parameter.default is not inspect.Parameter.empty
        }


_REGISTRY: dict[str, ModelEntry] = {}
# A model constructor: a module class or a function building one.
Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


def register_model(
    name: str,
    *,
    reads: Reads = (),
    returns: tuple[str, ...] = (),
    choices: dict[str, tuple[Any, ...]] | None = None,
    ranges: dict[str, tuple[float, float]] | None = None,
    **defaults: Any,
) -> Callable[[Builder], Builder]:
    """Class or function decorator adding a model constructor under ``name`` with its declaration
    (:class:`ModelEntry`); ``defaults`` override :data:`TRAINING_DEFAULTS` for it."""

    def decorate(build: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        entry = ModelEntry(name, build, {**TRAINING_DEFAULTS, **defaults}, reads, returns, choices or {}, ranges or {})
        unknown = (set(entry.choices) | set(entry.ranges)) - set(entry.options())
        if unknown:
            raise ValueError(f"model {name!r} declares values for options it does not have: {sorted(unknown)}")
        _REGISTRY[name] = entry
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
    inputs = model_reads(name, {key: value for key, value in kwargs.items() if key not in SIZES})
    model = entry.build(**kwargs)
    model.inputs = inputs  # type: ignore[assignment]  # nn.Module types its attributes as tensors or modules
    return model


def model_reads(name: str, options: dict[str, Any]) -> tuple[str, ...]:
    """The store arrays model ``name`` reads with ``options``, the image first, without building it.

    Raises:
        ConfigError: an unknown model or option, or an option value outside its declaration.
    """
    entry = get_model_entry(name)
    unknown = set(options) - set(entry.options())
    if unknown:
        known = ", ".join(f"{k}={v!r}" for k, v in entry.options().items()) or "none"
        raise ConfigError(f"model {name!r} has no option {sorted(unknown)[0]!r}; its options: {known}")
    entry.check_options(options)
    return ("image", *entry.read_arrays(options))


def list_models() -> list[str]:
    return sorted(_REGISTRY)
