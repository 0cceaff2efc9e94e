"""The configuration of one training run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from fer_models.models.registry import get_model_entry
from fer_models.training.recipe import RECIPE_FIELDS, RECIPES, Recipe, resolve_recipe
from pipeline.errors import ConfigError

BALANCES = ("weights", "none")  # a class-weighted loss, or the plain one


DEVICE_DATA = ("auto", "off")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``None`` means "the model's default" (epochs, batch_size, recipe), "the
    recipe's" (lr and the other recipe settings, :mod:`fer_models.training.recipe`) or "from the
    store" (labels: its first label set; splits: see :mod:`fer_models.training.protocol`)."""

    store: str
    model: str = "cnn"
    options: dict[str, Any] = field(default_factory=dict)  # the model's own options
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    labels: str | None = None
    train_split: str | None = None
    eval_split: str | None = None  # the validation split (see fer_models.training.protocol)
    test_split: str | None = None
    folds: int = 0  # > 0: subject-independent folds of the train split, fold `fold` tested
    fold: int = 0
    val_fraction: float = 0.0  # > 0: validate on this share of the training subjects (or samples)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    balance: str | None = None  # weights: class-weighted loss; none; None: the dataset's protocol
    augment: bool = True
    resized_crop: float = 1.0  # with augment: the smallest area share of a random resized crop (1: none)
    random_erasing: float = 0.0  # with augment: the probability of erasing a rectangle (image and guidance)
    workers: int = 0  # DataLoader worker processes (spawn) when streaming from the store
    in_memory: bool | str = "auto"
    # auto: an in-memory selection that fits on the device is held there, batches gathered there
    # (fer_models.data.device_batches; the same batches either way); off: the loader's host path.
    device_data: str = "auto"
    init: str | None = None  # a state dict (or a checkpoint of ours) to start from, loaded non-strictly
    threads: int | None = None  # CPU threads (torch intra-op); None: torch's current number, recorded
    recipe: str | None = None  # a preset of fer_models.training.recipe.RECIPES
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    lr_schedule: str | None = None
    warmup_epochs: float | None = None
    label_smoothing: float | None = None
    clip_grad_norm: float | None = None
    ema_decay: float | None = None
    backbone_lr_scale: float | None = None

    def __post_init__(self) -> None:
        if self.folds and not 0 <= self.fold < self.folds:
            raise ConfigError(f"--fold must be between 0 and {self.folds - 1} with --folds {self.folds}")
        if self.folds and (self.eval_split or self.test_split):
            raise ConfigError(
                "--folds tests fold --fold and validates on the next fold (or --val-fraction); "
                "leave out --eval-split and --test-split"
            )
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be at least 0 and below 1, got {self.val_fraction}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be 1 or more, got {self.threads}")
        if self.balance is not None and self.balance not in BALANCES:
            raise ConfigError(f"balance must be {' or '.join(BALANCES)}, got {self.balance!r}")
        if not 0 < self.resized_crop <= 1:
            raise ConfigError(f"--resized-crop must be above 0 and at most 1, got {self.resized_crop}")
        if not 0 <= self.random_erasing <= 1:
            raise ConfigError(f"--random-erasing must be between 0 and 1, got {self.random_erasing}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")
        if self.device_data not in DEVICE_DATA:
            raise ConfigError(f"--device-data must be {' or '.join(DEVICE_DATA)}, got {self.device_data!r}")

    def schedule(self) -> Schedule:
        """The run's epochs, batch size, threads and recipe: this config's, or where it says None
        the model's defaults (and torch's current thread count), the recipe's settings overridden
        by those this config gives.

        Raises:
            ConfigError: fewer than one epoch or sample per batch, an unknown recipe, or a recipe
                setting out of range.
        """
        defaults = get_model_entry(self.model).defaults
        recipe_name = self.recipe or defaults["recipe"]
        schedule = Schedule(
            epochs=int(defaults["epochs"] if self.epochs is None else self.epochs),
            batch_size=int(defaults["batch_size"] if self.batch_size is None else self.batch_size),
            threads=torch.get_num_threads() if self.threads is None else self.threads,
            recipe_name=recipe_name,
            recipe=resolve_recipe(recipe_name, {name: getattr(self, name) for name in RECIPE_FIELDS}),
        )
        if schedule.epochs < 1 or schedule.batch_size < 1:
            raise ConfigError("epochs and batch size must be at least 1")
        return schedule

    def resolved(self) -> TrainConfig:
        """This config with :meth:`schedule`'s values in place of None (as config.json records it)."""
        schedule = self.schedule()
        return dataclasses.replace(
            self,
            epochs=schedule.epochs,
            batch_size=schedule.batch_size,
            threads=schedule.threads,
            recipe=schedule.recipe_name,
            **schedule.recipe.to_dict(),
        )

    def continuing(self, stored: dict[str, Any]) -> TrainConfig:
        """This config, for resuming the run whose resolved configuration is ``stored``: the
        epochs, batch size, threads, balance and recipe settings it leaves None are the run's (a
        run recorded before recipes existed trained with the ``legacy`` recipe)."""
        stored = recorded_config(stored)
        names = ("epochs", "batch_size", "threads", "recipe", "balance", *RECIPE_FIELDS)
        unset: dict[str, Any] = {name: stored.get(name) for name in names if getattr(self, name) is None}
        return dataclasses.replace(self, **unset)


def recorded_config(stored: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded configuration, those recorded before recipes existed completed with the
    ``legacy`` recipe they trained with (and, before the balance was the dataset's, with the
    class-weighted loss they all trained with; before the backbone had a rate of its own and
    before resized crops and erasing, with neither)."""
    stored = {"balance": "weights", "backbone_lr_scale": 1.0, "resized_crop": 1.0, "random_erasing": 0.0, **stored}
    if "recipe" in stored:
        return stored
    return {"recipe": "legacy", **RECIPES["legacy"].to_dict(), **stored}


@dataclass(frozen=True)
class Schedule:
    """A run's resolved numbers and recipe (:meth:`TrainConfig.schedule`)."""

    epochs: int
    batch_size: int
    threads: int  # CPU threads (torch intra-op)
    recipe_name: str
    recipe: Recipe

    @property
    def lr(self) -> float:
        """The peak learning rate."""
        return self.recipe.lr
