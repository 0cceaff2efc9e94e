"""dlib model files: where they are, what they hash to, and one loaded copy per worker thread.

dlib objects cannot be pickled (the shape predictor would be 100 MB if they could), and one HOG
detector used by two threads at once crashes. Tasks therefore carry model *paths*; each worker
thread loads its own models once, on first use, and keeps them (:func:`thread_models`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import dlib

from pipeline.errors import ModelFileError

LANDMARK_MODEL_NAME = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class ModelFiles:
    """Paths of the model files a run uses (not hashed into the config: paths differ per machine)."""

    landmarks: str

    @classmethod
    def locate(cls, landmarks: str | Path | None = None) -> ModelFiles:
        """Resolve model paths: an explicit path, else the ``face_recognition_models`` package.

        Raises:
            ModelFileError: the file is missing or unreadable, with what to install or pass.
        """
        path = Path(landmarks) if landmarks is not None else _packaged_model(LANDMARK_MODEL_NAME)
        if not path.is_file():
            raise ModelFileError(
                f"landmark model not found at {path}; pass --landmark-model PATH to dlib's "
                f"{LANDMARK_MODEL_NAME}, or install the face_recognition_models package"
            )
        try:
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as error:
            raise ModelFileError(f"landmark model {path} cannot be read: {error}") from None
        return cls(landmarks=str(path.resolve()))

    def sha256(self) -> dict[str, dict[str, str]]:
        """``{"landmarks": {"file": name, "sha256": hex}}`` for the store's provenance."""
        return {"landmarks": {"file": Path(self.landmarks).name, "sha256": file_sha256(self.landmarks)}}


def _packaged_model(name: str) -> Path:
    # face_recognition_models' __init__ imports pkg_resources (gone from setuptools 82), so the
    # package is located without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            f"the face_recognition_models package is not installed, so {name} cannot be found; "
            "run `make install` or pass --landmark-model PATH"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models" / name


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class LoadedModels:
    detector: "dlib.fhog_object_detector"
    predictor: "dlib.shape_predictor"


_local = threading.local()


def thread_models(files: ModelFiles) -> LoadedModels:
    """This thread's loaded models for ``files``, loading them on first use."""
    cached = getattr(_local, "models", None)
    if cached is None or cached[0] != files:
        try:
            predictor = dlib.shape_predictor(files.landmarks)
        except RuntimeError as error:
            raise ModelFileError(f"dlib cannot load {files.landmarks}: {error}") from None
        cached = (files, LoadedModels(dlib.get_frontal_face_detector(), predictor))
        _local.models = cached
    return cached[1]
