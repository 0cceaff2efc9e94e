"""A learned saliency network given as an ONNX file: exported here from torch, run through the
same path a user's network takes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from pipeline.compute.model_files import SaliencyNetwork
from pipeline.compute.network_probe import check_saliency_network
from pipeline.errors import ModelFileError
from pipeline.stages.saliency import network_saliency, normalise_to_uint8
from tests.support.onnx_networks import (
    export_endless_network,
    export_greedy_network,
    export_onnx,
    export_saliency_network,
)

FACE = cv2.resize(skimage.data.astronaut()[30:230, 150:350], (112, 112))  # (112, 112, 3) uint8 RGB


def torch_map(path_of_onnx, image: np.ndarray, channels: int = 3) -> np.ndarray:
    """The exported network's map computed by torch itself: rebuild it with the same seed."""
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 8, 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 1, 5, padding=2, stride=2),
        torch.nn.Sigmoid(),
    ).eval()
    batch = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)
    with torch.no_grad():
        return network(batch)[0, 0].numpy()


def test_the_onnx_path_gives_the_map_torch_gives(saliency_onnx):
    network = SaliencyNetwork(saliency_onnx)
    raw = network(FACE)
    expected = torch_map(saliency_onnx, FACE)
    assert raw.shape == (56, 56) and raw.dtype == np.float32
    np.testing.assert_allclose(raw, expected, atol=1e-5)
    for size in (28, 56, 112):  # shrinking, same size, growing
        rendered = network_saliency(network, FACE, size)
        interpolation = cv2.INTER_AREA if size <= 56 else cv2.INTER_LINEAR
        reference = normalise_to_uint8(cv2.resize(expected, (size, size), interpolation=interpolation))
        assert rendered.shape == (size, size) and rendered.dtype == np.uint8
        assert rendered.min() == 0 and rendered.max() == 255
        assert np.abs(rendered.astype(int) - reference).max() <= 1


def test_maps_are_finite_normalised_and_deterministic(saliency_onnx):
    network = SaliencyNetwork(saliency_onnx)
    first = network_saliency(network, FACE, 64)
    np.testing.assert_array_equal(first, network_saliency(SaliencyNetwork(saliency_onnx), FACE.copy(), 64))
    gray = cv2.cvtColor(FACE, cv2.COLOR_RGB2GRAY)  # a gray store feeds an RGB network its replicated gray
    np.testing.assert_allclose(network(gray), torch_map(saliency_onnx, np.repeat(gray[..., None], 3, 2)), atol=1e-5)


def test_a_fixed_size_gray_network_gets_the_face_resized_to_its_input(tmp_path):
    path = export_saliency_network(tmp_path / "gray40.onnx", channels=1, input_size=40)
    network = SaliencyNetwork(path)
    assert network.channels == 1 and network.input_size == (40, 40)
    gray = cv2.cvtColor(FACE, cv2.COLOR_RGB2GRAY)
    resized = cv2.resize(gray, (40, 40), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(network(FACE), torch_map(path, resized[..., None], channels=1), atol=1e-5)


def test_files_that_break_the_contract_are_refused_with_what_is_wrong(tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("not a network\n")
    with pytest.raises(ModelFileError, match="ONNX Runtime cannot load the saliency network"):
        SaliencyNetwork(text)
    two_maps = export_saliency_network(tmp_path / "two.onnx", out_channels=2)
    with pytest.raises(ModelFileError, match=r"output of shape \(1, 2, 16, 16\); expected \(1, 1, h, w\)"):
        SaliencyNetwork(two_maps)
    two_channels = export_saliency_network(tmp_path / "c2.onnx", channels=2)
    with pytest.raises(ModelFileError, match=r"one input \(B, C, h, w\) with C fixed to 3 \(RGB\) or 1"):
        SaliencyNetwork(two_channels)


def export_enlarging_network(path, scale: int):
    """A network whose map is ``scale`` times its input's side."""
    enlarging = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 3, padding=1), torch.nn.Upsample(scale_factor=scale))
    return export_onnx(enlarging, path)


def test_maps_too_large_or_not_finite_are_errors_never_zeros(tmp_path, saliency_onnx):
    with pytest.raises(ModelFileError, match=r"gives a 320x320 map for a 32x32 input, more than 4 times its side"):
        SaliencyNetwork(export_enlarging_network(tmp_path / "x10.onnx", 10))
    assert SaliencyNetwork(export_enlarging_network(tmp_path / "x4.onnx", 4), FACE)(FACE).shape == (448, 448)
    with pytest.raises(ValueError, match="the saliency network gave 3 non-finite values"):
        network_saliency(lambda face: np.array([[np.nan, 1.0], [np.inf, -np.inf]], np.float32), FACE, 16)


def test_a_network_that_never_ends_or_wants_40_gb_is_refused_within_its_bounds(tmp_path, saliency_onnx):
    check_saliency_network(saliency_onnx, FACE)  # a network that keeps its contract passes
    endless = export_endless_network(tmp_path / "endless.onnx")
    began = time.monotonic()
    with pytest.raises(ModelFileError, match=r"did not finish one face in 3 s \(a Loop that never ends\?\)"):
        check_saliency_network(endless, FACE, seconds=3)
    assert time.monotonic() - began < 10  # ONNX Runtime alone runs it for ever
    greedy = export_greedy_network(tmp_path / "greedy.onnx")
    with pytest.raises(ModelFileError, match="greedy.onnx fails on a 112x112x3 face: .*Failed to allocate memory"):
        check_saliency_network(greedy, FACE, memory_bytes=2 << 30)


def test_ctrl_c_during_the_start_up_check_of_a_network_ends_the_command_at_once(tmp_path):
    endless = export_endless_network(tmp_path / "endless.onnx")
    command = [Path(sys.executable).parent / "fer-preprocess", tmp_path / "s.zarr", "--dataset", "sample"]
    command += ["--guidance", "saliency_network", "--saliency-model", endless, "--no-progress"]
    build = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(8)  # the check has started (the sample dataset's scan and the models take a few seconds)
    os.killpg(build.pid, signal.SIGINT)
    began = time.monotonic()
    _, stderr = build.communicate(timeout=60)
    assert build.returncode == 130 and time.monotonic() - began < 5 and "Traceback" not in stderr, stderr
    assert not (tmp_path / "s.zarr").exists()  # stopped in the check, before the store was made
