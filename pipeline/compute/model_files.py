"""Model files: where they are, what they hash to, and one loaded copy per worker thread.

dlib objects cannot be pickled (the shape predictor would be 100 MB if they could), one HOG
detector used by two threads at once crashes, and ONNX Runtime sessions are not picklable either.
Tasks therefore carry model *paths*; each worker thread loads its own models once, on first use,
and keeps them (:func:`thread_models`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import dlib
import numpy as np

from pipeline.config import file_sha256
from pipeline.errors import ModelFileError
from pipeline.stages.decode import to_gray, to_rgb

LANDMARK_MODEL_NAME = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class ModelFiles:
    """Paths of the model files a run uses (not hashed into the config: paths differ per machine).

    landmarks: dlib's 68-point shape predictor; None where no landmarks are placed (growing a
        store from its stored landmarks).
    saliency_network: a saliency network as an ONNX file (see :class:`SaliencyNetwork`), for the
        ``saliency_network`` guidance type; None otherwise.
    """

    landmarks: str | None
    saliency_network: str | None = None

    @classmethod
    def locate(
        cls,
        landmarks: str | Path | None = None,
        saliency_network: str | Path | None = None,
        *,
        need_landmarks: bool = True,
    ) -> ModelFiles:
        """Resolve and check model paths: the landmark model from an explicit path, else the
        ``face_recognition_models`` package; the saliency network only if given.

        Raises:
            ModelFileError: a file is missing or unreadable, with what to install or pass.
        """
        landmark_path = None
        if need_landmarks:
            path = Path(landmarks) if landmarks is not None else _packaged_model(LANDMARK_MODEL_NAME)
            landmark_path = _readable(
                path,
                "landmark model",
                f"pass --landmark-model PATH to dlib's "
                f"{LANDMARK_MODEL_NAME}, or install the face_recognition_models package",
            )
        network_path = None
        if saliency_network is not None:
            network_path = _readable(Path(saliency_network), "saliency network", "pass --saliency-model PATH.onnx")
        return cls(landmarks=landmark_path, saliency_network=network_path)

    def sha256(self) -> dict[str, dict[str, str]]:
        """``{role: {"file": name, "sha256": hex}}`` of every model in use, for the provenance.

        An ONNX network whose weights lie in external data files is identified by all its files:
        its ``sha256`` is that of each file's name and sha256 in turn, and ``external_data``
        names the other files (a network in one file keeps the file's own sha256).
        """
        records = {}
        if self.landmarks is not None:
            records["landmarks"] = {"file": Path(self.landmarks).name, "sha256": file_sha256(self.landmarks)}
        if self.saliency_network is not None:
            records["saliency_network"] = _onnx_record(Path(self.saliency_network))
        return records


def onnx_external_data(path: Path) -> list[str]:
    """The external data files the tensors of the ONNX model at ``path`` name (paths relative to
    its folder, sorted; empty for a model in one file).

    Raises:
        ModelFileError: the file is not an ONNX model.
    """
    import onnx  # imported here: only runs that use a saliency network need it

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf raises its own untyped errors
        raise ModelFileError(f"{path} is not an ONNX model: {error}") from None
    locations: set[str] = set()
    graphs = [model.graph]
    while graphs:  # the graph, and every subgraph (Loop, If, Scan bodies)
        graph = graphs.pop()
        tensors = [
            *graph.initializer,
            *(t for sparse in graph.sparse_initializer for t in (sparse.values, sparse.indices)),
        ]
        for node in graph.node:
            for attribute in node.attribute:
                tensors += [attribute.t, *attribute.tensors]
                graphs += [attribute.g, *attribute.graphs]
        for tensor in tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                locations.update(entry.value for entry in tensor.external_data if entry.key == "location")
    return sorted(locations)


def _onnx_record(path: Path) -> dict[str, str]:
    """The provenance record of an ONNX network (see :meth:`ModelFiles.sha256`)."""
    external = onnx_external_data(path)
    if not external:
        return {"file": path.name, "sha256": file_sha256(path)}
    digest = hashlib.sha256()
    for name in [path.name, *external]:
        data = path.parent / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not data.is_file():
            raise ModelFileError(f"the ONNX network {path} keeps weights in {name}, which is not a file in its folder")
        digest.update(f"{name}\0{file_sha256(data)}\0".encode())
    return {"file": path.name, "sha256": digest.hexdigest(), "external_data": ", ".join(external)}


def _readable(path: Path, what: str, hint: str) -> str:
    if not path.is_file():
        raise ModelFileError(f"{what} not found at {path}; {hint}")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as error:
        raise ModelFileError(f"{what} {path} cannot be read: {error}") from None
    return str(path.resolve())


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


# A saliency map may be at most this many times the side of the network's input.
MAX_OUTPUT_SCALE = 4
BLANK_FACE = np.zeros((32, 32, 3), dtype=np.uint8)


class SaliencyNetwork:
    """A saliency network supplied as an ONNX file, run with ONNX Runtime on the CPU.

    The contract a network must follow (bake any other normalisation into the graph before
    exporting):

    - one input ``(B, C, h, w) float32``, C = 3 (RGB) or 1 (gray), values 0..1; h and w may be
      fixed (the face is resized to them) or free (the face goes in at its aligned size S);
    - its first output is the map, ``(B, 1, h', w')`` or ``(B, h', w')``, any scale: it is
      resized to the guidance size and min-max normalised by
      :func:`pipeline.stages.saliency.network_saliency`.

    One session runs one sample at a time on one thread (workers are one process per core). A
    map more than :data:`MAX_OUTPUT_SCALE` times the side of what went in is refused before it is
    resized.
    """

    def __init__(self, path: str | Path, probe: np.ndarray | None = BLANK_FACE) -> None:
        """Load the network and run it once on ``probe`` (``(S, S) uint8`` gray or ``(S, S, 3)
        uint8``; default a blank 32 x 32 face; None: not run, as in workers, which load a network
        the run has checked): a network that cannot run on it, or gives a non-finite or oversized
        map, is refused here rather than on every sample.

        Raises:
            ModelFileError: the file is not a network that follows the contract above.
        """
        import onnxruntime  # imported here: only runs that use a saliency network need it

        self.path = str(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise ModelFileError(f"ONNX Runtime cannot load the saliency network {path}: {error}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (1, 3):
            shapes = ", ".join(f"{i.name} {i.shape}" for i in inputs)
            raise ModelFileError(
                f"the saliency network {path} must take one input (B, C, h, w) with C fixed to 3 (RGB) "
                f"or 1 (gray); it takes: {shapes}"
            )
        self.input_name = inputs[0].name
        self.channels = int(inputs[0].shape[1])
        height, width = inputs[0].shape[2:]
        self.input_size = (height, width) if isinstance(height, int) and isinstance(width, int) else None
        if probe is None:
            return
        described = f"a {'x'.join(map(str, probe.shape))} face"
        try:
            output = self(probe)
        except ModelFileError:
            raise
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            message = " ".join(str(error).split())
            raise ModelFileError(f"the saliency network {path} fails on {described}: {message}") from None
        if not np.isfinite(output).all():
            raise ModelFileError(f"the saliency network {path} gives non-finite values on {described}")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The raw map of one face.

        Args:
            image: ``(S, S) uint8`` gray or ``(S, S, 3) uint8 RGB`` aligned face.

        Returns:
            ``(h', w') float32``, the network's first output for this face, unscaled.
        """
        pixels = to_rgb(image) if self.channels == 3 else to_gray(image)[..., None]
        if self.input_size is not None:
            pixels = cv2.resize(pixels, self.input_size[::-1], interpolation=cv2.INTER_AREA)
            pixels = pixels.reshape(*self.input_size, self.channels)
        batch = (pixels.transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)
        output = np.asarray(self.session.run(None, {self.input_name: batch})[0])
        if output.ndim == 4 and output.shape[:2] == (1, 1):
            output = output[0, 0]
        elif output.ndim == 3 and output.shape[0] == 1:
            output = output[0]
        else:
            raise ModelFileError(
                f"the saliency network {self.path} gives an output of shape {output.shape}; expected "
                "(1, 1, h, w) or (1, h, w) for one face"
            )
        if max(output.shape) > MAX_OUTPUT_SCALE * max(batch.shape[2:]):
            raise ModelFileError(
                f"the saliency network {self.path} gives a {output.shape[0]}x{output.shape[1]} map for a "
                f"{batch.shape[2]}x{batch.shape[3]} input, more than {MAX_OUTPUT_SCALE} times its side"
            )
        saliency: np.ndarray = output.astype(np.float32)
        return saliency


@dataclass
class LoadedModels:
    """One thread's models; the dlib ones are None when no landmark model is in use (growing a
    store needs no detection)."""

    detector: dlib.fhog_object_detector | None
    predictor: dlib.shape_predictor | None
    saliency_network: SaliencyNetwork | None = None


_local = threading.local()


def thread_models(files: ModelFiles) -> LoadedModels:
    """This thread's loaded models for ``files``, loading them on first use."""
    cached = getattr(_local, "models", None)
    if cached is None or cached[0] != files:
        detector = predictor = None
        if files.landmarks is not None:
            try:
                predictor = dlib.shape_predictor(files.landmarks)
            except RuntimeError as error:
                raise ModelFileError(f"dlib cannot load {files.landmarks}: {error}") from None
            detector = dlib.get_frontal_face_detector()
        network = None if files.saliency_network is None else SaliencyNetwork(files.saliency_network, probe=None)
        cached = (files, LoadedModels(detector, predictor, network))
        _local.models = cached
    return cached[1]
