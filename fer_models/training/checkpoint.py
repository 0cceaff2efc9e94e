"""Checkpoints: a typed record, written atomically, loaded with ``weights_only=True`` and checked,
compared with a config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fer_models.models.registry import WEIGHT_FILE_OPTIONS
from fer_models.models.weight_files import check_inflation
from fer_models.training.config import TrainConfig, recorded_config
from pipeline.config import differing_keys, file_sha256
from pipeline.errors import CheckpointSaveError, ConfigError

# 2: the protocol of fer_models.training.protocol (format-1 fold runs chose their epoch on the test fold).
CHECKPOINT_FORMAT = 2


@dataclass(frozen=True)
class Checkpoint:
    """One epoch of a run, as ``last.pt`` and ``best.pt`` hold it.

    model: the model's tensors by name. optimizer: the optimizer's state. epoch: the epochs done.
    history: one record per epoch (``log.jsonl``'s lines). best: the selected epoch and its
    validation accuracy. config: the run's resolved :class:`TrainConfig` as a dict. class_names,
    label_set: what the classes are. store: the store's location and provenance hashes
    (``dataset``, ``config_sha256``, ``manifest_sha256``) and, in checkpoints written since
    prediction existed, what rebuilds its chain: ``preprocessing`` (the store's config),
    ``models`` (its model files' names and sha256), ``versions``, ``image_shape`` ``[C, S, S]``
    and ``guidance_size`` H. average: the weight average's tensors
    by name, where the recipe keeps one (``ema_decay``; it is what was validated and is tested),
    else None. initial_weights: the sha256 of each file the run's weights started from, by path
    (``--init``, ``backbone_weights``; :func:`initial_weight_digests`); None in checkpoints written
    before it was recorded.
    """

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    epoch: int
    history: list[dict[str, Any]]
    best: dict[str, Any]
    config: dict[str, Any]
    class_names: list[str]
    label_set: str
    store: dict[str, Any]
    average: dict[str, torch.Tensor] | None = None
    initial_weights: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain types and tensors only, as ``torch.load(..., weights_only=True)`` reads them."""
        return {
            "format": CHECKPOINT_FORMAT,
            **{field.name: getattr(self, field.name) for field in dataclasses.fields(self)},
        }

    @classmethod
    def from_dict(cls, data: Any, path: str | Path) -> Checkpoint:
        """The checkpoint in ``data`` (what ``torch.load`` gave for ``path``).

        Raises:
            ConfigError: not a checkpoint of this version of fer-train, or a field missing or of
                another type than it writes (each named).
        """
        if isinstance(data, dict) and data.get("format") == 1:
            raise ConfigError(
                f"{path} was written by an earlier fer-train (checkpoint format 1), whose fold runs chose "
                "their epoch on the test fold; train it again with this version"
            )
        if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(f"{path} is not a checkpoint written by fer-train (format {CHECKPOINT_FORMAT})")
        wrong = [
            f"{key!r} ({'missing' if key not in data else type(data[key]).__name__}; should be {what})"
            for key, (kind, what) in _FIELDS.items()
            if not (key in _OPTIONAL and data.get(key) is None) and not _is(data.get(key), kind)
        ]
        if wrong:
            raise ConfigError(
                f"{path} is damaged or was edited: its fields {', '.join(wrong)} are not what fer-train writes; "
                "use another checkpoint of the run"
            )
        fields: dict[str, Any] = {key: data.get(key) for key in _FIELDS}
        return cls(**fields)

    @property
    def non_finite_weights(self) -> int:
        """How many of the model's weights are NaN or infinite."""
        return sum(int((~torch.isfinite(values)).sum()) for values in self.model.values() if values.is_floating_point())


# What from_dict accepts of each field: its type, or (container, item type), and what it is.
_FIELDS: dict[str, tuple[Any, str]] = {
    "model": ((dict, torch.Tensor), "the model's tensors by name"),
    "optimizer": (dict, "the optimizer's state"),
    "epoch": (int, "an epoch number"),
    "history": ((list, dict), "one record per epoch"),
    "best": (dict, "the selected epoch"),
    "config": (dict, "the run's configuration"),
    "class_names": ((list, str), "the class names"),
    "label_set": (str, "a label set's name"),
    "store": (dict, "the store's provenance hashes"),
    "average": ((dict, torch.Tensor), "the weight average's tensors by name"),
    "initial_weights": ((dict, str), "the digests of the initial weight files by path"),
}
# None where the recipe keeps no average; absent from checkpoints written before each existed.
_OPTIONAL = {"average", "initial_weights"}


def _is(value: Any, kind: Any) -> bool:
    if isinstance(kind, tuple):
        container, item = kind
        items = value.values() if isinstance(value, dict) else value
        return isinstance(value, container) and all(isinstance(entry, item) for entry in items)
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def save_checkpoint(checkpoint: Checkpoint, path: Path) -> None:
    """Write atomically: a run killed while saving, or a save that fails (a full disk), keeps the
    previous file.

    Raises:
        CheckpointSaveError: the file could not be written, saying why.
    """
    partial = path.with_suffix(".partial")
    try:
        torch.save(checkpoint.to_dict(), partial)
        os.replace(partial, path)
    except (OSError, RuntimeError) as error:  # torch reports a full disk as RuntimeError
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written yet"
        raise CheckpointSaveError(
            f"cannot save the checkpoint {path} ({' '.join(str(error).split())}; {free:,} bytes free on its disk); "
            f"{kept}. Free space (or fix the folder's permissions), then run the same command with --resume"
        ) from None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """A checkpoint written by :func:`~fer_models.training.run_directory.train`, loaded with
    ``weights_only=True`` and checked (:meth:`Checkpoint.from_dict`).

    Raises:
        ConfigError: not a readable checkpoint of this project, or a damaged one.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"no checkpoint at {path}")
    check_inflation(path, f"checkpoint {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"no checkpoint at {path}") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a bad file
        raise ConfigError(f"{path} is not a readable checkpoint: {error}") from None
    return Checkpoint.from_dict(data, path)


def finite_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``, refused when its weights are not all finite."""
    checkpoint = load_checkpoint(path)
    broken = checkpoint.non_finite_weights
    if broken:
        raise ConfigError(
            f"{broken:,} of the weights in {path} are NaN or infinite: the run that wrote it diverged, "
            "so its predictions mean nothing; score an earlier checkpoint of the run, or train again with a lower --lr"
        )
    return checkpoint


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load a checkpoint's model tensors into ``model``, all of them, shapes matching.

    Raises:
        ConfigError: tensors missing, unexpected or of other shapes, naming the first few.
    """
    own = model.state_dict()
    missing = [name for name in own if name not in state]
    unexpected = [name for name in state if name not in own]
    reshaped = [
        f"{name} {list(state[name].shape)} (the model's: {list(tensor.shape)})"
        for name, tensor in own.items()
        if name in state and state[name].shape != tensor.shape
    ]
    if missing or unexpected or reshaped:
        said = [
            f"{label}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
            for label, names in (("missing", missing), ("not in the model", unexpected), ("other shapes", reshaped))
            if names
        ]
        raise ConfigError(
            f"the weights in {path} do not fit the {type(model).__name__} this run builds ({'; '.join(said)}); "
            "was it written with other model options or by another version?"
        )
    model.load_state_dict(state)


# The settings a resumed run may change: ``epochs`` (to train on) and ``device_data`` (where the
# batches are made, not what they hold).
RESUME_MAY_CHANGE = ("epochs", "device_data")


def options_differing(checkpoint: Checkpoint, config: TrainConfig) -> list[str]:
    """``["lr: 0.003 != 0.01", ...]``: where ``config`` differs from the checkpoint's run, apart
    from :data:`RESUME_MAY_CHANGE`."""
    stored = {k: v for k, v in recorded_config(checkpoint.config).items() if k not in RESUME_MAY_CHANGE}
    current = {
        k: v for k, v in json.loads(json.dumps(dataclasses.asdict(config))).items() if k not in RESUME_MAY_CHANGE
    }
    if same_store(stored.get("store"), current.get("store")):  # one store, spelt two ways
        current["store"] = stored.get("store")
    return differing_keys(stored, current)


def same_store(recorded: object, given: object) -> bool:
    """Whether two spellings name one store: equal, or local paths resolving to one folder."""
    if recorded == given:
        return True
    if not isinstance(recorded, str) or not isinstance(given, str) or "://" in recorded or "://" in given:
        return False
    return Path(recorded).resolve() == Path(given).resolve()


def initial_weight_digests(config: TrainConfig) -> dict[str, str]:
    """``{path: sha256}`` of the files a new run's weights start from: ``--init`` and the model's
    weight-file options (``backbone_weights``) that are set."""
    paths = [config.init, *(config.options.get(name) for name in WEIGHT_FILE_OPTIONS)]
    return {str(path): file_sha256(path) for path in paths if path}


def load_initial_weights(model: torch.nn.Module, path: str) -> str:
    """Load a user's weights (a state dict, or a fer-train checkpoint) into the tensors of
    ``model`` with the same names and shapes; returns a one-line report.

    Raises:
        ConfigError: unreadable, or no tensor matches.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"--init {path}: no such file")
    check_inflation(path, f"--init {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"--init {path}: cannot read it as weights ({error})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and getattr(v, "shape", None) == own[k].shape}
    if not matching:
        raise ConfigError(
            f"--init {path}: none of its {len(state)} tensors matches a parameter of this model by name and shape"
        )
    model.load_state_dict(matching, strict=False)
    return f"--init {path}: loaded {len(matching)} of the model's {len(own)} tensors ({len(state) - len(matching)} in the file unused)"
