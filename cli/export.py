"""``fer-export``: a trained run as an ONNX model and a JSON sidecar of the preprocessing it expects."""

from __future__ import annotations

from pathlib import Path

import click

from cli.errors import user_errors
from cli.run_model import checkpoint_path, load_run_model, run_model_options


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@run_model_options
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The ONNX file (model.onnx).")
def main(run_dir: str, out: str, checkpoint: str, landmark_model: str | None, saliency_model: str | None) -> None:
    """Export the model of the run RUN_DIR to ONNX (its input normalisation inside the graph) and
    write OUT with the suffix .json: the class names, the inputs and the store's preprocessing
    chain the faces must go through."""
    from fer_models.prediction.onnx_export import export_onnx

    with user_errors():
        predictor = load_run_model(run_dir, checkpoint, landmark_model, saliency_model, device="cpu")
        sidecar = export_onnx(predictor, out, checkpoint=str(checkpoint_path(run_dir, checkpoint)))
    inputs = ", ".join(f"{entry['name']} {entry['shape']}" for entry in sidecar["inputs"])
    click.echo(f"wrote {out} (opset {sidecar['onnx_opset']}; inputs {inputs}) and {Path(out).with_suffix('.json')}")
