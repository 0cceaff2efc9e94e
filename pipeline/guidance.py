"""The guidance catalogue: every guidance type a store can hold, as data.

A run computes the types named in ``GuidanceConfig.types`` (``fer-preprocess --guidance LIST``),
nothing else, so nobody pays for guidance they do not use. Every type renders from the aligned
face and its 68 aligned landmarks only (never the source image), and is one of:

- a map, ``(C, H, H) uint8`` 0..255 covering the S x S aligned crop at the guidance size H;
- boxes, ``(R, 4) float32`` (left, top, right, bottom) in aligned pixels.

This module is the one list of types: the store schema (array shapes, channel names, flip
permutations), the contact sheet (one tile per family), the guided spatial transformer (which
maps it accepts) and the guidance table of docs/preprocessing.md derive from it. How each type
is rendered lives apart, in :mod:`pipeline.compute.renderers`, so reading a store needs neither
dlib nor OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.landmark_scheme import FLIP_PERMUTATION, N_LANDMARKS
from pipeline.stages.heatmaps import REGION_GROUPS
from pipeline.stages.regions import REGION_FLIP, REGIONS

FAMILIES = ("heatmap", "saliency", "mask", "regions")


@dataclass(frozen=True)
class GuidanceType:
    """One kind of guidance tensor.

    name: the ``--guidance`` value and the store array's name.
    description: one line for people (``--help``, the guidance table of docs/preprocessing.md).
    family: ``heatmap``, ``saliency``, ``mask`` or ``regions`` (:data:`FAMILIES`).
    channels: names of the C channels of a map, or of the R boxes.
    inputs: the stored arrays it renders from (``image`` and/or ``landmarks``), so a store can
        grow the type later from them alone (:func:`pipeline.compute.run.grow`).
    flip_permutation: the channel a horizontal flip maps each channel to (None: each maps onto
        itself), so training flips guidance consistently with the image.
    boxes: True for boxes, False for maps.
    model: the :class:`~pipeline.compute.model_files.ModelFiles` field of the user's model file
        it needs, if any.
    """

    name: str
    description: str
    family: str
    channels: tuple[str, ...]
    inputs: tuple[str, ...]
    flip_permutation: tuple[int, ...] | None = None
    boxes: bool = False
    model: str | None = None

    @property
    def single_map(self) -> bool:
        """A one-channel map (what the guided spatial transformer's localisation network sees)."""
        return not self.boxes and len(self.channels) == 1

    def array_shape(self) -> str:
        """The store array's shape, in the notation of docs/preprocessing.md."""
        return f"(N, {len(self.channels)}, 4) float32" if self.boxes else f"(N, {len(self.channels)}, H, H) uint8"


IMAGE_INPUT, LANDMARK_INPUT = ("image",), ("landmarks",)
GUIDANCE_TYPES: dict[str, GuidanceType] = {
    t.name: t
    for t in (
        GuidanceType(
            "heatmap",
            "sum of the 68 landmark Gaussians (sigma 0.13 of the inter-ocular distance: `--heatmap-sigma-iod`)",
            "heatmap",
            ("all_landmarks",),
            LANDMARK_INPUT,
        ),
        GuidanceType(
            "heatmap_regions",
            "Gaussians per region: brows, eyes, nose, mouth, jaw",
            "heatmap",
            tuple(REGION_GROUPS),
            LANDMARK_INPUT,
        ),
        GuidanceType(
            "heatmap_landmarks",
            "one Gaussian per landmark",
            "heatmap",
            tuple(f"landmark_{i}" for i in range(N_LANDMARKS)),
            LANDMARK_INPUT,
            flip_permutation=tuple(int(i) for i in FLIP_PERMUTATION),
        ),
        GuidanceType(
            "saliency",
            "spectral-residual saliency (Hou and Zhang 2007)",
            "saliency",
            ("spectral_residual",),
            IMAGE_INPUT,
        ),
        GuidanceType(
            "saliency_fine_grained",
            "fine-grained saliency (Montabone and Soto 2010; OpenCV contrib)",
            "saliency",
            ("fine_grained",),
            IMAGE_INPUT,
        ),
        GuidanceType(
            "saliency_network",
            "your saliency network as an ONNX file (`--saliency-model`), see below",
            "saliency",
            ("network",),
            IMAGE_INPUT,
            model="saliency_network",
        ),
        GuidanceType(
            "mask_binary",
            "guided-STN mask: brows, eyes, nose, mouth filled, jaw line; 255 on 0",
            "mask",
            ("binary",),
            LANDMARK_INPUT,
        ),
        GuidanceType("mask_soft", "the binary mask at 255 on 128", "mask", ("soft",), LANDMARK_INPUT),
        GuidanceType("mask_dilated", "the regions without the jaw, dilated", "mask", ("dilated",), LANDMARK_INPUT),
        GuidanceType(
            "mask_hull",
            "convex hull of the 68 landmarks (FERAtt's face region)",
            "mask",
            ("face_hull",),
            LANDMARK_INPUT,
        ),
        GuidanceType(
            "regions",
            "eye+brow, nose, mouth, cheek boxes in aligned pixels",
            "regions",
            tuple(REGIONS),
            LANDMARK_INPUT,
            flip_permutation=tuple(int(i) for i in REGION_FLIP),
            boxes=True,
        ),
    )
}
DEFAULT_GUIDANCE = ("heatmap", "saliency", "mask_soft")


def family_members(family: str) -> tuple[str, ...]:
    """The types of ``family``, the default one first, then in catalogue order."""
    members = [name for name, kind in GUIDANCE_TYPES.items() if kind.family == family]
    return tuple(sorted(members, key=lambda name: name not in DEFAULT_GUIDANCE))


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
        raise ValueError(f"unknown guidance type {unknown[0]!r}; choose from: {', '.join(GUIDANCE_TYPES)}, or all")
    return tuple(name for name in GUIDANCE_TYPES if name in names)


def markdown_table_rows() -> list[str]:
    """The first three columns of the guidance table in docs/preprocessing.md: type, array, what."""
    return [f"| `{kind.name}` | `{kind.array_shape()}` | {kind.description} |" for kind in GUIDANCE_TYPES.values()]
