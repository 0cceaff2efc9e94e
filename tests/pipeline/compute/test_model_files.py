"""A model is identified by all its files: an ONNX network whose weights lie in external data
files hashes them too, so provenance, ``fer-store diff`` and a resume see changed weights."""

import onnx
import pytest

from pipeline.compute.model_files import ModelFiles, onnx_external_data
from pipeline.compute.run import SYNCHRONOUS, preprocess
from pipeline.config import build_config
from pipeline.errors import ModelFileError, StoreMismatchError
from tests.support.onnx_networks import export_saliency_network


def network_with_external_weights(folder):
    """The tests' saliency network saved as model.onnx plus weights.bin."""
    folder.mkdir()
    single = export_saliency_network(folder / "single.onnx")
    model = onnx.load(str(single))
    onnx.save_model(
        model, str(folder / "model.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    single.unlink()
    return folder / "model.onnx"


def test_changed_external_weights_change_the_record(tmp_path):
    path = network_with_external_weights(tmp_path / "net")
    assert onnx_external_data(path) == ["weights.bin"]
    record = ModelFiles(None, str(path)).sha256()["saliency_network"]
    assert record["file"] == "model.onnx" and record["external_data"] == "weights.bin"
    weights = path.parent / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    changed = ModelFiles(None, str(path)).sha256()["saliency_network"]
    assert changed["sha256"] != record["sha256"]
    weights.unlink()
    with pytest.raises(ModelFileError, match="keeps weights in weights.bin, which is not a file in its folder"):
        ModelFiles(None, str(path)).sha256()


def test_a_network_in_one_file_keeps_its_own_sha256(saliency_onnx):
    record = ModelFiles(None, str(saliency_onnx)).sha256()["saliency_network"]
    from pipeline.config import file_sha256

    assert record == {"file": saliency_onnx.name, "sha256": file_sha256(saliency_onnx)}


def test_a_resume_refuses_changed_external_weights(tmp_path, fer2013_small):
    path = network_with_external_weights(tmp_path / "net")
    config = build_config(
        {
            "detect": {"prior": "full-frame"},
            "align": {"size": 48, "color": "gray"},
            "guidance": {"types": "saliency_network"},
        }
    )
    store = tmp_path / "s.zarr"
    assert preprocess(store, "folder", fer2013_small, config, saliency_model=path, scheduler=SYNCHRONOUS).complete
    weights = path.parent / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(StoreMismatchError, match="saliency_network model differs"):
        preprocess(store, "folder", fer2013_small, config, saliency_model=path, scheduler=SYNCHRONOUS)
