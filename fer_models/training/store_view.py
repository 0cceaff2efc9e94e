"""What training needs to know about a store, and the model sized for it."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import zarr

from fer_models.models.registry import WEIGHT_FILE_OPTIONS, create_model, get_model_entry, model_inputs, model_reads
from fer_models.training.config import TrainConfig
from pipeline.errors import ConfigError
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.stages.crop_framing import CropFraming
from pipeline.store import Provenance, array_in, open_store, provenance_of, read_array, stored_guidance
from pipeline.store.schema import (
    ALIGNED_FROM_SRC,
    FLIP_PERMUTATION_ATTR,
    IMAGE,
    LANDMARKS,
    LANDMARKS_SRC,
    STATUS,
    Status,
)


@dataclass
class StoreView:
    """What training needs to know about a store: its group, provenance and flip permutations."""

    path: str
    provenance: Provenance
    image_shape: tuple[int, int, int]  # (C, S, S)
    guidance_size: int
    permutations: dict[str, torch.Tensor | None]

    @classmethod
    def open(cls, path: str) -> StoreView:
        group = open_store(path)
        provenance = provenance_of(group)
        permutations: dict[str, torch.Tensor | None] = {LANDMARKS: torch.tensor(provenance.landmark_flip_permutation)}
        for name in stored_guidance(group):
            permutation = array_in(group, name).attrs.get(FLIP_PERMUTATION_ATTR)
            permutations[name] = None if permutation is None else torch.tensor(permutation)
        channels, height, width = array_in(group, IMAGE).shape[1:]
        return cls(
            path,
            provenance,
            (channels, height, width),
            provenance.preprocess_config.guidance.size,
            permutations,
        )

    @functools.cached_property
    def crop_framing(self) -> CropFraming | None:
        """Where a store of kept crops puts the face (:func:`store_crop_framing`, read once, when
        a checkpoint first records it: it reads every sample's landmarks); None for other stores."""
        if self.provenance.preprocess_config.align.mode != "crop":
            return None
        return store_crop_framing(open_store(self.path))

    def check_inputs(self, model_name: str, inputs: tuple[str, ...]) -> None:
        """Raises ConfigError naming each array the model reads that the store lacks, and the
        preprocessing option that produces it."""
        held = {IMAGE, LANDMARKS, *self.permutations}
        missing = [name for name in inputs if name not in held]
        if missing:
            guidance = [name for name in missing if name in GUIDANCE_TYPES]
            hint = (
                f"; add it with `fer-preprocess {self.path} --guidance {','.join(guidance)}` "
                f"(or build with --guidance ...,{','.join(guidance)})"
                if guidance
                else ""
            )
            raise ConfigError(
                f"model {model_name!r} reads {', '.join(missing)}, which the store {self.path} lacks{hint}"
            )


def store_crop_framing(group: zarr.Group) -> CropFraming | None:
    """The framing of a store of kept crops, fitted on its samples whose face the detector found:
    their landmarks in crop pixels (``landmarks_src``) and the crops' sides (from
    ``aligned_from_src``, the crop mode's scaling S / side)."""
    found = np.flatnonzero(read_array(group, STATUS) == int(Status.OK))
    landmarks = read_array(group, LANDMARKS_SRC)[found]
    scaling = read_array(group, ALIGNED_FROM_SRC)[found]
    sizes = array_in(group, IMAGE).shape[-1] / scaling[:, 0, 0]
    return CropFraming.fit(landmarks, sizes)


def build_model(
    config: TrainConfig, view: StoreView, num_classes: int, *, initial_weights: bool = True
) -> torch.nn.Module:
    """The configured model, sized for the store's images (and guidance maps).

    initial_weights: False where a checkpoint's weights replace the model's: the options naming
    a file of initial weights (``WEIGHT_FILE_OPTIONS``) are then left at their defaults, so the
    file need not exist any more.
    """
    view.check_inputs(config.model, model_reads(config.model, config.options))  # before anything is built
    return build_model_for(config, view.image_shape, view.guidance_size, num_classes, initial_weights=initial_weights)


def build_model_for(
    config: TrainConfig,
    image_shape: tuple[int, int, int],
    guidance_size: int,
    num_classes: int,
    *,
    initial_weights: bool = True,
) -> torch.nn.Module:
    """The configured model for ``(C, S, S)`` images and ``(H, H)`` guidance maps (as
    :func:`build_model`, without a store: prediction builds a run's model from its checkpoint)."""
    channels, size, _ = image_shape
    kwargs = dict(config.options)
    if not initial_weights:
        kwargs = {key: value for key, value in kwargs.items() if key not in WEIGHT_FILE_OPTIONS}
    if "guidance_size" in get_model_entry(config.model).options():
        kwargs.setdefault("guidance_size", guidance_size)
    return create_model(config.model, in_channels=channels, num_classes=num_classes, image_size=size, **kwargs)


def model_fields(model: torch.nn.Module) -> tuple[str, ...]:
    """The store arrays a model's batches carry: the image (augmentation moves everything with
    it), then what the model reads."""
    return tuple(dict.fromkeys((IMAGE, *model_inputs(model))))
