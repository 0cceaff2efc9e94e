"""Shared fixtures: real data from ../shared/data (skipped with a reason where absent), and the
stores and networks the tests build once per session. What they are made with is in
``tests/support``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.onnx_networks import export_saliency_network
from tests.support.shared_data import DLIB_FACES, extract_fer2013, require
from tests.support.stores import build_fer_store

# One intra-op thread: the models here are small, and two processes each spinning two threads on a
# two-core machine run ten times slower than one thread each.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def dlib_faces() -> Path:
    """The dlib example photos with their 68-point XML references."""
    return require(DLIB_FACES)


@pytest.fixture(scope="session")
def fer2013_small(tmp_path_factory) -> Path:
    """FER-2013 image folders, 6 images per (split, class): 84 real 48x48 faces."""
    return extract_fer2013(tmp_path_factory.mktemp("fer2013-small"), per_class=6)


@pytest.fixture(scope="session")
def fer2013_2k(tmp_path_factory) -> Path:
    """FER-2013 image folders, up to 150 images per (split, class): 2,061 real faces."""
    return extract_fer2013(tmp_path_factory.mktemp("fer2013-2k"), per_class=150)


@pytest.fixture(scope="session")
def saliency_onnx(tmp_path_factory) -> Path:
    """A small saliency network exported to ONNX (RGB input of any size)."""
    return export_saliency_network(tmp_path_factory.mktemp("onnx") / "saliency.onnx")


@pytest.fixture(scope="session")
def fer_store(tmp_path_factory, fer2013_small) -> Path:
    """84 FER-2013 faces (42 train, 42 test) at S = H = 48, gray, shards of 32 samples."""
    return build_fer_store(tmp_path_factory.mktemp("fer-models") / "fer.zarr", fer2013_small)


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> Path:
    """48 synthetic samples at S = H = 32, gray, shards of 16 (tests/support/synthetic_store.py): no data
    or dlib model needed."""
    from tests.support.synthetic_store import write_synthetic_store

    return write_synthetic_store(tmp_path_factory.mktemp("synthetic") / "synthetic.zarr")
