"""A trained run as an ONNX model, with a JSON sidecar of the preprocessing it expects.

The graph takes what the store's chain makes of a face, as the store holds it, and does the
rest: ``image`` ``(B, C, S, S) uint8`` and each guidance map the model reads, ``(B, C', H, H)
uint8``, are scaled to [0, 1] inside the graph, and the input normalisation the backbone's
weights expect is applied inside it, as in training; ``landmarks`` ``(B, 68, 2) float32`` and
``regions`` ``(B, R, 4) float32`` are in aligned pixels. What a model reads in training only
(PAL's heatmap, FERAtt's reconstruction target) is not an input. Outputs: ``logits`` and
``probabilities`` ``(B, K)``; the batch axis is free. The sidecar (``<out>.json``) records the
class names, the inputs, the opset and the chain (:meth:`PredictionChain.describe`): a face must
be detected, given its 68 landmarks, aligned and rendered exactly so for the run's figures to
hold.

*Departure*: the graph is written by PyTorch's TorchScript-based exporter (``dynamo=False``):
the dynamo exporter needs the ``onnxscript`` package, which this project does not install.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fer_models.prediction.predictor import RunPredictor
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.store.schema import LANDMARKS

OPSET = 20  # AffineGrid (the spatial transformers) needs 20; GridSample 16
SIDECAR_FORMAT = 1


class _FromStoredTensors(nn.Module):
    """The run's model on its inputs as positional tensors (ONNX has no dict inputs), uint8 maps
    scaled to [0, 1] as training's batches are."""

    def __init__(self, model: nn.Module, reads: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.reads = model, reads

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = {
            name: values.float() / 255.0 if values.dtype == torch.uint8 else values
            for name, values in zip(self.reads, inputs, strict=True)
        }
        logits: torch.Tensor = self.model(batch)["logits"]
        return logits, logits.softmax(1)


def input_shapes(predictor: RunPredictor, batch: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``{input: (shape, dtype)}`` of the exported graph for a batch of ``batch`` faces."""
    channels, size, _ = predictor.chain.image_shape
    guidance_size = predictor.chain.guidance_size
    shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for name in predictor.chain.reads:
        if name == "image":
            shapes[name] = ((batch, channels, size, size), torch.uint8)
        elif name == LANDMARKS:
            shapes[name] = ((batch, 68, 2), torch.float32)
        elif GUIDANCE_TYPES[name].boxes:
            shapes[name] = ((batch, len(GUIDANCE_TYPES[name].channels), 4), torch.float32)
        else:
            shapes[name] = ((batch, len(GUIDANCE_TYPES[name].channels), guidance_size, guidance_size), torch.uint8)
    return shapes


def export_onnx(predictor: RunPredictor, out: str | Path, *, checkpoint: str) -> dict[str, Any]:
    """Write ``predictor``'s model to ``out`` (ONNX, opset :data:`OPSET`) and its sidecar to
    ``out`` with the suffix ``.json``; returns the sidecar.

    Args:
        checkpoint: the checkpoint's path, recorded in the sidecar.
    """
    out = Path(out)
    model = _FromStoredTensors(predictor.model.cpu().eval(), predictor.chain.reads)
    shapes = input_shapes(predictor, batch=2)
    # A face of mid-grey with landmarks and boxes inside it: any finite example traces the graph.
    size = predictor.chain.image_shape[1]
    examples = tuple(
        torch.full(shape, 128, dtype=dtype) if dtype == torch.uint8 else torch.rand(shape) * size * 0.8 + size * 0.1
        for shape, dtype in shapes.values()
    )
    names = list(shapes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            examples,
            str(out),
            dynamo=False,
            opset_version=OPSET,
            input_names=names,
            output_names=["logits", "probabilities"],
            dynamic_axes={name: {0: "batch"} for name in [*names, "logits", "probabilities"]},
        )
    import onnx  # a core dependency (the saliency network's checks); imported where it is used

    used = {entry.name for entry in onnx.load(str(out), load_external_data=False).graph.input}
    sidecar = {
        "format": SIDECAR_FORMAT,
        "onnx_opset": OPSET,
        "checkpoint": checkpoint,
        "class_names": predictor.class_names,
        "inputs": [
            {"name": name, "shape": ["batch", *shape[1:]], "dtype": str(dtype).removeprefix("torch.")}
            for name, (shape, dtype) in shapes.items()
            if name in used
        ],
        # What the model reads in training only (PAL's heatmap, FERAtt's reconstruction target):
        # the chain renders it, the graph takes none of it.
        "training_only": [name for name in shapes if name not in used],
        "outputs": [
            {"name": "logits", "shape": ["batch", len(predictor.class_names)], "dtype": "float32"},
            {"name": "probabilities", "shape": ["batch", len(predictor.class_names)], "dtype": "float32"},
        ],
        "chain": predictor.chain.describe(),
    }
    out.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar
