"""Visual saliency maps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from pipeline.stages.decode import to_gray


def spectral_residual_saliency(image: np.ndarray, guidance_size: int) -> np.ndarray:
    """Spectral-residual saliency (Hou and Zhang, CVPR 2007), OpenCV's implementation.

    Args:
        image: ``(S, S) uint8`` or ``(S, S, 3) uint8 RGB`` aligned face.
        guidance_size: H, side of the output map.

    Returns:
        ``(H, H) uint8``, min-max normalised to 0..255 (all zeros for a constant image).
        Deterministic: the same image always gives the same map.
    """
    return _opencv_static_saliency(image, guidance_size, cv2.saliency.StaticSaliencySpectralResidual.create)


def fine_grained_saliency(image: np.ndarray, guidance_size: int) -> np.ndarray:
    """Fine-grained static saliency (Montabone and Soto 2010, centre-surround differences on an
    integral image), OpenCV's implementation. Shapes and range as :func:`spectral_residual_saliency`."""
    return _opencv_static_saliency(image, guidance_size, cv2.saliency.StaticSaliencyFineGrained.create)


def _opencv_static_saliency(image: np.ndarray, guidance_size: int, create: Callable[[], Any]) -> np.ndarray:
    # The OpenCV object is cheap to create (tens of microseconds) and cannot be pickled or
    # shared between threads, so one is made per call.
    gray = to_gray(image)
    if gray.min() == gray.max():  # no spectrum to speak of; OpenCV returns edge artefacts
        return np.zeros((guidance_size, guidance_size), dtype=np.uint8)
    ok, saliency = create().computeSaliency(gray)
    if not ok:
        raise RuntimeError(f"OpenCV saliency ({create.__name__}) failed")
    saliency = cv2.resize(saliency.astype(np.float32), (guidance_size, guidance_size), interpolation=cv2.INTER_AREA)
    return normalise_to_uint8(saliency)


def network_saliency(network: Callable[[np.ndarray], np.ndarray], image: np.ndarray, guidance_size: int) -> np.ndarray:
    """Saliency from a learned network (for example MSI-Net, as the guided-STN paper used).

    Args:
        network: maps an ``(S, S) or (S, S, 3) uint8`` face to its raw ``(h, w) float32`` map, as
            :class:`pipeline.compute.model_files.SaliencyNetwork` does for an ONNX file.
        image: ``(S, S) uint8`` or ``(S, S, 3) uint8 RGB`` aligned face.
        guidance_size: H, side of the output map.

    Returns:
        ``(H, H) uint8``: the network's map resized to H x H (area averaging when shrinking,
        bilinear when growing) and min-max normalised to 0..255; all zeros for a constant map.

    Raises:
        ValueError: the map holds NaN or infinite values (never stored as zeros).
    """
    raw = network(image).astype(np.float32)
    if not np.isfinite(raw).all():
        raise ValueError(f"the saliency network gave {np.count_nonzero(~np.isfinite(raw))} non-finite values")
    shrinking = raw.shape[0] >= guidance_size and raw.shape[1] >= guidance_size
    resized = cv2.resize(
        raw, (guidance_size, guidance_size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )
    return normalise_to_uint8(resized)


def normalise_to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max normalise a float map to ``uint8`` 0..255; a constant (or non-finite) map gives 0."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-12:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)
