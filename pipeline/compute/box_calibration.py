"""Measuring how a dataset's face boxes frame faces, against the framing dlib's predictor expects.

Run once when a store is created with ``--detect auto`` or ``never`` on a dataset that gives boxes
(the mapping is recorded in the provenance and a resumed run takes it from there): on up to
:data:`CALIBRATION_FACES` samples with a box, spread evenly over the dataset, each photo is decoded
at full size and the detector runs as ``--detect always`` runs it (the dataset box choosing among
the detections); every face it finds pairs its box with the dataset's, and
:func:`~pipeline.stages.box_mapping.fit_box_mapping` fits the mapping on the pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.compute.model_files import ModelFiles, thread_models
from pipeline.config import PreprocessConfig
from pipeline.datasets import get_dataset
from pipeline.datasets.manifest import Manifest
from pipeline.errors import DatasetError, UnreadableImageError
from pipeline.stages.box_mapping import BoxMapping, fit_box_mapping
from pipeline.stages.decode import decode_image
from pipeline.stages.detect import detect_face

CALIBRATION_FACES = 64


def calibration_rows(prior_box: np.ndarray, manifest: Manifest, faces: int = CALIBRATION_FACES) -> np.ndarray:
    """Up to ``faces`` row indices of ``manifest`` with a finite box in ``prior_box`` (its
    ``(N, 4)`` boxes) and not ruled out by the dataset, spread evenly over the manifest."""
    usable = np.isfinite(prior_box).all(axis=1)
    if manifest.skip is not None:
        usable &= np.array([not reason for reason in manifest.skip])
    rows = np.flatnonzero(usable)
    if len(rows) <= faces:
        return rows
    return rows[np.unique(np.linspace(0, len(rows) - 1, faces).round().astype(np.int64))]


def calibrate_box_mapping(
    manifest: Manifest, root: Path | None, config: PreprocessConfig, models: ModelFiles
) -> BoxMapping:
    """The mapping of ``manifest``'s boxes to the detector's framing, fitted on
    :func:`calibration_rows` (the identity when too few faces were found to trust a fit)."""
    if manifest.prior_box is None:
        return BoxMapping()
    prior_box = manifest.prior_box
    rows = calibration_rows(prior_box, manifest)
    adapter = get_dataset(manifest.dataset)
    detector = thread_models(models).detector
    dataset_boxes, detector_boxes = [], []
    for row in rows:
        try:
            raw = adapter.read(root, manifest.source[row])
            pixels = raw if isinstance(raw, np.ndarray) else decode_image(raw, max_pixels=config.decode.max_pixels)
        except (OSError, RuntimeError, DatasetError, UnreadableImageError):  # the run records it
            continue
        box = np.asarray(prior_box[row], dtype=np.float32)
        detection = detect_face(detector, pixels, config.detect.upsample, box, min_face=config.detect.min_face)
        if detection.box is not None:
            dataset_boxes.append(box)
            detector_boxes.append(detection.box)
    return fit_box_mapping(np.reshape(dataset_boxes, (-1, 4)), np.reshape(detector_boxes, (-1, 4)), tried=len(rows))
