"""Training-time augmentation of a batch: one geometric transform for the image and every guidance
tensor, photometric changes on the image alone.

Frames: ``image`` is ``(B, C, S, S)``; guidance maps ``(B, C, H, H)`` cover the same S x S crop at
their own resolution H; ``landmarks`` ``(B, 68, 2)`` and region boxes ``(B, R, 4)`` (left, top,
right, bottom) are in aligned pixels of the S x S crop, origin at the top-left pixel's corner.

The affine transform is drawn once per sample in normalised coordinates (-1 .. 1 from the first
pixel's outer edge to the last one's, PyTorch's ``align_corners=False``), where one matrix means
the same motion at every resolution, and applied with ``torch.nn.functional.affine_grid`` and
``grid_sample`` to the image and each map; points and boxes are moved by the same matrix. A
horizontal flip also swaps left and right: landmark indices by the store's
``landmark_flip_permutation``, the channels of a map (or boxes) by its ``flip_permutation``.

Every random draw, and the inverse of each transform, is made on the CPU and reaches the device
by a non-blocking copy from pinned memory: an augmented CUDA step never makes the host wait for
the GPU (``bench/gpu.py`` counts such waits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """How strong each augmentation is; ``AugmentConfig.off()`` does nothing.

    flip: probability of a horizontal flip. degrees: rotation drawn from +-degrees. scale: zoom
    drawn from 1 +- scale. translate: shift drawn from +- translate of the crop side, per axis.
    brightness: added to the [0, 1] image, drawn from +- brightness. contrast: the image's
    deviation from its mean is scaled by 1 +- contrast.
    """

    flip: float = 0.5
    degrees: float = 10.0
    scale: float = 0.1
    translate: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _uniform(n: int, half_width: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1) * half_width


def random_transforms(n: int, config: AugmentConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` transforms on the CPU (the same draws on any device).

    Returns:
        ``(flip (n,) bool, forward (n, 2, 3) float32)``: ``forward`` maps normalised coordinates
        of the (flipped) input to the output.
    """
    flip = torch.rand(n, generator=generator) < config.flip
    angle = _uniform(n, math.radians(config.degrees), generator)
    scale = 1 + _uniform(n, config.scale, generator)
    shift = torch.stack([_uniform(n, 2 * config.translate, generator), _uniform(n, 2 * config.translate, generator)], 1)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    forward = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    return flip, forward


def to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``values`` on ``device``; a CPU tensor bound for CUDA goes through pinned memory, without
    waiting for the GPU."""
    if values.device == device:
        return values
    if device.type == "cuda" and values.device.type == "cpu":
        values = values.pin_memory()
    return values.to(device, non_blocking=True)


def _inverse(forward: torch.Tensor) -> torch.Tensor:
    """``(n, 2, 3)`` inverse of affine maps ``(n, 2, 3)``."""
    linear = torch.linalg.inv(forward[:, :, :2])
    return torch.cat([linear, -(linear @ forward[:, :, 2:])], dim=2)


def _move_points(points: torch.Tensor, forward: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, P, 2)`` aligned pixels moved by normalised ``forward`` ``(B, 2, 3)``."""
    normalised = points * (2.0 / size) - 1
    moved = normalised @ forward[:, :, :2].transpose(1, 2) + forward[:, :, 2].unsqueeze(1)
    return (moved + 1) * (size / 2.0)


def flip_batch(
    batch: dict[str, torch.Tensor], flip: torch.Tensor, size: int, permutations: dict[str, torch.Tensor | None]
) -> dict[str, torch.Tensor]:
    """Mirror the samples where ``flip`` ``(B,) bool`` (on the CPU) is set.

    Args:
        batch: ``image`` and guidance maps (flipped along x), ``landmarks`` and boxes (x -> S - x).
        size: S.
        permutations: per key, the index a flip maps each landmark / channel / box to (None or
            absent: unchanged). ``landmarks`` uses the store's landmark flip permutation.
    """
    out = dict(batch)
    if not bool(flip.any()):
        return out
    device = next(iter(batch.values())).device
    where = to_device(flip, device)
    for name, values in batch.items():
        if name in ("index", "target"):
            continue
        permutation = permutations.get(name)
        if name == "landmarks":
            mirrored = values.clone()
            mirrored[..., 0] = size - mirrored[..., 0]
        elif values.dim() == 3 and values.shape[-1] == 4:  # boxes (B, R, 4): left <-> right edges
            mirrored = torch.stack([size - values[..., 2], values[..., 1], size - values[..., 0], values[..., 3]], -1)
        else:  # (B, C, H, W) maps
            mirrored = values.flip(-1)
        if permutation is not None:
            mirrored = mirrored[:, to_device(permutation, device)]
        shape = (-1,) + (1,) * (values.dim() - 1)
        out[name] = torch.where(where.view(shape), mirrored, values)
    return out


def warp_batch(batch: dict[str, torch.Tensor], forward: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
    """Apply normalised affine maps ``forward`` ``(B, 2, 3)`` (on the CPU) to every tensor of ``batch``.

    Maps (float, ``(B, C, h, w)``) are resampled bilinearly with zeros outside; landmarks are
    moved; boxes become the axis-aligned box around their moved corners, clipped to the crop.
    """
    out = dict(batch)
    device = next(iter(batch.values())).device
    sample_from = to_device(_inverse(forward), device)  # inverted on the CPU: CUDA's inverse waits for its check
    forward = to_device(forward, device)
    for name, values in batch.items():
        if name in ("index", "target"):
            continue
        if name == "landmarks":
            out[name] = _move_points(values, forward, size)
        elif values.dim() == 3 and values.shape[-1] == 4:
            left, top, right, bottom = values.unbind(-1)
            corners = torch.stack(
                [torch.stack(c, -1) for c in ((left, top), (right, top), (left, bottom), (right, bottom))], 2
            )
            moved = _move_points(corners.flatten(1, 2), forward, size).view(*corners.shape)
            out[name] = torch.cat([moved.amin(2), moved.amax(2)], -1).clamp(0, size)
        else:
            grid = F.affine_grid(sample_from.to(values.dtype), list(values.shape), align_corners=False)
            out[name] = F.grid_sample(values, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out


def photometric(image: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random brightness and contrast of ``(B, C, S, S)`` float images in [0, 1]; stays in [0, 1]."""
    n = image.shape[0]
    drawn = torch.stack([_uniform(n, config.brightness, generator), 1 + _uniform(n, config.contrast, generator)])
    brightness, contrast = to_device(drawn.to(image.dtype), image.device).view(2, n, 1, 1, 1)
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    return ((image - mean) * contrast + mean + brightness).clamp(0, 1)


def augment_batch(
    batch: dict[str, torch.Tensor],
    config: AugmentConfig,
    permutations: dict[str, torch.Tensor | None],
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Flip, warp (image and every guidance tensor alike) and change the image's brightness and
    contrast. ``batch`` holds float tensors on any device (see the module docstring for frames);
    random draws come from ``generator`` on the CPU, so a seed gives the same batch on any device.
    """
    size = batch["image"].shape[-1]
    flip, forward = random_transforms(batch["image"].shape[0], config, generator)
    out = flip_batch(batch, flip, size, permutations)
    if config.degrees or config.scale or config.translate:
        out = warp_batch(out, forward, size)
    if config.brightness or config.contrast:
        out["image"] = photometric(out["image"], config, generator)
    return out
