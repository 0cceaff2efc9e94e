"""Training-time augmentation of a batch: one geometric transform for the image and every guidance
tensor, random erasing of the same rectangle in the image and every guidance map, photometric
changes on the image alone.

Frames: ``image`` is ``(B, C, S, S)``; guidance maps ``(B, C, H, H)`` cover the same S x S crop at
their own resolution H; ``landmarks`` ``(B, 68, 2)`` and region boxes ``(B, R, 4)`` (left, top,
right, bottom) are in aligned pixels of the S x S crop, origin at the top-left pixel's corner.

The affine transform is drawn once per sample in normalised coordinates (-1 .. 1 from the first
pixel's outer edge to the last one's, PyTorch's ``align_corners=False``), where one matrix means
the same motion at every resolution, and applied with ``torch.nn.functional.affine_grid`` and
``grid_sample`` to the image and each map; points and boxes are moved by the same matrix. A
horizontal flip also swaps left and right: landmark indices by the store's
``landmark_flip_permutation``, the channels of a map (or boxes) by its ``flip_permutation``.
A random resized crop (torchvision's ``RandomResizedCrop``: a share of the area from
``crop_area`` to 1, an aspect ratio from 3/4 to 4/3, anywhere inside the face, resized to the
whole) is one more affine map, composed with the others before they are applied.

Random erasing (torchvision's ``RandomErasing``: with probability ``erase``, a rectangle of 2% to
33% of the area, aspect ratio 0.3 to 3.3, set to 0) clears the same rectangle, in normalised
coordinates, of the image and of every guidance map: the guidance does not describe what the
image no longer shows. Landmarks and boxes stay: they are where the face is, erased or not.

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
    deviation from its mean is scaled by 1 +- contrast. crop_area: the smallest share of the area
    a random resized crop keeps (1: no crop). erase: the probability of random erasing.
    """

    flip: float = 0.5
    degrees: float = 10.0
    scale: float = 0.1
    translate: float = 0.05
    brightness: float = 0.2
    contrast: float = 0.2
    crop_area: float = 1.0
    erase: float = 0.0

    @classmethod
    def off(cls) -> AugmentConfig:
        return cls(flip=0.0, degrees=0.0, scale=0.0, translate=0.0, brightness=0.0, contrast=0.0)

    @property
    def warps(self) -> bool:
        """Whether any affine change beside the flip is drawn."""
        return bool(self.degrees or self.scale or self.translate or self.crop_area < 1)


def _uniform(n: int, half_width: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1) * half_width


def _rectangles(
    n: int, area: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` rectangles inside the face, as ``(half sides (n, 2), centres (n, 2))`` in normalised
    coordinates: a share of the area drawn from ``area``, an aspect ratio (width / height) drawn
    log-uniformly from ``ratio``, the sides clipped to the face, the centre anywhere that keeps
    the rectangle inside."""
    share = area[0] + torch.rand(n, generator=generator) * (area[1] - area[0])
    log_ratio = math.log(ratio[0]) + torch.rand(n, generator=generator) * (math.log(ratio[1]) - math.log(ratio[0]))
    half = torch.stack([(share * log_ratio.exp()).sqrt(), (share / log_ratio.exp()).sqrt()], 1).clamp(max=1.0)
    centre = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - half)
    return half, centre


def random_transforms(n: int, config: AugmentConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` transforms on the CPU (the same draws on any device).

    Returns:
        ``(flip (n,) bool, forward (n, 2, 3) float32)``: ``forward`` maps normalised coordinates
        of the (flipped) input to the output: the resized crop's map first (when ``crop_area`` <
        1), then rotation, zoom and shift.
    """
    flip = torch.rand(n, generator=generator) < config.flip
    angle = _uniform(n, math.radians(config.degrees), generator)
    scale = 1 + _uniform(n, config.scale, generator)
    shift = torch.stack([_uniform(n, 2 * config.translate, generator), _uniform(n, 2 * config.translate, generator)], 1)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    forward = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    if config.crop_area < 1:  # the crop's box [centre - half, centre + half] onto the whole face
        half, centre = _rectangles(n, (config.crop_area, 1.0), (3 / 4, 4 / 3), generator)
        crop = torch.cat([torch.diag_embed(1 / half), (-centre / half).unsqueeze(2)], 2)  # (n, 2, 3)
        forward = _compose(forward, crop)
    return flip, forward


def _compose(second: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """``(n, 2, 3)`` affine maps: ``first``, then ``second``."""
    linear = second[:, :, :2] @ first[:, :, :2]
    return torch.cat([linear, second[:, :, :2] @ first[:, :, 2:] + second[:, :, 2:]], 2)


def erase_batch(
    batch: dict[str, torch.Tensor], config: AugmentConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random erasing: with probability ``config.erase`` per sample, set one rectangle (drawn on the
    CPU, see the module docstring) to 0 in the image and in every guidance map ``(B, C, h, w)``,
    the same rectangle at each map's resolution (pixel centres inside it)."""
    n = batch["image"].shape[0]
    erased = torch.rand(n, generator=generator) < config.erase
    half, centre = _rectangles(n, (0.02, 1 / 3), (0.3, 1 / 0.3), generator)
    bounds = torch.cat([centre - half, centre + half], 1).masked_fill(~erased.unsqueeze(1), 2.0)  # off: outside
    device = batch["image"].device
    left, top, right, bottom = to_device(bounds, device).view(n, 4, 1, 1).unbind(1)  # (n, 1, 1) each
    out = dict(batch)
    for name, values in batch.items():
        if name in ("index", "target", "landmarks") or values.dim() != 4:
            continue
        h, w = values.shape[-2:]
        ys = ((torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (2 / h) - 1).view(1, h, 1)
        xs = ((torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (2 / w) - 1).view(1, 1, w)
        inside = (xs >= left) & (xs < right) & (ys >= top) & (ys < bottom)  # (n, h, w)
        out[name] = values.masked_fill(inside.unsqueeze(1), 0.0)
    return out


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
    adjusted: torch.Tensor = ((image - mean) * contrast + mean + brightness).clamp(0, 1)
    return adjusted


def augment_batch(
    batch: dict[str, torch.Tensor],
    config: AugmentConfig,
    permutations: dict[str, torch.Tensor | None],
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Flip, warp (image and every guidance tensor alike), change the image's brightness and
    contrast, and erase (image and guidance maps alike). ``batch`` holds float tensors on any
    device (see the module docstring for frames); random draws come from ``generator`` on the CPU,
    so a seed gives the same batch on any device.
    """
    size = batch["image"].shape[-1]
    flip, forward = random_transforms(batch["image"].shape[0], config, generator)
    out = flip_batch(batch, flip, size, permutations)
    if config.warps:
        out = warp_batch(out, forward, size)
    if config.brightness or config.contrast:
        out["image"] = photometric(out["image"], config, generator)
    if config.erase:
        out = erase_batch(out, config, generator)
    return out
