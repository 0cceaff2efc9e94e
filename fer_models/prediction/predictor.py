"""A trained run applied to new pictures: every face through the store's chain, then the model.

:class:`RunPredictor` holds a run's model (its selected epoch's weights, the average where the
recipe kept one, as fer-eval scores) and its store's chain (:class:`PredictionChain`).
:func:`predict` turns inputs (image files, folders, videos) into one :class:`FacePrediction`
per face, in input order: all the faces of a picture, largest first (``largest``: only the one a
store keeps), each batched through the model on the CPU or CUDA in float32 (a run trained on
CUDA scored its own test samples with mixed precision, so there a near-tie may go the other way;
not measured on a GPU). A picture without a face, an unreadable
input and a picture the chain failed on are rows with a status and a message; a fault of the
environment (:data:`pipeline.compute.stage_check.ENVIRONMENT_ERRORS`) stops the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fer_models.prediction.chain import PredictionChain
from fer_models.prediction.sources import Picture, Unreadable, expand_inputs, is_video, read_image, video_frames
from fer_models.training.checkpoint import finite_checkpoint, load_weights
from fer_models.training.config import TrainConfig
from fer_models.training.engine import prepare_batch, resolve_device
from fer_models.training.store_view import build_model_for
from pipeline.compute.image_chain import SampleResult, StageTimer, process_faces
from pipeline.compute.model_files import LoadedModels, ModelFiles, thread_models
from pipeline.compute.stage_check import ENVIRONMENT_ERRORS, environment_fault
from pipeline.config import PreprocessConfig
from pipeline.errors import ConfigError, UnreadableImageError
from pipeline.progress import QUIET, Progress
from pipeline.stages.crop_framing import MIN_FRAMING_FACES, CropFraming
from pipeline.stages.detect import detect_boxes, largest_first
from pipeline.stages.landmarks import predict_landmarks
from pipeline.store.schema import LANDMARKS, Status


@dataclass(frozen=True)
class FacePrediction:
    """One face of one picture, or a picture (or input) without a prediction.

    source: the input as given (a file inside a given folder: its path). frame: the video frame
    (0-based), None for an image. face: the face's index in the picture, largest first, None
    where there is none. status: ``ok`` (found by the detector), ``ok_prior`` (the full frame,
    where the store's chain falls back on it), ``no_face``, ``unreadable`` or ``failed``.
    box: ``(left, top, right, bottom)`` in source pixels. predicted: the class name.
    probabilities: per class, in the run's class order.
    """

    source: str
    frame: int | None
    face: int | None
    status: str
    message: str
    box: tuple[float, float, float, float] | None = None
    predicted: str | None = None
    probabilities: tuple[float, ...] | None = None


class RunPredictor:
    """A run's model and its store's chain, on one device."""

    def __init__(
        self,
        checkpoint_path: str | Path,
        *,
        device: str = "auto",
        landmark_model: str | None = None,
        saliency_model: str | None = None,
    ) -> None:
        """Load ``checkpoint_path`` (a run's ``best.pt`` or ``last.pt``).

        Raises:
            ConfigError: not a finite checkpoint, or a chain this installation cannot reproduce
                (:meth:`PredictionChain.of_checkpoint`).
        """
        where = str(checkpoint_path)
        checkpoint = finite_checkpoint(checkpoint_path)
        self.chain = PredictionChain.of_checkpoint(
            checkpoint, where, landmark_model=landmark_model, saliency_model=saliency_model
        )
        self.class_names: list[str] = list(checkpoint.class_names)
        self.device = resolve_device(device)
        config = TrainConfig(**{**checkpoint.config, "device": device})
        model = build_model_for(
            config, self.chain.image_shape, self.chain.guidance_size, len(self.class_names), initial_weights=False
        )
        load_weights(model, checkpoint.average or checkpoint.model, where)  # what the run validated
        self.model = model.to(self.device).eval()

    def probabilities(self, faces: list[SampleResult]) -> np.ndarray:
        """``(N, K) float32`` class probabilities of ``N`` faces the chain produced."""
        batch = {
            name: torch.from_numpy(np.stack([_model_input(face, name) for face in faces])) for name in self.chain.reads
        }
        with torch.no_grad():
            logits = self.model(prepare_batch(batch, self.device))["logits"]
        probabilities: np.ndarray = logits.float().softmax(1).cpu().numpy()
        return probabilities


def _model_input(face: SampleResult, name: str) -> np.ndarray:
    """The array ``name`` of a face the chain aligned: ``image`` ``(C, S, S) uint8``,
    ``landmarks`` ``(68, 2) float32`` aligned pixels, or a guidance tensor."""
    values = face.image if name == "image" else face.landmarks if name == LANDMARKS else face.guidance.get(name)
    if values is None:
        raise ValueError(f"the chain gave no {name} for a face with status {face.status.label}")
    return values


# A picture's outcome from the chain: its faces, or a row saying why it has none.
Outcome = tuple[Picture, list[SampleResult] | FacePrediction]


def predict(
    predictor: RunPredictor,
    inputs: list[str],
    *,
    every: int = 1,
    largest: bool = False,
    crop_faces: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    progress: Progress = QUIET,
) -> Iterator[FacePrediction]:
    """One :class:`FacePrediction` per face of every picture of ``inputs``, in input order.

    Args:
        inputs: image files, folders (their image and video files, recursively) and videos.
        every: a video's every N-th frame (frames 0, N, 2N, ...).
        largest: only the largest face of each picture (the one a store keeps); always so for a
            chain that resizes whole pictures (:attr:`PredictionChain.one_face_per_picture`),
            unless ``crop_faces``.
        crop_faces: for a run on a store of kept crops, cut each face a picture holds out as the
            dataset frames its crops (:class:`~pipeline.stages.crop_framing.CropFraming`), then
            run the store's chain on each cut.
        batch_size: faces per forward pass.
        workers: processes running the chain on image files (spawned; each loads dlib's models
            once); 0: in this process.

    Raises:
        ConfigError: ``crop_faces`` for a run whose store does not keep crops.
        EnvironmentFaultError: a stage cannot run in this environment (not a picture's fault).
    """
    chain = predictor.chain
    if crop_faces and chain.crop_framing is None:
        raise ConfigError(
            "--crop-faces cuts faces out as a dataset frames its crops: it needs a run on a store that keeps them "
            f"(--align crop, with at least {MIN_FRAMING_FACES} faces the detector found); this run's store aligns by "
            f"{chain.config.align.mode}, so it finds the faces in photos itself"
        )
    files, skipped = expand_inputs(inputs)
    if skipped:
        progress.line(f"{skipped} files under the folders given are neither images nor videos: left out")
    if crop_faces and chain.crop_framing is not None:
        progress.line(
            f"note: each face found is cut out as the store's crops frame theirs: {chain.crop_framing.summary()}"
        )
    else:
        for note in chain.notes:
            progress.line(f"note: {note}")
    faces_of = functools.partial(
        chain_outcome,
        config=chain.config,
        files=chain.files,
        largest=largest or (chain.one_face_per_picture and not crop_faces),
        framing=chain.crop_framing if crop_faces else None,
    )
    pending: list[Outcome] = []
    faces = 0  # in pending
    with progress.bar("predicting", len(files)) as advance, _runner(workers) as run:
        for outcome in run(faces_of, _pictures(files, every, advance)):
            pending.append(outcome)
            faces += len(outcome[1]) if isinstance(outcome[1], list) else 0
            if faces >= batch_size:
                yield from _rows(predictor, pending)
                pending, faces = [], 0
        yield from _rows(predictor, pending)


def chain_outcome(
    picture: Picture | Unreadable,
    *,
    config: PreprocessConfig,
    files: ModelFiles,
    largest: bool,
    framing: CropFraming | None = None,
) -> Outcome:
    """The chain on one picture (an image file is read here, in the worker): its faces, or the
    row saying why it has none. ``framing``: each face is first cut out so framed
    (:func:`cropped_faces`)."""
    where = Picture(picture.source, picture.frame)  # what the outcome carries: not the pixels
    if isinstance(picture, Unreadable):
        return where, FacePrediction(picture.source, picture.frame, None, Status.UNREADABLE.label, picture.message)
    try:
        pixels = picture.pixels if picture.pixels is not None else read_image(picture.source, config.decode.max_pixels)
        models = thread_models(files)
        if framing is None:
            faces = process_faces(pixels, config, models, StageTimer(), largest=largest)
        else:
            faces = cropped_faces(pixels, config, models, framing, largest=largest)
    except UnreadableImageError as error:
        return where, FacePrediction(picture.source, picture.frame, None, Status.UNREADABLE.label, str(error))
    except ENVIRONMENT_ERRORS as error:
        raise environment_fault(error, picture.source) from error
    except Exception as error:  # noqa: BLE001 - a bad picture never stops the run
        message = f"{type(error).__name__}: {error}"
        return where, FacePrediction(picture.source, picture.frame, None, Status.FAILED.label, message)
    if faces[0].status == Status.NO_FACE:
        return where, FacePrediction(picture.source, picture.frame, None, Status.NO_FACE.label, faces[0].message)
    return where, faces


def cropped_faces(
    pixels: np.ndarray, config: PreprocessConfig, models: LoadedModels, framing: CropFraming, *, largest: bool
) -> list[SampleResult]:
    """Every face the detector finds in a photo (largest first), each cut out where ``framing``
    puts its 68 landmarks and put through the chain of a store of crops; a face's box is the one
    found in the photo.
    One ``no_face`` result where the detector finds none."""
    boxes, scores = detect_boxes(models.detector, pixels, config.detect.upsample, config.detect.min_face)
    if not boxes:
        return [SampleResult(Status.NO_FACE, "no face found by the detector in the picture (--crop-faces)")]
    results = []
    for i in largest_first(boxes, scores)[: 1 if largest else None]:
        landmarks = predict_landmarks(models.predictor, pixels, boxes[i])
        face = process_faces(framing.cut(pixels, landmarks), config, models, largest=True)[0]
        if face.image is not None:
            results.append(dataclasses.replace(face, box_src=boxes[i], faces_detected=len(boxes), face_score=scores[i]))
    return results or [SampleResult(Status.NO_FACE, "no face left in the cut-out crops (--crop-faces)")]


def _pictures(files: list[str], every: int, advance: Callable[[int], None]) -> Iterator[Picture | Unreadable]:
    """Every picture of ``files``: an image file unread (its worker reads it), each kept frame of
    a video; ``advance(1)`` as each file is done."""
    for source in files:
        if is_video(source):
            yield from video_frames(source, every)
        else:
            yield Picture(source)
        advance(1)


def _rows(predictor: RunPredictor, outcomes: list[Outcome]) -> Iterator[FacePrediction]:
    """The rows of ``outcomes`` in order, their faces through the model in one batch."""
    faces = [face for _, found in outcomes if isinstance(found, list) for face in found]
    probabilities = iter(predictor.probabilities(faces)) if faces else iter(())
    for picture, found in outcomes:
        if isinstance(found, FacePrediction):
            yield found
            continue
        for index, face in enumerate(found):
            p = next(probabilities)
            box = face.box_src
            yield FacePrediction(
                picture.source,
                picture.frame,
                index,
                face.status.label,
                face.message,
                None if box is None else (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                predictor.class_names[int(p.argmax())],
                tuple(float(v) for v in p),
            )


Runner = Callable[[Callable[[Picture | Unreadable], Outcome], Iterable[Picture | Unreadable]], Iterator[Outcome]]


@contextlib.contextmanager
def _runner(workers: int) -> Iterator[Runner]:
    """``run(function, pictures)``: the outcomes in order, computed here (``workers`` 0) or by
    ``workers`` spawned processes with at most four pictures each in flight."""
    if workers <= 0:
        yield lambda function, pictures: map(function, pictures)
        return
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield functools.partial(_in_order, executor, 4 * workers)
    finally:
        executor.shutdown(cancel_futures=True)


def _in_order(
    executor: ProcessPoolExecutor,
    window: int,
    function: Callable[[Picture | Unreadable], Outcome],
    pictures: Iterable[Picture | Unreadable],
) -> Iterator[Outcome]:
    in_flight: list[Future[Outcome]] = []
    for picture in pictures:
        in_flight.append(executor.submit(function, picture))
        if len(in_flight) >= window:
            yield in_flight.pop(0).result()
    for future in in_flight:
        yield future.result()
