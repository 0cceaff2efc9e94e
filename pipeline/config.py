"""Every preprocessing knob, as frozen dataclasses.

Each knob is declared once, as a field whose metadata (:func:`knob`) names its command-line
option and says what it does: ``fer-preprocess``'s options, ``make preprocess``'s variables (the
option's name in capitals: ``--detect-min-face`` is ``DETECT_MIN_FACE=``) and the config layer
they make all come from these fields (:mod:`pipeline.config_knobs`); a dataset's defaults for
them are its adapter's ``config_defaults``.

A :class:`PreprocessConfig` is recorded, with its hash (:meth:`PreprocessConfig.sha256`), in the
store's provenance: a store can only be resumed by a run with the same config. Paths of model files are
*not* part of the config (they differ between machines); the store records each model file's
sha256 instead (see :mod:`pipeline.compute.model_files`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pipeline.errors import ConfigError
from pipeline.guidance import DEFAULT_GUIDANCE, resolve_guidance

Prior = Literal["none", "dataset", "full-frame"]
Color = Literal["rgb", "gray"]
LandmarkSource = Literal["dlib", "dataset"]
DetectMode = Literal["always", "auto", "never"]
AlignMode = Literal["crop", "similarity", "arcface"]
# How the tensors' chunks are compressed (docs/benchmarks.md, "Tensor codecs"): zstd is smaller,
# lz4 (inside blosc) reads 1.6-2.4x faster for about 25% more bytes.
TensorCodec = Literal["zstd", "lz4"]
PRIORS: tuple[str, ...] = get_args(Prior)
DETECT_MODES: tuple[str, ...] = get_args(DetectMode)
COLORS: tuple[str, ...] = get_args(Color)
LANDMARK_SOURCES: tuple[str, ...] = get_args(LandmarkSource)
ALIGN_MODES: tuple[str, ...] = get_args(AlignMode)
TENSOR_CODECS: tuple[str, ...] = get_args(TensorCodec)


def knob(option: str, help: str) -> dict[str, str]:
    """The metadata that makes a config field a preprocessing knob: its command-line ``option``
    (``"--size"``) and its ``help`` (one sentence; the defaults are added where it is shown)."""
    return {"option": option, "help": help}


@dataclass(frozen=True)
class DecodeConfig:
    """How source files become pixel arrays.

    max_pixels: images with more pixels (width x height, read from the header) are refused
        without being decoded (status ``unreadable``).
    """

    max_pixels: int = field(
        default=40_000_000, metadata=knob("--max-pixels", "Refuse images larger than this many pixels.")
    )

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise ConfigError(f"max_pixels must be a positive pixel count, got {self.max_pixels}")


@dataclass(frozen=True)
class DetectConfig:
    """Face detection (dlib HOG) and the fallback when it finds no face.

    upsample: how many times dlib doubles the image before detecting (0 finds faces of about
        80 px and larger, 1 of about 40 px, 2 of about 20 px; each step costs about 4x time).
    prior: what to use when the detector finds no face: ``none`` (status ``no_face``),
        ``dataset`` (the box the dataset provides, where it has one; it also picks, among several
        detections, the one overlapping it) or ``full-frame`` (the whole image, for pre-cropped
        faces). Samples aligned from a prior get status ``ok_prior``.
    mode: when the detector runs: ``always`` (on every sample; a dataset box only picks among
        detections and is the fallback), ``auto`` (only on samples without a dataset box; a box,
        mapped to dlib's framing (:mod:`pipeline.stages.box_mapping`), goes straight to
        landmarks) or ``never`` (a sample without a box takes the ``prior`` fallback).
    min_face: the smallest face side, in source pixels, the detector must find: it runs on a
        copy scaled so that such a face spans 1.25 of its windows (80 pixels after upsampling;
        :func:`pipeline.stages.detect.detection_scale`); smaller faces may be missed. 0: the
        full-size image.
    """

    upsample: int = field(
        default=1, metadata=knob("--upsample", "dlib HOG upsampling steps (1 finds faces of ~40 px).")
    )
    prior: Prior = field(default="none", metadata=knob("--prior", "Box used when the detector finds no face."))
    mode: DetectMode = field(
        default="always",
        metadata=knob(
            "--detect",
            "When the face detector runs: always; auto (only where the dataset gives no box; a box, mapped to "
            "dlib's framing, goes straight to landmarks); never.",
        ),
    )
    min_face: int = field(
        default=0,
        metadata=knob(
            "--detect-min-face",
            "Smallest face side (pixels) the detector must find: it runs on a copy scaled so that such a face "
            "fills its window, several times faster on large photos (0: full size).",
        ),
    )

    def __post_init__(self) -> None:
        if not 0 <= self.upsample <= 4:
            raise ConfigError(f"upsample must be between 0 and 4, got {self.upsample}")
        if self.prior not in PRIORS:
            raise ConfigError(f"prior must be one of {', '.join(PRIORS)}; got {self.prior!r}")
        if self.mode not in DETECT_MODES:
            raise ConfigError(f"detect mode must be one of {', '.join(DETECT_MODES)}; got {self.mode!r}")
        if self.min_face != 0 and not 16 <= self.min_face <= 4096:
            raise ConfigError(f"min_face must be 0 (full size) or between 16 and 4096 pixels, got {self.min_face}")


@dataclass(frozen=True)
class LandmarkConfig:
    """Where the 68 landmarks come from.

    source: ``dlib`` (the 68-point shape predictor, inside the detected or prior box) or
        ``dataset`` (the landmarks the dataset provides, with its face box and status
        ``ok_prior``, and no detection; rows without provided landmarks fall back to dlib).
    """

    source: LandmarkSource = field(
        default="dlib",
        metadata=knob("--landmarks", "Landmarks from dlib, or those the dataset provides (affectnet)."),
    )

    def __post_init__(self) -> None:
        if self.source not in LANDMARK_SOURCES:
            raise ConfigError(f"landmark source must be one of {', '.join(LANDMARK_SOURCES)}; got {self.source!r}")


@dataclass(frozen=True)
class AlignConfig:
    """The aligned face crop.

    mode: how the source becomes the ``(S, S)`` image (:mod:`pipeline.stages.align`): ``crop``
        resizes the whole source image (a dataset distributed as face crops keeps its own crop;
        ``aligned_from_src`` is then a scaling), ``similarity`` warps the face onto this project's
        template by its eye and mouth centres, ``arcface`` onto the ArcFace five-point template
        (insightface's ``arcface_src``, scaled from 112 to S), which face-recognition backbones expect.
    size: S, the side of the square aligned crop in pixels.
    color: ``rgb`` stores (3, S, S) images, ``gray`` stores (1, S, S).
    """

    mode: AlignMode = field(
        default="similarity",
        metadata=knob(
            "--align",
            "How the face becomes the S x S image: crop (the dataset's own crop, resized), similarity "
            "(warped onto this project's template by eyes and mouth) or arcface (the ArcFace five-point template).",
        ),
    )
    size: int = field(default=112, metadata=knob("--size", "Side S of the aligned face crop in pixels."))
    color: Color = field(default="rgb", metadata=knob("--color", "Aligned image colour."))

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 1024:
            raise ConfigError(f"aligned size must be between 16 and 1024 pixels, got {self.size}")
        if self.color not in COLORS:
            raise ConfigError(f"color must be one of {', '.join(COLORS)}; got {self.color!r}")
        if self.mode not in ALIGN_MODES:
            raise ConfigError(f"align mode must be one of {', '.join(ALIGN_MODES)}; got {self.mode!r}")

    @property
    def channels(self) -> int:
        return 3 if self.color == "rgb" else 1


@dataclass(frozen=True)
class GuidanceConfig:
    """Guidance tensors rendered from the aligned face and landmarks.

    types: the guidance types computed, each stored as its own array (see
        :data:`pipeline.guidance.GUIDANCE_TYPES`); kept in catalogue order, so the order the user
        gives them in does not change the store.
    size: H, the side of every guidance map; 0 means "same as the aligned size S" and is resolved
        by :class:`PreprocessConfig`.
    heatmap_sigma: standard deviation of each landmark's Gaussian, in aligned pixels; 0 (the
        default): ``heatmap_sigma_iod`` times each face's inter-ocular distance, so that the maps
        cover the same share of a face at every S (stores built before kept 2 aligned pixels).
    heatmap_sigma_iod: that share of the distance between the eye centres, in aligned pixels
        (0.13 of a template face gives FER-2013's S = 48 the 2 pixels it had).
    """

    types: tuple[str, ...] = field(
        default=DEFAULT_GUIDANCE,
        metadata=knob(
            "--guidance", "Guidance types to compute, comma-separated, or 'all' (see docs/preprocessing.md)."
        ),
    )
    size: int = field(
        default=0, metadata=knob("--guidance-size", "Side H of heatmaps, saliency and masks; 0: the same as --size.")
    )
    heatmap_sigma: float = field(
        default=0.0,
        metadata=knob(
            "--heatmap-sigma",
            "Landmark Gaussian sigma in aligned pixels; 0: --heatmap-sigma-iod of each face's inter-ocular distance.",
        ),
    )
    heatmap_sigma_iod: float = field(
        default=0.13,
        metadata=knob("--heatmap-sigma-iod", "With --heatmap-sigma 0: sigma as a share of the inter-ocular distance."),
    )

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "types", resolve_guidance(self.types))
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if self.size != 0 and not 8 <= self.size <= 1024:
            raise ConfigError(f"guidance size must be between 8 and 1024 pixels, got {self.size}")
        if self.heatmap_sigma != 0 and not 0.25 <= self.heatmap_sigma <= 64:
            raise ConfigError(
                f"heatmap_sigma must be 0 (relative to the face) or between 0.25 and 64 aligned pixels, "
                f"got {self.heatmap_sigma}"
            )
        if not 0.01 <= self.heatmap_sigma_iod <= 1:
            raise ConfigError(
                f"heatmap_sigma_iod must be between 0.01 and 1 inter-ocular distance, got {self.heatmap_sigma_iod}"
            )


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides a store's contents.

    shard_size: samples per shard, the unit of work (one Dask task) and of resume.
    codec: compression of the per-sample tensors (images, landmarks, guidance), one of
        :data:`TENSOR_CODECS`; the other arrays are always zstd. It decides bytes, not values.
    """

    decode: DecodeConfig = field(default_factory=DecodeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    landmarks: LandmarkConfig = field(default_factory=LandmarkConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    shard_size: int = field(default=256, metadata=knob("--shard-size", "Samples per shard (one Dask task each)."))
    codec: TensorCodec = field(
        default="zstd",
        metadata=knob(
            "--codec",
            "Compression of images, landmarks and guidance: zstd is smaller; lz4 reads 1.6-2.4x faster "
            "for about 25% more bytes (docs/benchmarks.md).",
        ),
    )

    def __post_init__(self) -> None:
        if not 1 <= self.shard_size <= 65536:
            raise ConfigError(f"shard_size must be between 1 and 65536 samples, got {self.shard_size}")
        if self.codec not in TENSOR_CODECS:
            raise ConfigError(f"codec must be one of {', '.join(TENSOR_CODECS)}, got {self.codec!r}")
        if self.guidance.size == 0:
            resolved = dataclasses.replace(self.guidance, size=self.align.size)
            object.__setattr__(self, "guidance", resolved)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict, as JSON holds it (tuples become lists)."""
        plain: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(self)))
        return plain

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        return cls(
            decode=DecodeConfig(**data["decode"]),
            detect=DetectConfig(**data["detect"]),
            landmarks=LandmarkConfig(**data["landmarks"]),
            align=AlignConfig(**data["align"]),
            guidance=GuidanceConfig(**data["guidance"]),
            shard_size=data["shard_size"],
            codec=data.get("codec", "zstd"),  # stores written before the choice existed are zstd
        )

    def sha256(self) -> str:
        """:func:`config_sha256` of this config."""
        return config_sha256(self.to_dict())


# Settings added after stores were first recorded, with the value that means what those stores
# did: left out of the hash at that value, so those stores keep theirs.
_LATER_SETTINGS = {
    ("detect", "mode"): "always",
    ("detect", "min_face"): 0,
    ("guidance", "heatmap_sigma_iod"): 0.13,
    ("align", "mode"): "similarity",
}


def config_sha256(data: dict[str, Any]) -> str:
    """sha256 of a config as JSON holds it (:meth:`PreprocessConfig.to_dict`), without ``codec``
    (it decides a store's bytes, not its values, so stores that differ only in their codec share
    the hash, which evaluation compares) and without the later settings at the value that means
    what stores recorded before them did (so those keep their hash)."""
    hashed = {key: dict(value) if isinstance(value, dict) else value for key, value in data.items() if key != "codec"}
    for (section, key), value in _LATER_SETTINGS.items():
        if hashed.get(section, {}).get(key, value) == value:
            hashed.get(section, {}).pop(key, None)
    return sha256_of_json(hashed)


def sha256_of_json(value: Any) -> str:
    """sha256 hex digest of ``value`` serialised as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def differing_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the leaves where two nested dicts differ, e.g. ``['align.size: 48 != 112']``."""
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        name = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(differing_keys(va, vb, name + "."))
        elif va != vb:
            out.append(f"{name}: {va!r} != {vb!r}")
    return out


def build_config(*layers: dict[str, Any]) -> PreprocessConfig:
    """Merge nested overrides (later layers win) onto the defaults and validate.

    Each layer looks like ``{"detect": {"prior": "full-frame"}, "shard_size": 64}``; a dataset's
    defaults come first, the user's options after. Unknown keys raise :class:`ConfigError`.
    """
    merged: dict[str, Any] = PreprocessConfig().to_dict()
    merged["guidance"]["size"] = 0  # unresolved: follows the aligned size unless set
    for layer in layers:
        for key, value in layer.items():
            if key not in merged:
                raise ConfigError(f"unknown config section {key!r}")
            if isinstance(merged[key], dict):
                if not isinstance(value, dict):
                    raise ConfigError(f"config section {key!r} takes options ({', '.join(merged[key])}), not {value!r}")
                unknown = set(value) - set(merged[key])
                if unknown:
                    raise ConfigError(f"unknown {key} options: {', '.join(sorted(unknown))}")
                merged[key].update(value)
            else:
                merged[key] = value
    return PreprocessConfig.from_dict(merged)
