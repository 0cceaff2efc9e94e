"""How each guidance type of the catalogue (:mod:`pipeline.guidance`) is rendered.

A renderer takes ``(aligned image (S, S) or (S, S, 3) uint8, landmarks (68, 2) float32 in aligned
pixels, S, the guidance config, this thread's loaded models)`` and returns the type's
``(C, H, H) uint8`` map or ``(R, 4) float32`` boxes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import ConfigError
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.landmark_scheme import N_LANDMARKS
from pipeline.stages.align import inter_ocular_distance
from pipeline.stages.heatmaps import LANDMARK_GROUPS, REGION_GROUPS, render_grouped_heatmaps
from pipeline.stages.masks import (
    render_binary_landmark_mask,
    render_dilated_landmark_mask,
    render_face_hull_mask,
    soften_mask,
)
from pipeline.stages.regions import region_boxes
from pipeline.stages.saliency import fine_grained_saliency, network_saliency, spectral_residual_saliency

if TYPE_CHECKING:
    from pipeline.compute.model_files import LoadedModels
    from pipeline.config import GuidanceConfig

Renderer = Callable[[np.ndarray, np.ndarray, int, "GuidanceConfig", "LoadedModels"], np.ndarray]


def _heatmap(groups: tuple[tuple[int, ...], ...]) -> Renderer:
    return lambda image, landmarks, s, g, m: render_grouped_heatmaps(
        landmarks, groups, s, g.size, heatmap_sigma(landmarks, g)
    )


# No landmark Gaussian is narrower than this many aligned pixels (a face whose eyes coincide).
MIN_SIGMA = 0.25


def heatmap_sigma(landmarks: np.ndarray, guidance: GuidanceConfig) -> float:
    """The Gaussians' sigma for one face's ``(68, 2)`` aligned landmarks, in aligned pixels: the
    configured pixels, or the configured share of the face's inter-ocular distance."""
    if guidance.heatmap_sigma:
        return guidance.heatmap_sigma
    return max(MIN_SIGMA, guidance.heatmap_sigma_iod * inter_ocular_distance(landmarks))


def _mask(render: Callable[[np.ndarray, int, int], np.ndarray]) -> Renderer:
    return lambda image, landmarks, s, g, m: render(landmarks, s, g.size)[None]


def _saliency(render: Callable[[np.ndarray, int], np.ndarray]) -> Renderer:
    return lambda image, landmarks, s, g, m: render(image, g.size)[None]


def _network_saliency(
    image: np.ndarray, landmarks: np.ndarray, s: int, g: GuidanceConfig, models: LoadedModels
) -> np.ndarray:
    if models.saliency_network is None:
        raise ConfigError("the saliency_network guidance type needs --saliency-model NET.onnx")
    return network_saliency(models.saliency_network, image, g.size)[None]


RENDERERS: dict[str, Renderer] = {
    "heatmap": _heatmap((tuple(range(N_LANDMARKS)),)),
    "heatmap_regions": _heatmap(tuple(REGION_GROUPS.values())),
    "heatmap_landmarks": _heatmap(LANDMARK_GROUPS),
    "saliency": _saliency(spectral_residual_saliency),
    "saliency_fine_grained": _saliency(fine_grained_saliency),
    "saliency_network": _network_saliency,
    "mask_binary": _mask(render_binary_landmark_mask),
    "mask_soft": _mask(lambda landmarks, s, h: soften_mask(render_binary_landmark_mask(landmarks, s, h))),
    "mask_dilated": _mask(render_dilated_landmark_mask),
    "mask_hull": _mask(render_face_hull_mask),
    "regions": lambda image, landmarks, s, g, m: region_boxes(landmarks, s),
}
assert RENDERERS.keys() == GUIDANCE_TYPES.keys(), "every catalogued guidance type has one renderer"
