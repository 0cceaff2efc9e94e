"""A small real FER-2013 store for the training-side tests."""

from pathlib import Path

import pytest
import torch

from pipeline.config import build_config
from pipeline.run import SYNCHRONOUS, preprocess

# One intra-op thread: the models here are small, and two processes each spinning two threads on a
# two-core machine run ten times slower than one thread each.
torch.set_num_threads(1)

GUIDANCE = "heatmap,heatmap_regions,saliency,mask_soft,mask_binary,mask_hull,regions"


@pytest.fixture(scope="session")
def fer_store(tmp_path_factory, fer2013_small) -> Path:
    """84 FER-2013 faces (42 train, 42 test) at S = H = 48, gray, shards of 32 samples."""
    store = tmp_path_factory.mktemp("fer-models") / "fer.zarr"
    config = build_config({"detect": {"prior": "full-frame"}, "align": {"size": 48, "color": "gray"},
                           "guidance": {"types": GUIDANCE}, "shard_size": 32})  # fmt: skip
    preprocess(store, "folder", fer2013_small, config, scheduler=SYNCHRONOUS, progress=False, echo=lambda _: None)
    return store
