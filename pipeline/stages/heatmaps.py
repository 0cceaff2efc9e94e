"""Landmark heatmaps: Gaussians centred on the aligned landmarks.

Maps cover the S x S aligned crop at H x H pixels (H independent of S); sigma is in aligned pixels.
"""

from __future__ import annotations

import numpy as np

from pipeline.landmark_scheme import (
    INNER_LIPS,
    JAW,
    LEFT_BROW,
    LEFT_EYE,
    LOWER_NOSE,
    N_LANDMARKS,
    NOSE_BRIDGE,
    OUTER_LIPS,
    RIGHT_BROW,
    RIGHT_EYE,
)

# Channels of the per-region heatmap (PAL): both brows in one channel, both eyes in one, so a
# horizontal flip maps every channel onto itself.
REGION_GROUPS: dict[str, tuple[int, ...]] = {
    "brows": (*RIGHT_BROW, *LEFT_BROW),
    "eyes": (*RIGHT_EYE, *LEFT_EYE),
    "nose": (*NOSE_BRIDGE, *LOWER_NOSE),
    "mouth": (*OUTER_LIPS, *INNER_LIPS),
    "jaw": tuple(JAW),
}
LANDMARK_GROUPS: tuple[tuple[int, ...], ...] = tuple((i,) for i in range(N_LANDMARKS))


def guidance_pixel_centres(aligned_size: int, guidance_size: int) -> np.ndarray:
    """Centres of the H guidance pixels along one axis, in aligned pixels: ``(H,) float64``.

    Guidance maps cover the same square as the S x S aligned crop: guidance pixel j spans aligned
    pixels [j * S / H, (j + 1) * S / H).
    """
    return (np.arange(guidance_size, dtype=np.float64) + 0.5) * (aligned_size / guidance_size)


def render_grouped_heatmaps(
    landmarks: np.ndarray,
    groups: tuple[tuple[int, ...], ...],
    aligned_size: int,
    guidance_size: int,
    sigma: float,
) -> np.ndarray:
    """One heatmap channel per group of landmarks, each the sum of its Gaussians scaled to peak 255.

    Args:
        landmarks: ``(K, 2)`` (x, y) in aligned pixels (K = 68 for a face).
        groups: landmark indices of each channel, e.g. ``((0,), (1,), ...)`` for one channel per
            landmark or :data:`REGION_GROUPS` for one per facial region.
        aligned_size: S.
        guidance_size: H.
        sigma: standard deviation in aligned pixels.

    Returns:
        ``(len(groups), H, H) uint8``, 0..255 per channel.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    centres = guidance_pixel_centres(aligned_size, guidance_size)
    # Separable: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2 / 2s^2) * exp(-dy^2 / 2s^2).
    along_x = np.exp(-((centres[None, :] - points[:, 0:1]) ** 2) / (2.0 * sigma**2))  # (K, H)
    along_y = np.exp(-((centres[None, :] - points[:, 1:2]) ** 2) / (2.0 * sigma**2))  # (K, H)
    out = np.zeros((len(groups), guidance_size, guidance_size), dtype=np.uint8)
    for channel, indices in enumerate(groups):
        heat = along_y[list(indices)].T @ along_x[list(indices)]
        peak = heat.max()
        if peak > 0:
            out[channel] = np.round(heat * (255.0 / peak))
    return out
