"""The options naming a trained run's model, shared by fer-predict and fer-export, and loading it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    from fer_models.prediction.predictor import RunPredictor

Command = TypeVar("Command", bound=Callable[..., object])


def run_model_options(command: Command) -> Command:
    """``--run``, ``--checkpoint``, ``--landmark-model`` and ``--saliency-model``."""
    options = [
        click.option(
            "--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True), help="A fer-train run."
        ),
        click.option(
            "--checkpoint",
            type=click.Choice(("best", "last")),
            default="best",
            help="best: the epoch the run selected; last: its last epoch.",
        ),
        click.option(
            "--landmark-model",
            type=click.Path(dir_okay=False),
            help="dlib's 68-point model, if not the package's (checked against the store's). "
            "[from face_recognition_models]",
        ),
        click.option(
            "--saliency-model",
            type=click.Path(dir_okay=False),
            help="The store's ONNX saliency network, for a model that reads saliency_network maps.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def checkpoint_path(run_dir: str, checkpoint: str) -> Path:
    """``RUN_DIR/best.pt`` or ``RUN_DIR/last.pt``."""
    return Path(run_dir) / f"{checkpoint}.pt"


def load_run_model(
    run_dir: str, checkpoint: str, landmark_model: str | None, saliency_model: str | None, device: str
) -> RunPredictor:
    """The run's model and its store's chain (raises the project's errors; callers report them)."""
    from fer_models.prediction.predictor import RunPredictor

    return RunPredictor(
        checkpoint_path(run_dir, checkpoint),
        device=device,
        landmark_model=landmark_model,
        saliency_model=saliency_model,
    )
