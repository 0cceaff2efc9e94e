"""Training recipes: the optimiser, its schedule and regularisation, as configuration.

A :class:`Recipe` is everything about how a model is optimised beside its epochs and batch size.
:data:`RECIPES` names the presets ``fer-train --recipe`` picks; each registered model names its
own default (the registry's ``recipe``); ``--optimizer``, ``--weight-decay`` and the other recipe
options override single settings. The resolved recipe is recorded in ``config.json`` and a resumed
run must have the same.

The learning rate at each optimiser step is a function of the step alone
(:meth:`Recipe.lr_factor`), so a run resumed from a checkpoint continues its schedule exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")
ONECYCLE_RISE = 0.3  # the share of the steps a one-cycle schedule spends rising to the peak


@dataclass(frozen=True)
class Recipe:
    """How a model is optimised.

    lr: the peak learning rate. optimizer: ``adam``, ``adamw`` (decoupled weight decay) or ``sgd``
    (Nesterov momentum ``momentum``). weight_decay: applied to weights only, never to biases and
    normalisation parameters (tensors of one dimension). lr_schedule: ``constant``, ``cosine`` (to 0
    at the last step) or ``onecycle`` (a straight rise over the first 30% of the steps, then a
    straight fall to 0); ``warmup_epochs`` of linear rise come first for ``constant`` and
    ``cosine``. label_smoothing: the share of each target spread over all classes.
    clip_grad_norm: the largest gradient norm (0: no clipping). ema_decay: the decay of an
    exponential moving average of the weights, which is then what is validated, selected,
    checkpointed and tested (0: none). backbone_lr_scale: the backbone's learning rate as a share
    of the rest's (:func:`~fer_models.models.backbone.backbone_parameters`: a pretrained body
    learns slower than the new head when fine-tuned).
    """

    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    clip_grad_norm: float = 0.0
    ema_decay: float = 0.0
    backbone_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"--lr-schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be above 0, got {self.lr}")
        checks = (
            ("--momentum", self.momentum, 0, 1),
            ("--weight-decay", self.weight_decay, 0, 1),
            ("--label-smoothing", self.label_smoothing, 0, 0.5),
            ("--ema-decay", self.ema_decay, 0, 0.99999),
            ("--backbone-lr-scale", self.backbone_lr_scale, 0, 1),
        )
        for option, value, low, high in checks:
            if not low <= value <= high:
                raise ConfigError(f"{option} must be between {low} and {high}, got {value}")
        if self.warmup_epochs < 0 or self.clip_grad_norm < 0:
            raise ConfigError("--warmup-epochs and --clip-grad-norm must be 0 or more")

    def lr_factor(self, step: int, steps_per_epoch: int, epochs: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based) as a share of :attr:`lr`, for a
        run of ``epochs`` epochs of ``steps_per_epoch`` steps."""
        total = max(1, steps_per_epoch * epochs)
        if self.lr_schedule == "onecycle":
            peak = max(1, round(ONECYCLE_RISE * total))
            return (step + 1) / peak if step < peak else max(0.0, (total - step) / max(1, total - peak))
        warmup = round(self.warmup_epochs * steps_per_epoch)
        if step < warmup:
            return (step + 1) / warmup
        if self.lr_schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    def optimizer_for(
        self, model: torch.nn.Module, backbone: Iterable[torch.nn.Parameter] = ()
    ) -> torch.optim.Optimizer:
        """The optimiser over ``model``'s parameters, weight decay only on those of two or more
        dimensions (weights; not biases or normalisation scales); the ``backbone`` parameters in
        groups of their own at ``backbone_lr_scale`` (each group's ``lr_scale``) when it is not 1."""
        trained = [p for p in model.parameters() if p.requires_grad]
        slow = {id(p) for p in backbone} if self.backbone_lr_scale != 1 else set()
        groups: list[dict[str, Any]] = []
        for scale, members in (
            (1.0, [p for p in trained if id(p) not in slow]),
            (self.backbone_lr_scale, [p for p in trained if id(p) in slow]),
        ):
            if not members:
                continue
            if self.weight_decay > 0:  # decay on weights only
                groups.append(
                    {"params": [p for p in members if p.ndim > 1], "weight_decay": self.weight_decay, "lr_scale": scale}
                )
                groups.append({"params": [p for p in members if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": scale})
            else:
                groups.append({"params": members, "weight_decay": 0.0, "lr_scale": scale})
        if self.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.lr, momentum=self.momentum, nesterov=self.momentum > 0)
        if self.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=self.lr)
        return torch.optim.Adam(groups, lr=self.lr)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The presets --recipe picks. legacy: what fer-train did before recipes existed (Adam at a
# constant rate, nothing else). The others follow the field's practice for small-image
# classification (docs/training.md): decoupled or L2 weight decay off the norms and biases, a
# short warmup, a cosine or one-cycle schedule, label smoothing 0.1.
RECIPES: dict[str, Recipe] = {
    "legacy": Recipe(),
    "adamw-cosine": Recipe(
        lr=2e-3, optimizer="adamw", weight_decay=0.05, lr_schedule="cosine", warmup_epochs=1, label_smoothing=0.1
    ),
    "sgd-cosine": Recipe(
        lr=0.05,
        optimizer="sgd",
        momentum=0.9,
        weight_decay=5e-4,
        lr_schedule="cosine",
        warmup_epochs=1,
        label_smoothing=0.1,
    ),
    "sgd-onecycle": Recipe(
        lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=5e-4, lr_schedule="onecycle", label_smoothing=0.1
    ),
    # Fine-tuning a pretrained backbone (--init, backbone_weights): a low peak rate after two epochs
    # of warmup, cosine decay, and the backbone at a tenth of the head's rate.
    "fine-tune": Recipe(
        lr=3e-4,
        optimizer="adamw",
        weight_decay=0.05,
        lr_schedule="cosine",
        warmup_epochs=2,
        label_smoothing=0.1,
        backbone_lr_scale=0.1,
    ),
}
RECIPE_FIELDS = tuple(field.name for field in dataclasses.fields(Recipe))


def resolve_recipe(name: str, overrides: dict[str, Any]) -> Recipe:
    """Preset ``name`` with the settings of ``overrides`` that are not None in its place.

    Raises:
        ConfigError: an unknown preset or setting, or a value out of range.
    """
    if name not in RECIPES:
        raise ConfigError(f"--recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    unknown = set(overrides) - set(RECIPE_FIELDS)
    if unknown:
        raise ConfigError(f"unknown recipe settings: {', '.join(sorted(unknown))}")
    return dataclasses.replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})
