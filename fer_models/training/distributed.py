"""Data-parallel training over several processes: ``torchrun --nproc-per-node N fer-train ...``.

torchrun starts N processes and tells each its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``.
Every rank builds the same model from the same seed and draws the same epoch order; of each
global batch of B samples it keeps its own contiguous share of B / N (:func:`fer_models.data.stream.rank_share`), so
across the ranks every sample is seen exactly once per epoch, in the batches one process would
make, whatever N. DistributedDataParallel averages the gradients: a step is one process's step on
the whole global batch, but for BatchNorm's batch statistics (each rank's own) and the order of
floating-point sums. Evaluation is shared the same way and its losses, confusion matrices and
predictions are gathered, so every rank selects the same epoch. Rank 0 alone writes the run
directory. CUDA ranks use NCCL, one GPU each (``cuda:LOCAL_RANK``); CPU ranks use gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the run's processes: ``rank`` of ``size``, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Ranks:
        """What torchrun set (one process when it did not)."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls()
        rank = int(os.environ["RANK"])
        return cls(rank, size, int(os.environ.get("LOCAL_RANK", rank)))

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """The rank that writes the run directory and reports."""
        return self.rank == 0


def start(ranks: Ranks, device: torch.device, batch_size: int) -> torch.device:
    """Join the run's process group (once per process) and return this rank's device.

    Raises:
        ConfigError: the global batch does not split evenly among the ranks.
    """
    if not ranks.distributed:
        return device
    if batch_size % ranks.size:
        raise ConfigError(
            f"--batch-size {batch_size} is the global batch; it must divide among the {ranks.size} processes"
        )
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def backend() -> str | None:
    """The process group's backend (``nccl``, ``gloo``), None in a single process."""
    return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else None


def sum_across(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over the ranks (in place; unchanged in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gathered(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (``[value]`` in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, value)
    return everyone


def barrier() -> None:
    """Wait until every rank is here (for files rank 0 wrote)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish() -> None:
    """Leave the process group :func:`start` joined, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
