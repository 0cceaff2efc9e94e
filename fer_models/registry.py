"""Model registry: ``register_model`` / ``create_model`` / ``list_models``.

Every model takes a batch dict (at least ``image``: ``(B, C, S, S) float32`` in [0, 1]) and returns
a dict with ``logits`` ``(B, K)`` plus any maps it exposes. ``requires`` names the store arrays a
model reads, so a run can fail at start when the store lacks one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]
    requires: tuple[str, ...]


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, requires: tuple[str, ...] = ("image",)):
    """Class or function decorator adding a model constructor under ``name``."""

    def decorate(build):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelEntry(name, build, requires)
        return build

    return decorate


def get_model_entry(name: str) -> ModelEntry:
    _import_model_files()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}") from None


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; ``kwargs`` go to its constructor (``in_channels``, ``num_classes``...)."""
    return get_model_entry(name).build(**kwargs)


def list_models() -> list[str]:
    _import_model_files()
    return sorted(_REGISTRY)


def _import_model_files() -> None:
    from fer_models import cnn  # noqa: F401 - registers on import
