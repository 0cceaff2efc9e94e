"""``fer-export``: a trained run as an ONNX model and a JSON sidecar of the preprocessing it expects."""

from __future__ import annotations

from pathlib import Path

import click

from cli.errors import user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True), help="A fer-train run.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The ONNX file (model.onnx).")
@click.option(
    "--checkpoint",
    type=click.Choice(("best", "last")),
    default="best",
    help="best: the epoch the run selected; last: its last epoch.",
)
@click.option(
    "--landmark-model",
    type=click.Path(dir_okay=False),
    help="dlib's 68-point model, if not the package's (checked against the store's).",
)
@click.option(
    "--saliency-model",
    type=click.Path(dir_okay=False),
    help="The store's ONNX saliency network, for a model that reads saliency_network maps.",
)
def main(run_dir: str, out: str, checkpoint: str, landmark_model: str | None, saliency_model: str | None) -> None:
    """Export the model of the run RUN_DIR to ONNX (its input normalisation inside the graph) and
    write OUT with the suffix .json: the class names, the inputs and the store's preprocessing
    chain the faces must go through."""
    from fer_models.prediction.onnx_export import export_onnx
    from fer_models.prediction.predictor import RunPredictor

    path = Path(run_dir) / f"{checkpoint}.pt"
    with user_errors():
        predictor = RunPredictor(path, device="cpu", landmark_model=landmark_model, saliency_model=saliency_model)
        sidecar = export_onnx(predictor, out, checkpoint=str(path))
    inputs = ", ".join(f"{entry['name']} {entry['shape']}" for entry in sidecar["inputs"])
    click.echo(f"wrote {out} (opset {sidecar['onnx_opset']}; inputs {inputs}) and {Path(out).with_suffix('.json')}")
