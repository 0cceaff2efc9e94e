"""Reading feature maps at aligned-pixel coordinates: points (keypoint features) and boxes (ROI
align), both with bilinear ``grid_sample``.

A feature map ``(B, C, h, w)`` covers the S x S aligned crop: feature pixel j spans aligned pixels
[j S / w, (j + 1) S / w), so a point on the centre of feature pixel j reads exactly that pixel.
Points and boxes are in aligned pixels with the origin at the top-left pixel's corner, the
store's frame.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def to_normalised(points: torch.Tensor, size: int) -> torch.Tensor:
    """Aligned pixels (origin at a corner) -> ``grid_sample`` coordinates (``align_corners=False``)."""
    return points * (2.0 / size) - 1.0


def sample_points(features: torch.Tensor, points: torch.Tensor, size: int) -> torch.Tensor:
    """Features at points.

    Args:
        features: ``(B, C, h, w)`` maps covering the S x S crop.
        points: ``(B, P, 2)`` (x, y) in aligned pixels.
        size: S.

    Returns:
        ``(B, P, C)``; zeros outside the crop.
    """
    grid = to_normalised(points, size).unsqueeze(1).to(features.dtype)  # (B, 1, P, 2)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, :, 0].transpose(
        1, 2
    )


def roi_align(features: torch.Tensor, boxes: torch.Tensor, size: int, output: int) -> torch.Tensor:
    """Each box's content resampled to ``output x output`` (bilinear, one sample per output cell
    centre).

    Args:
        features: ``(B, C, h, w)`` maps covering the S x S crop.
        boxes: ``(B, R, 4)`` (left, top, right, bottom) in aligned pixels.
        size: S.
        output: side of each region's grid.

    Returns:
        ``(B, R, C, output, output)``.
    """
    b, r = boxes.shape[:2]
    steps = (torch.arange(output, device=boxes.device, dtype=boxes.dtype) + 0.5) / output  # (o,)
    left, top, right, bottom = boxes.unbind(-1)  # (B, R)
    xs = left[..., None] + (right - left)[..., None] * steps  # (B, R, o)
    ys = top[..., None] + (bottom - top)[..., None] * steps
    grid = torch.stack(torch.broadcast_tensors(xs[:, :, None, :], ys[:, :, :, None]), dim=-1)  # (B, R, o, o, 2)
    grid = to_normalised(grid, size).reshape(b, r * output, output, 2).to(features.dtype)
    sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled.view(b, features.shape[1], r, output, output).transpose(1, 2)
