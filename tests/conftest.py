"""Shared fixtures: real data from ../shared/data (skipped with a reason where absent)."""

from __future__ import annotations

import shutil
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
DLIB_FACES = SHARED_DATA / "dlib-faces"
FER2013_TGZ = SHARED_DATA / "fer2013" / "fer2013-images.tgz"

# One intra-op thread: the models here are small, and two processes each spinning two threads on a
# two-core machine run ten times slower than one thread each.
torch.set_num_threads(1)


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def dlib_faces() -> Path:
    """The dlib example photos with their 68-point XML references."""
    return require(DLIB_FACES)


def reference_faces(folder: Path):
    """``(file, box, landmarks)`` of every face in dlib-faces' two XML files: box ``(4,) float32``
    (left, top, right, bottom) edges, landmarks ``(68, 2) float32`` in dlib's integer pixel
    coordinates (pixel centres, not the corner frame)."""
    for xml in ("training_with_face_landmarks.xml", "testing_with_face_landmarks.xml"):
        for image in ET.parse(folder / xml).getroot().iter("image"):
            for box in image.iter("box"):
                left, top = int(box.get("left")), int(box.get("top"))
                edges = np.array([left, top, left + int(box.get("width")), top + int(box.get("height"))], np.float32)
                parts = sorted(box.iter("part"), key=lambda p: int(p.get("name")))
                points = np.array([[float(p.get("x")), float(p.get("y"))] for p in parts], np.float32)
                yield image.get("file"), edges, points


def extract_fer2013(destination: Path, per_class: int) -> Path:
    """Extract the first ``per_class`` images of every (split, class) folder of the FER-2013 image
    archive, keeping its ``<split>/<class>/<file>.jpg`` layout. Returns the dataset root."""
    taken: Counter[tuple[str, str]] = Counter()
    with tarfile.open(require(FER2013_TGZ)) as archive:
        for member in archive:
            parts = Path(member.name).parts  # fer2013-images/<split>/<class>/<file>
            if not member.isfile() or len(parts) != 4:
                continue
            key = (parts[1], parts[2])
            if taken[key] >= per_class:
                continue
            taken[key] += 1
            target = destination / parts[1] / parts[2] / parts[3]
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
    return destination


@pytest.fixture(scope="session")
def fer2013_small(tmp_path_factory) -> Path:
    """FER-2013 image folders, 6 images per (split, class): 84 real 48x48 faces."""
    return extract_fer2013(tmp_path_factory.mktemp("fer2013-small"), per_class=6)


@pytest.fixture(scope="session")
def fer2013_2k(tmp_path_factory) -> Path:
    """FER-2013 image folders, up to 150 images per (split, class): 2,061 real faces."""
    return extract_fer2013(tmp_path_factory.mktemp("fer2013-2k"), per_class=150)


def export_saliency_network(
    path: Path, channels: int = 3, input_size: int | None = None, out_channels: int = 1
) -> Path:
    """Export a small, fixed-seed torch saliency network to ONNX at ``path`` and return it.

    ``(B, channels, h, w) float32 0..1 -> (B, out_channels, h/2, w/2)``, a sigmoid map; h and w
    are free unless ``input_size`` fixes them. No weights are downloaded: the network is made here.
    """
    import torch

    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 8, 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, out_channels, 5, padding=2, stride=2),
        torch.nn.Sigmoid(),
    )
    return export_onnx(network, path, channels, input_size)


def export_onnx(network, path: Path, channels: int = 3, input_size: int | None = None) -> Path:
    """Export the torch ``network`` (in eval mode) to ONNX at ``path``: one input ``image``
    ``(B, channels, h, w)``, h and w free unless ``input_size`` fixes them; its first output is
    ``saliency``."""
    import warnings

    import torch

    side = input_size or 64
    free = {} if input_size else {"image": {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            network.eval(),
            torch.rand(1, channels, side, side),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["saliency"],
            dynamic_axes=free,
        )
    return path


@pytest.fixture(scope="session")
def saliency_onnx(tmp_path_factory) -> Path:
    """A small saliency network exported to ONNX (RGB input of any size)."""
    return export_saliency_network(tmp_path_factory.mktemp("onnx") / "saliency.onnx")


FER_STORE_GUIDANCE = "heatmap,heatmap_regions,saliency,mask_soft,mask_binary,mask_hull,regions"


def build_fer_store(store: Path, images: Path, codec: str = "zstd") -> Path:
    """The tests' store of the FER-2013 folder ``images`` at ``store``: S = H = 48, gray, the
    guidance of :data:`FER_STORE_GUIDANCE`, shards of 32 samples, tensors compressed by ``codec``."""
    from pipeline.compute.run import SYNCHRONOUS, preprocess
    from pipeline.config import build_config

    config = build_config(
        {
            "detect": {"prior": "full-frame"},
            "align": {"size": 48, "color": "gray"},
            "guidance": {"types": FER_STORE_GUIDANCE},
            "shard_size": 32,
            "codec": codec,
        }
    )
    preprocess(store, "folder", images, config, scheduler=SYNCHRONOUS)
    return store


@pytest.fixture(scope="session")
def fer_store(tmp_path_factory, fer2013_small) -> Path:
    """84 FER-2013 faces (42 train, 42 test) at S = H = 48, gray, shards of 32 samples."""
    return build_fer_store(tmp_path_factory.mktemp("fer-models") / "fer.zarr", fer2013_small)


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> Path:
    """48 synthetic samples at S = H = 32, gray, shards of 16 (tests/synthetic_store.py): no data
    or dlib model needed."""
    from tests.synthetic_store import write_synthetic_store

    return write_synthetic_store(tmp_path_factory.mktemp("synthetic") / "synthetic.zarr")
