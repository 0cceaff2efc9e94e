"""A finished run's summary (``summary.json``) as a typed record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class TestFigures:
    """The test samples' scores at the selected epoch and at the last one; accuracy and macro-F1
    are fractions, ``confusion`` the ``K x K`` counts at the selected epoch (rows true classes)."""

    accuracy: float
    macro_f1: float
    confusion: list[list[int]]
    last_epoch_accuracy: float
    last_epoch_macro_f1: float


@dataclass(frozen=True)
class RunSummary:
    """What a run trained, what selected its epoch, and what it scored (``summary.json``).

    labels: the class names. device, threads: where it ran. epochs: the epochs trained.
    selected_by: what chose ``selected_epoch`` (the validation split, or "last epoch");
    selected_validation_accuracy: that epoch's validation accuracy (None without validation).
    test: the test figures, None when the protocol has no test samples. seconds: training time.
    initial_weights: the sha256 of each file the weights started from, by path (``--init``,
    ``backbone_weights``); empty for a run from random weights (and in summaries written before it).
    balance: the class balance of its loss (``weights`` or ``none``; summaries written before it
    was recorded: every run then weighted, ``weights``). world_size, backend: the processes that
    trained it (torchrun's world size, torch.distributed's backend; 1 and None for one process,
    and in summaries written before they were recorded).
    """

    model: str
    options: dict[str, Any]
    labels: list[str]
    label_set: str
    device: str
    threads: int
    epochs: int
    train_split: str
    train_samples: int
    validation_split: str | None
    validation_samples: int
    selected_by: str
    selected_epoch: int
    selected_validation_accuracy: float | None
    test_split: str | None
    test_samples: int
    test: TestFigures | None = None
    seconds: float = 0.0
    initial_weights: dict[str, str] = dataclasses.field(default_factory=dict)
    balance: str = "weights"
    world_size: int = 1
    backend: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """``summary.json``'s object: the fields, the test figures as ``test_accuracy``,
        ``test_macro_f1``, ``confusion``, ``last_epoch_test_accuracy`` and
        ``last_epoch_test_macro_f1`` (absent without test samples)."""
        data = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "test"}
        if self.test is not None:
            data.update(
                test_accuracy=self.test.accuracy,
                test_macro_f1=self.test.macro_f1,
                confusion=self.test.confusion,
                last_epoch_test_accuracy=self.test.last_epoch_accuracy,
                last_epoch_test_macro_f1=self.test.last_epoch_macro_f1,
            )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "summary.json") -> RunSummary:
        """What :meth:`to_dict` wrote.

        Raises:
            ConfigError: a field missing (``where`` names the file).
        """
        names = [field.name for field in dataclasses.fields(cls) if field.name != "test"]
        later = {"initial_weights", "balance", "world_size", "backend"}  # absent from summaries written before them
        missing = [name for name in names if name not in data and name not in later]
        if missing:
            raise ConfigError(f"{where} lacks {', '.join(missing)}: it was not written by this fer-train")
        test = None
        if "test_accuracy" in data:
            test = TestFigures(
                data["test_accuracy"],
                data["test_macro_f1"],
                data["confusion"],
                data["last_epoch_test_accuracy"],
                data["last_epoch_test_macro_f1"],
            )
        return cls(**{name: data[name] for name in names if name in data}, test=test)
