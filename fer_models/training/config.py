"""The configuration of one training run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from fer_models.models.registry import get_model_entry
from pipeline.errors import ConfigError

BALANCES = ("weights", "none")  # a class-weighted loss, or the plain one


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``None`` means "the model's default" (epochs, batch_size, lr) or "from
    the store" (labels: its first label set; splits: see :mod:`fer_models.training.protocol`)."""

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
    balance: str = "weights"  # weights: class-weighted loss; none
    augment: bool = True
    workers: int = 0  # DataLoader worker processes (spawn) when streaming from the store
    in_memory: bool | str = "auto"
    init: str | None = None  # a state dict (or a checkpoint of ours) to start from, loaded non-strictly
    threads: int | None = None  # CPU threads (torch intra-op); None: torch's current number, recorded

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
        if self.balance not in BALANCES:
            raise ConfigError(f"balance must be {' or '.join(BALANCES)}, got {self.balance!r}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, got {self.workers}")

    def resolved(self) -> TrainConfig:
        """This config with the model's defaults filled in."""
        defaults = get_model_entry(self.model).defaults
        config = dataclasses.replace(
            self, **{key: defaults[key] for key in ("epochs", "batch_size", "lr") if getattr(self, key) is None}
        )
        if config.threads is None:
            config = dataclasses.replace(config, threads=torch.get_num_threads())
        if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
            raise ConfigError("epochs and batch size must be at least 1 and the learning rate positive")
        return config
