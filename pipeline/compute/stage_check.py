"""Faults of the environment, told apart from faults of a sample.

A bad image is the sample's fault: it is recorded and the run goes on. A stage that cannot run
here (``cv2`` without ``cv2.saliency``, as installing FiftyOne's ``opencv-python-headless`` over
the contrib build leaves it; a model that does not load or run) would fail on every sample alike:
recording that as each sample's failure would complete a store of nothing but failures, which a
rerun then skips. So a build first runs every configured stage on a real face
(:func:`check_stages`, scikit-image's ``astronaut`` photograph), and a shard task raises
:class:`~pipeline.errors.EnvironmentFaultError` instead of recording an error that no image can
cause (:data:`ENVIRONMENT_ERRORS`) or one that struck most of its shard (:func:`systematic_failure`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from pipeline.compute.image_chain import process_image
from pipeline.compute.model_files import ModelFiles, thread_models
from pipeline.config import PreprocessConfig
from pipeline.errors import EnvironmentFaultError
from pipeline.store import USABLE_STATUSES

# Errors no image can cause: the code or the installation is at fault.
ENVIRONMENT_ERRORS: tuple[type[Exception], ...] = (ImportError, AttributeError, NameError)

# A shard of at least this many samples, most of which failed with the same error, stops the run.
SYSTEMATIC_MIN_SAMPLES = 8

REPAIR_HINT = "repair the environment (`make install`; after installing FiftyOne, `make viewer`)"


def check_stages(config: PreprocessConfig, models: ModelFiles) -> None:
    """Run detection, landmarks, alignment and every configured guidance type on a real face,
    as a build's tasks will, before any work.

    Raises:
        EnvironmentFaultError: a stage raised, or the face came out without a usable result or
            without one of the configured guidance maps; the message names the error.
    """
    import skimage.data

    photo = np.ascontiguousarray(skimage.data.astronaut())  # (512, 512, 3) uint8 RGB, one face
    detect = dataclasses.replace(config.detect, mode="always", prior="none", upsample=0, min_face=0)
    landmarks = dataclasses.replace(config.landmarks, source="dlib")
    probe = dataclasses.replace(config, detect=detect, landmarks=landmarks)
    try:
        result = process_image(photo, None, probe, thread_models(models))
    except Exception as error:
        raise EnvironmentFaultError(
            f"a preprocessing stage cannot run in this environment: {type(error).__name__}: {error} "
            f"(found on a reference face before any work); {REPAIR_HINT}"
        ) from error
    missing = [name for name in config.guidance.types if name not in result.guidance]
    if result.status not in USABLE_STATUSES or missing:
        raise EnvironmentFaultError(
            "the preprocessing chain gives no usable result on a reference face "
            f"(status {result.status.label}, {result.message or 'no message'}"
            f"{', no ' + ', '.join(missing) if missing else ''}); {REPAIR_HINT}"
        )


def environment_fault(error: BaseException, source: str) -> EnvironmentFaultError:
    """The run-stopping error for ``error`` (one of :data:`ENVIRONMENT_ERRORS`), met on ``source``."""
    return EnvironmentFaultError(
        f"a preprocessing stage cannot run in this environment: {type(error).__name__}: {error} "
        f"(on {source}); no sample was recorded as failed for it; {REPAIR_HINT}"
    )


def systematic_failure(errors: list[str], shard_samples: int, start: int) -> EnvironmentFaultError | None:
    """The run-stopping error when most samples of a shard failed with the same error.

    Args:
        errors: the ``Type: message`` of each sample of the shard whose chain raised.
        shard_samples: the samples of the shard that were processed.
        start: the shard's first sample.
    """
    if shard_samples < SYSTEMATIC_MIN_SAMPLES or not errors:
        return None
    error, count = Counter(errors).most_common(1)[0]
    if 2 * count <= shard_samples:
        return None
    return EnvironmentFaultError(
        f"{count} of the {shard_samples} samples of the shard at sample {start} failed with the same error, "
        f"{error}: a fault of a stage, not of the images; no sample was recorded as failed for it; {REPAIR_HINT}"
    )
