"""The store's preprocessing chain, rebuilt from a checkpoint for faces the store never saw.

A checkpoint records the configuration of the store its run trained on (detector upsampling and
prior, landmark model and its sha256, alignment mode, S, colour, guidance settings). Prediction
runs the same chain on new photos (:func:`pipeline.compute.image_chain.process_faces`), rendering
only the guidance the model reads. What only a dataset gives cannot be had for a new photo: where
the store took the dataset's boxes (``--detect auto|never``, ``--prior dataset``) or landmarks
(``--landmarks dataset``), prediction takes the detector path and says so in :attr:`notes`.
A store that keeps its dataset's crops (``--align crop``) resizes a whole picture to S: each input
is then taken as one face crop, as the dataset distributes them (one row per picture), and a note
says so; with ``crop_faces`` (``fer-predict --crop-faces``) each face a photo holds is first cut
out as the dataset frames its crops, measured on the store (:class:`CropFraming`). Where this installation cannot reproduce the chain (another landmark model, a saliency network
not given or of another hash), it refuses, naming what differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from fer_models.models.registry import model_reads
from fer_models.training.checkpoint import Checkpoint
from fer_models.training.store_view import store_crop_framing
from pipeline.compute.model_files import ModelFiles
from pipeline.config import PreprocessConfig, config_sha256, file_sha256
from pipeline.errors import ConfigError, FerStoreError
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.stages.crop_framing import CropFraming
from pipeline.store import array_in, open_store, provenance_of
from pipeline.store.schema import IMAGE


@dataclass(frozen=True)
class PredictionChain:
    """How a new photo becomes the model's input.

    config: the store's preprocessing config on the detector path, its guidance types those the
        model reads. files: this installation's model files, checked against the store's.
    reads: the arrays the model reads (``image`` first; ``landmarks``, guidance types).
    image_shape: ``(C, S, S)`` of the aligned face. guidance_size: H.
    notes: where the chain differs from the store's, or what it takes its inputs for, one line each.
    """

    config: PreprocessConfig
    files: ModelFiles
    reads: tuple[str, ...]
    image_shape: tuple[int, int, int]
    guidance_size: int
    notes: tuple[str, ...]
    crop_framing: CropFraming | None = None

    @property
    def one_face_per_picture(self) -> bool:
        """The chain resizes a whole picture (``--align crop``): a picture is one face crop."""
        return self.config.align.mode == "crop"

    @classmethod
    def of_checkpoint(
        cls,
        checkpoint: Checkpoint,
        where: str,
        *,
        landmark_model: str | None = None,
        saliency_model: str | None = None,
    ) -> PredictionChain:
        """The chain of the store ``checkpoint`` (read from ``where``) trained on.

        Raises:
            ConfigError: the chain cannot be reproduced here: the store's record is missing (a
                checkpoint from before prediction, its store unreachable), another landmark
                model, or a saliency network not given or of another sha256.
        """
        record = _store_record(checkpoint, where)
        stored = PreprocessConfig.from_dict(record["preprocessing"])
        options = checkpoint.config.get("options", {})
        reads = model_reads(checkpoint.config["model"], options)
        guidance = tuple(name for name in reads if name in GUIDANCE_TYPES)
        files = ModelFiles.locate(landmark_model, saliency_model if "saliency_network" in guidance else None)
        _check_model_files(files, record["models"], guidance, saliency_model)
        config, notes = _detector_path(stored)
        config = dataclasses.replace(config, guidance=dataclasses.replace(config.guidance, types=guidance))
        channels, size, _ = record["image_shape"]
        framing = record.get("crop_framing")
        return cls(
            config,
            files,
            reads,
            (channels, size, size),
            int(record["guidance_size"]),
            notes,
            None if framing is None else CropFraming.from_dict(framing),
        )

    def describe(self) -> dict[str, Any]:
        """The chain as the JSON sidecar of an exported model records it."""
        return {
            "preprocessing": self.config.to_dict(),
            "models": self.files.sha256(),
            "reads": list(self.reads),
            "image_shape": list(self.image_shape),
            "guidance_size": self.guidance_size,
            "notes": list(self.notes),
            "crop_framing": None if self.crop_framing is None else self.crop_framing.to_dict(),
        }


def _store_record(checkpoint: Checkpoint, where: str) -> dict[str, Any]:
    """The checkpoint's record of its store's chain; for a checkpoint written before it was
    recorded, read from the store itself where it can be opened and still is the one trained on."""
    record = checkpoint.store
    if "preprocessing" in record:
        return record
    location = record.get("location")
    try:
        group = open_store(str(location))
        provenance = provenance_of(group)
    except (FerStoreError, OSError) as error:
        raise ConfigError(
            f"{where} was written before checkpoints recorded their store's preprocessing, and its store "
            f"{location} cannot be opened ({error}); train the run again, or make the store reachable there"
        ) from None
    if config_sha256(provenance.config) != record.get("config_sha256"):
        raise ConfigError(
            f"the store at {location} is no longer the one {where} was trained on (its config hash differs); "
            "train the run again with this version of fer-train"
        )
    channels, size, _ = array_in(group, IMAGE).shape[1:]
    framing = store_crop_framing(group) if provenance.preprocess_config.align.mode == "crop" else None
    return {
        **record,
        "preprocessing": provenance.config,
        "models": provenance.models,
        "image_shape": [channels, size, size],
        "guidance_size": provenance.preprocess_config.guidance.size,
        "crop_framing": None if framing is None else framing.to_dict(),
    }


def _check_model_files(
    files: ModelFiles, recorded: dict[str, dict[str, str]], guidance: tuple[str, ...], saliency_model: str | None
) -> None:
    """Raises ConfigError where this installation's model files are not the store's."""
    landmarks = recorded.get("landmarks")
    if landmarks is not None and files.landmarks is not None:
        digest = file_sha256(files.landmarks)
        if digest != landmarks["sha256"]:
            raise ConfigError(
                f"the store placed its landmarks with {landmarks['file']} of sha256 {landmarks['sha256'][:12]}; "
                f"{files.landmarks} here hashes to {digest[:12]}: pass --landmark-model with the store's file"
            )
    if "saliency_network" in guidance:
        network = recorded.get("saliency_network")
        if saliency_model is None or network is None:
            raise ConfigError(
                "the model reads saliency_network maps: pass --saliency-model with the store's ONNX network"
                + (f" ({network['file']})" if network else "")
            )
        given = files.sha256()["saliency_network"]["sha256"]
        if given != network["sha256"]:
            raise ConfigError(
                f"the store's saliency network {network['file']} has sha256 {network['sha256'][:12]}; "
                f"{saliency_model} hashes to {given[:12]}: pass the store's file"
            )


def _detector_path(config: PreprocessConfig) -> tuple[PreprocessConfig, tuple[str, ...]]:
    """``config`` with the detector finding the faces and dlib placing the landmarks, and a note
    for each setting that needed a dataset's boxes or landmarks."""
    notes = []
    detect, landmarks = config.detect, config.landmarks
    if detect.mode != "always":
        notes.append(
            f"the store took the dataset's boxes (--detect {detect.mode}); prediction finds the faces with the detector"
        )
        detect = dataclasses.replace(detect, mode="always")
    if detect.prior == "dataset":
        notes.append(
            "the store fell back on the dataset's box where the detector found no face; a new photo has none, "
            "so such a photo gets no prediction"
        )
        detect = dataclasses.replace(detect, prior="none")
    if config.align.mode == "crop":
        notes.append(
            "the store keeps its dataset's face crops (--align crop): each input is taken as one face crop and "
            "resized whole, one row per picture; for photos, --crop-faces cuts each face out as the dataset frames "
            "its crops"
        )
    if landmarks.source != "dlib":
        notes.append("the store took the dataset's landmarks (--landmarks dataset); prediction places dlib's")
        landmarks = dataclasses.replace(landmarks, source="dlib")
    return dataclasses.replace(config, detect=detect, landmarks=landmarks), tuple(notes)
