"""``fer-store view``: a store as a FiftyOne dataset, browsed in the FiftyOne App on 127.0.0.1.

The dataset is grouped: each store sample is a group of two slices.

- ``face`` (the default slice): the aligned face with its 68 landmarks (``landmarks``, Keypoints
  with the face's skeleton), every guidance map the store holds (Heatmap; masks as
  Segmentation), the ``regions`` boxes (Detections), the label (Classification) and the
  per-sample fields: ``store_index``, ``split``, ``status``, ``message``, ``source``,
  ``faces_detected``, ``face_score``, ``several_faces``, ``subject``. A sample that is not usable
  shows its source image instead of a face (or a tile with its message), so failures sit in the
  same grid, filterable by ``status``.
- ``source``: the source image with the face box (``box``) and the landmarks in the source frame
  (``landmarks``), where the source can be read on this machine: a wrong face in a group photo
  is seen here.

With a training run's predictions, the face slice also has ``truth`` and ``prediction``
(Classification with the softmax confidence) on the run's test samples, and FiftyOne's
classification evaluation under the key ``eval`` (confusion matrix, per-sample ``eval`` field).

FiftyOne is imported only here, and only when a view is built: the core install does not need it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import StoreError, ViewerError
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.landmark_scheme import N_LANDMARKS, SKELETON_EDGES
from pipeline.store import open_store, provenance_of, read_array, undecided_faces
from pipeline.store.schema import SPLIT, STATUS
from pipeline.tools.contact_sheet import select_samples
from pipeline.tools.viewer_database import VIEWER_INSTALL_HINT, running_mongod
from pipeline.tools.viewer_media import SampleView, store_digest, write_sample_views

if TYPE_CHECKING:
    from pipeline.run_predictions import Predictions

FACE_SLICE, SOURCE_SLICE = "face", "source"
DEFAULT_LIMIT = 1000
DEFAULT_PORT = 5151
EVAL_KEY = "eval"
# Bumped when what a built dataset holds changes, so datasets built before are rebuilt.
VIEW_VERSION = 1
CACHE_ENV = "FER_VIEWER_CACHE"


def default_cache() -> Path:
    """Where views keep their images and database: ``$FER_VIEWER_CACHE``, else
    ``$XDG_CACHE_HOME/fer-guidance-store/viewer`` (``~/.cache/...``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fer-guidance-store" / "viewer"


def import_fiftyone() -> Any:
    """The ``fiftyone`` module, set not to report usage.

    Raises:
        ViewerError: the ``[viewer]`` extra is not installed.
    """
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    try:
        with _lenient_package_metadata():
            import eta  # noqa: F401 - before fiftyone, which imports it
        import fiftyone
    except ImportError as error:
        raise ViewerError(f"fer-store view needs FiftyOne ({error}): {VIEWER_INSTALL_HINT}") from None
    return fiftyone


class _LenientMetadata:
    """A package's metadata where a missing field reads None (as the standard library's does)."""

    def __init__(self, metadata: Any):
        self._metadata = metadata

    def __getitem__(self, key: str) -> Any:
        try:
            return self._metadata[key]
        except KeyError:
            return None


@contextlib.contextmanager
def _lenient_package_metadata() -> Iterator[None]:
    """Missing metadata fields read None while voxel51-eta is imported. fiftyone imports eta,
    which reads its package's ``Author`` field when imported, and its wheel has none. The standard
    library answers None; but once the ``importlib_metadata`` backport is imported (dask imports
    it), it answers for the standard library too, and raises KeyError."""
    from importlib import metadata

    strict = metadata.metadata
    metadata.metadata = lambda name: _LenientMetadata(strict(name))  # type: ignore[assignment,return-value]
    try:
        yield
    finally:
        metadata.metadata = strict


@contextlib.contextmanager
def viewer_database(cache: Path | None = None) -> Iterator[str]:
    """Point FiftyOne at a MongoDB while the block runs; yields its URI.

    With ``FIFTYONE_DATABASE_URI`` set, that database is used as it is. Otherwise a ``mongod`` is
    started with its files in ``<cache>/mongodb`` and stopped when the block ends (see
    :mod:`pipeline.tools.viewer_database`); the datasets stay for the next view.
    """
    fo = import_fiftyone()
    given = os.environ.get("FIFTYONE_DATABASE_URI")
    if given:
        fo.config.database_uri = given
        yield given
        return
    from fiftyone.core.odm import database

    with running_mongod((cache or default_cache()) / "mongodb") as uri:
        # The App server runs in a process of its own: it reads the environment.
        saved = {key: os.environ.get(key) for key in ("FIFTYONE_DATABASE_URI", "FIFTYONE_DATABASE_VALIDATION")}
        os.environ["FIFTYONE_DATABASE_URI"] = uri
        os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"  # our own server; no version warnings
        fo.config.database_uri, fo.config.database_validation = uri, False
        try:
            yield uri
        finally:
            database._disconnect()  # the next block starts another server, on another port
            fo.config.database_uri = None
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@dataclass(frozen=True)
class RunPredictions:
    """A training run's test predictions: ``labels`` (its class names) and ``scored`` (per test
    sample its store index, target, prediction and confidence; the confidence is None for runs
    written before it was recorded)."""

    run: Path
    labels: tuple[str, ...]
    scored: Predictions

    @classmethod
    def read(cls, run: Path) -> RunPredictions:
        """Read ``summary.json`` and ``test_predictions.csv`` of the run directory ``run``.

        Raises:
            ViewerError: the run has no test predictions (not a finished run, or no test split).
        """
        from pipeline.run_predictions import Predictions  # a run's file format; the viewer needs no torch

        summary_path, predictions_path = run / "summary.json", run / "test_predictions.csv"
        for path in (summary_path, predictions_path):
            if not path.is_file():
                raise ViewerError(
                    f"{run} has no {path.name}: --predictions takes the directory of a finished fer-train run with a test split"
                )
        labels = tuple(json.loads(summary_path.read_text())["labels"])
        return cls(run, labels, Predictions.read_csv(predictions_path))

    def digest(self) -> str:
        return hashlib.sha256(self.run.joinpath("test_predictions.csv").read_bytes()).hexdigest()[:16]


def _select(
    group: Any, *, split: str | None, statuses: tuple[str, ...], limit: int, predictions: RunPredictions | None
) -> np.ndarray:
    status = read_array(group, STATUS)
    only = None
    if predictions is not None:
        scored = predictions.scored.index
        if len(scored) and int(scored.max()) >= len(status):
            raise ViewerError(
                f"the predictions of {predictions.run} name store index {int(scored.max())}, but this store "
                f"has {len(status)} samples: the run was trained on another store"
            )
        only = np.zeros(len(status), np.bool_)
        only[scored] = True
    indices = select_samples(
        status,
        read_array(group, SPLIT),
        list(provenance_of(group).splits),
        split_name=split,
        statuses=statuses,
        count=limit,
        only=only,
    )
    if len(indices) == 0:
        raise StoreError(f"no samples match the filters (split={split}, status={list(statuses) or 'any'})")
    return indices


def _keypoints(fo: Any, points: np.ndarray) -> Any:
    return fo.Keypoints(keypoints=[fo.Keypoint(label="face", points=[(float(x), float(y)) for x, y in points])])


def _scalar_fields(view: SampleView, several_faces: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "store_index": view.index,
        "split": view.split,
        "status": view.status,
        "message": view.message,
        "source": view.source,
        "several_faces": several_faces,
    }
    if view.faces_detected is not None:
        fields["faces_detected"] = view.faces_detected
        fields["face_score"] = view.face_score
    if view.subject is not None:
        fields["subject"] = view.subject
    return fields


def _group_samples(fo: Any, view: SampleView, several_faces: bool, predicted: dict[str, Any]) -> list[Any]:
    """The face slice's sample (with ``predicted``, its fields of a run's predictions) and, where
    the source can be read here, the source slice's."""
    group = fo.Group()
    fields = _scalar_fields(view, several_faces)
    label = fo.Classification(label=view.label) if view.label else None
    face = fo.Sample(filepath=str(view.face_image), group=group.element(FACE_SLICE), label=label, **fields, **predicted)
    if view.landmarks is not None:
        face["landmarks"] = _keypoints(fo, view.landmarks)
        for name, path in view.guidance.items():
            if GUIDANCE_TYPES[name].family == "mask":
                face[name] = fo.Segmentation(mask_path=str(path))
            else:
                face[name] = fo.Heatmap(map_path=str(path), range=[0, 255])
        if view.regions:
            face["regions"] = fo.Detections(
                detections=[fo.Detection(label=name, bounding_box=list(box)) for name, box in view.regions]
            )
    samples = [face]
    if view.source_image is not None:
        source = fo.Sample(filepath=str(view.source_image), group=group.element(SOURCE_SLICE), label=label, **fields)
        if view.source_box is not None and view.source_landmarks is not None:
            source["box"] = fo.Detections(detections=[fo.Detection(label="face", bounding_box=list(view.source_box))])
            source["landmarks"] = _keypoints(fo, view.source_landmarks)
        samples.append(source)
    return samples


def _prediction_fields(fo: Any, run: RunPredictions) -> dict[int, dict[str, Any]]:
    """Per store index the run scored: ``truth`` and ``prediction`` (with its confidence)."""
    scored, fields = run.scored, {}
    for row, index in enumerate(scored.index.tolist()):
        confidence = None if scored.confidence is None else float(scored.confidence[row])
        fields[int(index)] = {
            "truth": fo.Classification(label=run.labels[scored.target[row]]),
            "prediction": fo.Classification(label=run.labels[scored.predicted[row]], confidence=confidence),
        }
    return fields


def build_view_dataset(
    store: str | Path,
    *,
    name: str | None = None,
    split: str | None = None,
    statuses: tuple[str, ...] = (),
    limit: int = DEFAULT_LIMIT,
    predictions: str | Path | None = None,
    root: str | Path | None = None,
    cache: Path | None = None,
) -> Any:
    """The FiftyOne dataset of up to ``limit`` samples of ``store`` (spread evenly over those
    matching ``split`` and ``statuses``; with ``predictions``, over the run's test samples).

    Call it inside :func:`viewer_database`. The dataset is persistent and named ``name`` (default
    ``<dataset>-<digest>``); when one of that name was built from the same store, selection and
    predictions, it is returned as it is. Images are written once under ``<cache>/<digest>/``.

    Args:
        store: a path or URL (:func:`pipeline.store.open_store`); it is only read.
        predictions: a ``fer-train`` run directory whose test predictions to attach.
        root: where the dataset's source images lie here (default: where the store was built from).

    Returns:
        a ``fiftyone.Dataset``, grouped (slices :data:`FACE_SLICE`, :data:`SOURCE_SLICE`).

    Raises:
        StoreError: the store cannot be opened, or no sample matches.
        ViewerError: FiftyOne is missing, or the predictions do not fit this store.
    """
    if limit < 1:
        raise ViewerError(f"--limit must be at least 1, not {limit}")
    fo = import_fiftyone()
    group = open_store(store)
    provenance = provenance_of(group)
    digest = store_digest(provenance)
    run = RunPredictions.read(Path(predictions)) if predictions is not None else None
    indices = _select(group, split=split, statuses=statuses, limit=limit, predictions=run)
    name = name or f"{provenance.dataset}-{digest[:8]}"
    built_from = {
        "view_version": VIEW_VERSION,
        "store_digest": digest,
        "indices_sha256": hashlib.sha256(indices.astype(np.int64).tobytes()).hexdigest(),
        "root": None if root is None else str(root),
        "predictions_sha256": None if run is None else run.digest(),
    }
    if fo.dataset_exists(name):
        existing = fo.load_dataset(name)
        if existing.info.get("built_from") == built_from:
            return existing
    views = write_sample_views(group, indices, (cache or default_cache()) / digest, root=root)
    several = undecided_faces(group)
    predicted = {} if run is None else _prediction_fields(fo, run)
    dataset = fo.Dataset(name, persistent=True, overwrite=True)
    dataset.add_group_field("group", default=FACE_SLICE)
    dataset.skeletons = {
        "landmarks": fo.KeypointSkeleton(
            labels=[str(i) for i in range(N_LANDMARKS)], edges=[list(edge) for edge in SKELETON_EDGES]
        )
    }
    samples = [
        sample
        for view in views
        for sample in _group_samples(
            fo, view, bool(several is not None and several[view.index]), predicted.get(view.index, {})
        )
    ]
    dataset.add_samples(samples, progress=False)
    del samples  # FiftyOne reloads the samples it holds in memory after every later write
    if run is not None:
        scored = dataset.select_group_slices(FACE_SLICE).exists("prediction")
        scored.evaluate_classifications(
            "prediction", gt_field="truth", eval_key=EVAL_KEY, classes=list(run.labels), progress=False
        )
    dataset.info = {"store": str(store), "built_from": built_from}
    dataset.save()
    return dataset


def port_in_use(port: int, address: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((address, port)) == 0


def launch_view(dataset: Any, *, port: int = DEFAULT_PORT, address: str = "127.0.0.1") -> Any:
    """Start the FiftyOne App on ``address:port`` showing ``dataset`` (no browser is opened);
    returns the ``fiftyone.Session`` (``session.close()`` stops the App).

    Raises:
        ViewerError: the port is taken.
    """
    if port_in_use(port, address):
        raise ViewerError(f"port {port} on {address} is in use: pass another --port")
    fo = import_fiftyone()
    return fo.launch_app(dataset, port=port, address=address, remote=True, auto=False)
