"""One optimiser step of a run as a rank of a data-parallel group would make it (for spawn)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fer_models.training.config import TrainConfig
from fer_models.training.distributed import finish
from fer_models.training.engine import Trainer, prepare_batch


def one_step(rank: int, world: int, store: str, out: str, port: int) -> None:
    """Take the first batch of epoch 1 (this rank's share of it) through one SGD step, BatchNorm on
    its running statistics (so no rank's batch statistics enter); rank 0 saves the weights before and
    after to ``out/world<world>-before.pt`` and ``out/world<world>.pt``."""
    if world > 1:
        os.environ.update(
            RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
    torch.set_num_threads(1)
    config = TrainConfig(
        store=store, model="cnn", options={"dropout": 0.0}, batch_size=16, seed=1, augment=False,
        balance="none", recipe="sgd-cosine", warmup_epochs=0.0, device="cpu",
    )  # fmt: skip
    trainer = Trainer(config)
    if rank == 0:
        torch.save(trainer.model.state_dict(), Path(out) / f"world{world}-before.pt")
    trainer.model.eval()
    trainer.train_batches.set_epoch(1)
    batch = next(iter(trainer._loader(trainer.train_batches)))
    trainer._set_lr(0, len(trainer.train_batches))
    trainer.train_step(prepare_batch(batch, trainer.device))
    if rank == 0:
        torch.save(trainer.model.state_dict(), Path(out) / f"world{world}.pt")
    finish()
