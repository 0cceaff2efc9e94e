"""Landmark heatmaps: Gaussians centred on the aligned landmarks."""

from __future__ import annotations

import numpy as np


def guidance_pixel_centres(aligned_size: int, guidance_size: int) -> np.ndarray:
    """Centres of the H guidance pixels along one axis, in aligned pixels: ``(H,) float64``.

    Guidance maps cover the same square as the S x S aligned crop: guidance pixel j spans aligned
    pixels [j * S / H, (j + 1) * S / H).
    """
    return (np.arange(guidance_size, dtype=np.float64) + 0.5) * (aligned_size / guidance_size)


def render_landmark_heatmap(
    landmarks: np.ndarray, aligned_size: int, guidance_size: int, sigma: float
) -> np.ndarray:
    """Sum of one isotropic Gaussian per landmark, scaled so the maximum is 255.

    Args:
        landmarks: ``(K, 2)`` (x, y) in aligned pixels (K = 68 for a face).
        aligned_size: S, the aligned crop the landmarks live in.
        guidance_size: H, side of the output map (any H; the map covers the whole S x S crop).
        sigma: standard deviation in aligned pixels.

    Returns:
        ``(H, H) uint8``, 0..255; all zeros when there are no landmarks.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.size == 0:
        return np.zeros((guidance_size, guidance_size), dtype=np.uint8)
    centres = guidance_pixel_centres(aligned_size, guidance_size)
    # Separable: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2 / 2s^2) * exp(-dy^2 / 2s^2).
    along_x = np.exp(-((centres[None, :] - points[:, 0:1]) ** 2) / (2.0 * sigma**2))  # (K, H)
    along_y = np.exp(-((centres[None, :] - points[:, 1:2]) ** 2) / (2.0 * sigma**2))  # (K, H)
    heat = along_y.T @ along_x  # (H rows, H columns)
    peak = heat.max()
    if peak <= 0:
        return np.zeros((guidance_size, guidance_size), dtype=np.uint8)
    return np.round(heat * (255.0 / peak)).astype(np.uint8)
