"""``fer-predict``: a trained run applied to photos, folders and videos, through its store's chain."""

from __future__ import annotations

import click

from cli.errors import user_errors
from cli.progress import ConsoleProgress
from cli.run_model import load_run_model, run_model_options


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@run_model_options
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CSV of the predictions, one row per face.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="The same rows as a JSON list.")
@click.option("--every", type=click.IntRange(min=1), default=1, help="A video's every N-th frame.")
@click.option("--largest", is_flag=True, help="Only the largest face of each picture (the one a store keeps).")
@click.option(
    "--crop-faces",
    is_flag=True,
    help="For a run on a store of kept crops (FER-2013, CK+48, ...): cut each face of a photo out as the "
    "dataset frames its crops (measured on the store) before its chain; without it each input is one crop.",
)
@click.option("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, help="Faces per forward pass.")
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, help="Processes running the face chain on image files."
)
@click.option("--progress/--no-progress", default=True, help="A progress bar over the inputs.")
def main(
    run_dir: str,
    inputs: tuple[str, ...],
    out: str,
    json_path: str | None,
    checkpoint: str,
    every: int,
    largest: bool,
    crop_faces: bool,
    device: str,
    batch_size: int,
    workers: int,
    landmark_model: str | None,
    saliency_model: str | None,
    progress: bool,
) -> None:
    """Predict the expression of every face in INPUTS (image files, folders of images and
    videos, videos) with the model of the run RUN_DIR. Each face goes through the preprocessing
    of the store the run trained on (detector, landmarks, alignment, guidance), rebuilt from the
    checkpoint; the CSV has one row per face with its box, the predicted class and one
    probability column per class. Unreadable inputs and pictures without a face are rows with a
    status and a message."""
    from fer_models.prediction.output import write_predictions
    from fer_models.prediction.predictor import predict

    console = ConsoleProgress(bars=progress)
    with user_errors():
        predictor = load_run_model(run_dir, checkpoint, landmark_model, saliency_model, device)
        rows = predict(
            predictor,
            list(inputs),
            every=every,
            largest=largest,
            crop_faces=crop_faces,
            batch_size=batch_size,
            workers=workers,
            progress=console,
        )
        counts = write_predictions(rows, predictor.class_names, out, json_path)
    faces = counts["ok"] + counts["ok_prior"]
    others = ", ".join(f"{status} {counts[status]}" for status in ("no_face", "unreadable", "failed") if counts[status])
    click.echo(f"{faces} faces predicted" + (f"; {others}" if others else "") + f" -> {out}")
