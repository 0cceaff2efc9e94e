"""No training step makes the host wait for the GPU: caught on the CPU with the meta device.

A CUDA step that reads a value back (``.item()``, ``bool(tensor)``, ``unique``, boolean indexing,
``linalg.inv``'s error check) or copies pageable host memory waits for the GPU to finish, and the
host stops queueing work. On the GPU, ``bench/gpu.py`` counts these waits
(``host_syncs_per_step``); the first run on an H200 found 5 to 20 per step, in augmentation and
FERAtt's structure loss. Meta tensors have shapes and no values, so every such read fails on them,
and the dispatch log shows each copy from the host.
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fer_models.data.augment import AugmentConfig, augment_batch
from fer_models.data.stream import make_loader
from fer_models.models.registry import list_models
from fer_models.training.config import TrainConfig
from fer_models.training.engine import Trainer, classification_loss, prepare_batch

META = torch.device("meta")
READS_BACK = ("_local_scalar_dense", "nonzero", "unique", "masked_select", "check_errors")


class HostWaits(TorchDispatchMode):
    """Records the operators that would make the host wait for the device."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {value.device.type for value in args if isinstance(value, torch.Tensor)}
        name = str(func)
        if "meta" in devices and any(read in name for read in READS_BACK):
            self.found.append(name)
        target = kwargs.get("device")
        if name.startswith("aten._to_copy") and devices == {"cpu"} and target is not None and target.type == "meta":
            if not kwargs.get("non_blocking"):
                self.found.append(f"{name} from the host, blocking")
        return func(*args, **kwargs)


@pytest.mark.parametrize("model", list_models())
def test_an_augmented_training_step_reads_nothing_back_from_the_device(synthetic_store, model):
    trainer = Trainer(TrainConfig(store=str(synthetic_store), model=model, device="cpu"))
    batch = prepare_batch(next(iter(make_loader(trainer.train_batches, pin_memory=False))), torch.device("cpu"))
    batch = {name: values.to(META) for name, values in batch.items()}
    network = trainer.model.to(META).train()
    with HostWaits() as waits:
        augmented = augment_batch(batch, AugmentConfig(flip=1.0), trainer.view.permutations, torch.Generator())
        output = network(trainer._input(augmented))
        loss = classification_loss(output["logits"], augmented["target"], None)
        (loss + sum(output.get("losses", {}).values())).backward()
    assert waits.found == []


def test_the_check_sees_a_read_back_and_a_blocking_copy():
    with HostWaits() as waits:
        values = torch.zeros(4, device=META)
        values.add_(torch.ones(4).to(META))
        with pytest.raises(RuntimeError, match="meta"):  # meta tensors hold no value to read
            values.sum().item()
    assert waits.found == ["aten._to_copy.default from the host, blocking", "aten._local_scalar_dense.default"]
