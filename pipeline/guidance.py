"""The guidance types a run can compute, each stored as its own array under its own name.

A run computes the types named in ``GuidanceConfig.types`` (``fer-preprocess --guidance LIST``),
nothing else, so nobody pays for guidance they do not use. Every type renders from the aligned
face and its 68 aligned landmarks only (never the source image), and is one of:

- a map, ``(C, H, H) uint8`` 0..255 covering the S x S aligned crop at the guidance size H;
- boxes, ``(R, 4) float32`` (left, top, right, bottom) in aligned pixels.

``inputs`` names the stored arrays a type renders from, so a store can grow a type later from
its stored aligned faces and landmarks alone (:func:`pipeline.run.grow`).

``channels`` names the C channels (or R boxes); ``flip_permutation`` says which channel a
horizontal flip maps each channel to (None: every channel maps onto itself), so training can flip
guidance consistently with the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.stages.heatmaps import LANDMARK_GROUPS, REGION_GROUPS, render_grouped_heatmaps
from pipeline.stages.landmarks import FLIP_PERMUTATION, N_LANDMARKS
from pipeline.stages.masks import (
    render_binary_landmark_mask, render_dilated_landmark_mask, render_face_hull_mask, soften_mask,
)  # fmt: skip
from pipeline.stages.regions import REGION_FLIP, REGIONS, region_boxes
from pipeline.stages.saliency import fine_grained_saliency, network_saliency, spectral_residual_saliency

if TYPE_CHECKING:
    from pipeline.config import GuidanceConfig
    from pipeline.models import LoadedModels

Renderer = Callable[[np.ndarray, np.ndarray, int, "GuidanceConfig", "LoadedModels"], np.ndarray]
IMAGE_INPUT, LANDMARK_INPUT = ("image",), ("landmarks",)


@dataclass(frozen=True)
class GuidanceType:
    """One kind of guidance tensor.

    name: the option value and the store array's name.
    render: ``(aligned image (S, S) or (S, S, 3) uint8, landmarks (68, 2) float32 aligned pixels,
        S, guidance config, this thread's loaded models) -> (C, H, H) uint8`` map or
        ``(R, 4) float32`` boxes.
    inputs: the store arrays it renders from (``image`` and/or ``landmarks``).
    boxes: True for boxes, False for maps.
    model: the :class:`~pipeline.models.ModelFiles` field of the model file it needs, if any.
    """

    name: str
    description: str
    channels: tuple[str, ...]
    render: Renderer
    inputs: tuple[str, ...]
    flip_permutation: tuple[int, ...] | None = None
    boxes: bool = False
    model: str | None = None


def _heatmap(groups: tuple[tuple[int, ...], ...]) -> Renderer:
    return lambda image, landmarks, s, g, m: render_grouped_heatmaps(landmarks, groups, s, g.size, g.heatmap_sigma)


def _mask(render: Callable[[np.ndarray, int, int], np.ndarray]) -> Renderer:
    return lambda image, landmarks, s, g, m: render(landmarks, s, g.size)[None]


def _saliency(render: Callable[[np.ndarray, int], np.ndarray]) -> Renderer:
    return lambda image, landmarks, s, g, m: render(image, g.size)[None]


def _network_saliency(image, landmarks, s, g, models) -> np.ndarray:
    return network_saliency(models.saliency_network, image, g.size)[None]


GUIDANCE_TYPES: dict[str, GuidanceType] = {
    t.name: t
    for t in (
        GuidanceType("heatmap", "sum of 68 landmark Gaussians, one channel (PAL)",
                     ("all_landmarks",), _heatmap((tuple(range(N_LANDMARKS)),)), LANDMARK_INPUT),
        GuidanceType("heatmap_regions", "landmark Gaussians per region: brows, eyes, nose, mouth, jaw",
                     tuple(REGION_GROUPS), _heatmap(tuple(REGION_GROUPS.values())), LANDMARK_INPUT),
        GuidanceType("heatmap_landmarks", "one Gaussian per landmark, 68 channels",
                     tuple(f"landmark_{i}" for i in range(N_LANDMARKS)), _heatmap(LANDMARK_GROUPS), LANDMARK_INPUT,
                     flip_permutation=tuple(int(i) for i in FLIP_PERMUTATION)),
        GuidanceType("saliency", "spectral-residual saliency (Hou and Zhang 2007)",
                     ("spectral_residual",), _saliency(spectral_residual_saliency), IMAGE_INPUT),
        GuidanceType("saliency_fine_grained", "fine-grained saliency (Montabone and Soto 2010)",
                     ("fine_grained",), _saliency(fine_grained_saliency), IMAGE_INPUT),
        GuidanceType("saliency_network", "a learned saliency network given as an ONNX file (--saliency-model)",
                     ("network",), _network_saliency, IMAGE_INPUT, model="saliency_network"),
        GuidanceType("mask_binary", "guided-STN mask: filled brows, eyes, nose, mouth and the jaw line, 255 on 0",
                     ("binary",), _mask(render_binary_landmark_mask), LANDMARK_INPUT),
        GuidanceType("mask_soft", "guided-STN soft mask: the binary mask at 255 on 128",
                     ("soft",), _mask(lambda lm, s, h: soften_mask(render_binary_landmark_mask(lm, s, h))), LANDMARK_INPUT),
        GuidanceType("mask_dilated", "guided-STN dilated mask: the regions without the jaw, dilated",
                     ("dilated",), _mask(render_dilated_landmark_mask), LANDMARK_INPUT),
        GuidanceType("mask_hull", "convex hull of the 68 landmarks: the face region (FERAtt target)",
                     ("face_hull",), _mask(render_face_hull_mask), LANDMARK_INPUT),
        GuidanceType("regions", "local region boxes from the inter-ocular distance (region networks)",
                     tuple(REGIONS), lambda image, landmarks, s, g, m: region_boxes(landmarks, s), LANDMARK_INPUT,
                     flip_permutation=tuple(int(i) for i in REGION_FLIP), boxes=True),
    )
}  # fmt: skip
DEFAULT_GUIDANCE = ("heatmap", "saliency", "mask_soft")


def resolve_guidance(names: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Guidance type names in catalogue order, from a tuple of names or a comma-separated string
    (``all`` for every type that needs no model file of the user's: ``saliency_network`` is only
    computed when named).

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    if list(names) == ["all"]:
        return tuple(name for name, kind in GUIDANCE_TYPES.items() if kind.model is None)
    unknown = [name for name in names if name not in GUIDANCE_TYPES]
    if unknown:
        raise ValueError(
            f"unknown guidance type {unknown[0]!r}; choose from: {', '.join(GUIDANCE_TYPES)}, or all"
        )
    return tuple(name for name in GUIDANCE_TYPES if name in names)
