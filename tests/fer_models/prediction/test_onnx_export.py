"""fer-export: ONNX Runtime gives PyTorch's probabilities on real faces, for every family."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from fer_models.prediction.onnx_export import OPSET
from fer_models.prediction.predictor import RunPredictor
from fer_models.training.engine import prepare_batch
from pipeline.store import open_store, read_array
from pipeline.store.schema import SPLIT
from tests.support.stores import SMALL_FAMILIES as FAMILIES

BIN = Path(sys.executable).parent
TOLERANCE = 1e-5  # largest difference of a probability, ONNX Runtime against PyTorch (float32, CPU)


@pytest.mark.parametrize("model", FAMILIES)
def test_the_exported_model_gives_pytorch_s_probabilities_on_real_faces(runs, fer_store, tmp_path, model):
    out = tmp_path / "model.onnx"
    done = subprocess.run(
        [str(BIN / "fer-export"), "--run", str(runs / model), "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    sidecar = json.loads(out.with_suffix(".json").read_text())
    predictor = RunPredictor(runs / model / "best.pt", device="cpu")
    assert sidecar["onnx_opset"] == OPSET and sidecar["class_names"] == predictor.class_names
    names = [entry["name"] for entry in sidecar["inputs"]]
    assert names + sidecar["training_only"] == list(predictor.chain.reads)
    assert sidecar["training_only"] == {"pal": ["heatmap"], "feratt": ["mask_hull"]}.get(model, [])
    assert sidecar["chain"]["preprocessing"]["align"] == predictor.chain.config.to_dict()["align"]
    group = open_store(fer_store)
    test = np.flatnonzero(read_array(group, SPLIT) == 1)[:24]  # real faces of the test split
    inputs = {name: np.stack([read_array(group, name, int(i)) for i in test]) for name in names}
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits, probabilities = session.run(None, inputs)
    with torch.no_grad():
        batch = prepare_batch({name: torch.from_numpy(values) for name, values in inputs.items()}, torch.device("cpu"))
        expected = predictor.model(batch)["logits"].softmax(1).numpy()
    assert probabilities.shape == (len(test), len(predictor.class_names))
    assert np.abs(probabilities - expected).max() < TOLERANCE
    assert np.array_equal(probabilities.argmax(1), expected.argmax(1))
