"""Device-resident batches: the in-memory loader's batches, made on the device, and a run that
gives the same weights with them as without."""

import pytest
import torch

from fer_models.data.device_batches import DeviceBatches, fits_on, selection_bytes
from fer_models.data.selection import select_samples
from fer_models.data.stream import StoreBatches
from fer_models.training.checkpoint import load_checkpoint
from fer_models.training.config import TrainConfig
from fer_models.training.engine import Trainer
from fer_models.training.run_directory import train
from pipeline.errors import ConfigError

FIELDS = ("image", "landmarks", "heatmap", "mask_soft", "regions")


@pytest.mark.parametrize("shuffle", [False, True])
def test_device_batches_are_the_in_memory_loaders_batches(fer_store, shuffle):
    selection = select_samples(fer_store, "train")
    source = StoreBatches(fer_store, selection, FIELDS, 8, shuffle=shuffle, seed=5, in_memory=True, drop_last=shuffle)
    resident = DeviceBatches(source, torch.device("cpu"))
    for epoch in (1, 2):
        source.set_epoch(epoch)
        expected, made = list(source), list(resident)
        assert len(made) == len(expected) == len(resident)
        for a, b in zip(expected, made, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    assert selection_bytes(source) >= sum(v.nbytes for v in source.in_memory_arrays().values())
    assert fits_on(torch.device("cpu"), selection_bytes(source))
    with pytest.raises(ValueError, match="in-memory"):
        DeviceBatches(StoreBatches(fer_store, selection, FIELDS, 8, in_memory=False), torch.device("cpu"))


def test_a_run_gives_the_same_weights_with_batches_made_on_the_device_or_by_the_loader(fer_store, tmp_path):
    common = dict(store=str(fer_store), model="guided-stn", epochs=2, batch_size=16, seed=4, in_memory=True)
    on_device = Trainer(TrainConfig(**common))
    on_device.train_epoch(1)
    assert isinstance(on_device._loader(on_device.train_batches), DeviceBatches)

    runs = {}
    for device_data in ("auto", "off"):
        train(TrainConfig(**common, device_data=device_data), tmp_path / device_data)
        runs[device_data] = load_checkpoint(tmp_path / device_data / "last.pt")
    for key, tensor in runs["auto"].model.items():
        torch.testing.assert_close(runs["off"].model[key], tensor, rtol=0, atol=0, msg=key)
    # Where the batches were made is not part of what a resumed run must repeat.
    train(TrainConfig(**{**common, "epochs": 3}, device_data="off"), tmp_path / "auto", resume=True)
    with pytest.raises(ConfigError, match="--device-data must be auto or off"):
        TrainConfig(**common, device_data="gpu")
