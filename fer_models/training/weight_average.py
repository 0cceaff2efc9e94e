"""An exponential moving average of a model's weights, the model a recipe with ``ema_decay``
validates, selects, checkpoints and tests."""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    """A copy of ``model`` whose floating-point parameters and buffers follow the model's as an
    exponential moving average (``average += (1 - decay) * (current - average)`` after every
    optimiser step); integer buffers (BatchNorm's step count) are copied. One fused update per
    step, on the model's device, without waiting for it."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        self._floats = [(average, current) for average, current in pairs if average.is_floating_point()]
        self._others = [(average, current) for average, current in pairs if not average.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current weights."""
        if self._floats:
            averages, currents = zip(*self._floats)
            torch._foreach_lerp_(list(averages), list(currents), 1.0 - self.decay)
        for average, current in self._others:
            average.copy_(current)
