"""A store's provenance: what it was built from, as a frozen dataclass.

The provenance is the JSON object under :data:`ATTRS_KEY` in the root group's attributes.
:meth:`Provenance.from_attrs` parses and checks it (every key, its type, the config, the counts),
:meth:`Provenance.to_attrs` writes the same JSON back: ``from_attrs(p.to_attrs()) == p``. Nothing
else reads or writes those keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import PreprocessConfig
from pipeline.datasets.label_sets import LabelSet, label_set_from_attrs
from pipeline.errors import StoreError
from pipeline.guidance import GUIDANCE_TYPES
from pipeline.stages.box_mapping import BoxMapping
from pipeline.store.metadata import MAX_SAMPLES

SCHEMA_VERSION = 1
ATTRS_KEY = "fer_store"

ModelRecords = dict[str, dict[str, str]]  # role -> {"file": name, "sha256": hex digest}


@dataclass(frozen=True)
class Growth:
    """Guidance types added to a complete store (``fer-preprocess STORE --guidance ...``).

    types: the types, in catalogue order.
    models: the model files they were rendered with (role -> file name and sha256).
    started, finished: UTC ISO-8601 times; ``finished`` is None while the growth is unfinished.
    versions: the library versions that finished it (None while unfinished).
    failed: per type, the samples its renderer failed on (listed in ``guidance_errors``); only
        types with failures, recorded when the growth finishes.
    """

    types: tuple[str, ...]
    models: ModelRecords
    started: str
    finished: str | None = None
    versions: dict[str, str] | None = None
    failed: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Growth:
        types = tuple(attrs["types"])
        unknown = [name for name in types if name not in GUIDANCE_TYPES]
        if unknown:
            raise ValueError(f"it names unknown guidance types {unknown}")
        failed = {str(name): int(count) for name, count in attrs.get("failed", {}).items()}
        return cls(types, dict(attrs["models"]), attrs["started"], attrs.get("finished"), attrs.get("versions"), failed)

    def to_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {"types": list(self.types), "models": self.models, "started": self.started}
        if self.finished is not None:
            attrs["finished"], attrs["versions"] = self.finished, self.versions
        if self.failed:
            attrs["failed"] = dict(self.failed)
        return attrs


@dataclass(frozen=True)
class Provenance:
    """Everything a store records about how it was made (the ``fer_store`` root attributes).

    dataset: the dataset adapter's name; root: where its files were read (informational).
    label_names: class names of the ``label`` array's codes; label_sets: every label set the
        dataset defines (name -> definition; the first is the default), see :meth:`label_set`.
    landmark_flip_permutation: landmark i of a horizontally flipped face is landmark
        ``landmark_flip_permutation[i]`` of the original.
    splits: names of the ``split`` array's codes.
    created: UTC ISO-8601 time the template was written.
    complete: True once no sample is pending; counts: samples per status label and ``total``.
    config: the preprocessing config as stored (hashed into ``config_sha256``);
        :attr:`preprocess_config` is it parsed.
    manifest_sha256: hash of the dataset's rows; models: the model files used (role -> file, sha256);
        versions: library versions of the build.
    guidance_added: finished growths, oldest first; growing: the unfinished one, if any.
    box_mapping: how the dataset's boxes were mapped to dlib's framing, fitted when the store
        was created, where ``detect.mode`` takes boxes without detecting (``auto``, ``never``);
        None otherwise.
    """

    dataset: str
    root: str | None
    label_names: tuple[str, ...]
    label_sets: dict[str, dict[str, Any]]
    landmark_flip_permutation: tuple[int, ...]
    splits: tuple[str, ...]
    created: str
    complete: bool
    counts: dict[str, int]
    config: dict[str, Any]
    config_sha256: str
    manifest_sha256: str
    models: ModelRecords
    versions: dict[str, str]
    guidance_added: tuple[Growth, ...] = ()
    growing: Growth | None = None
    box_mapping: BoxMapping | None = None
    schema_version: int = SCHEMA_VERSION
    preprocess_config: PreprocessConfig = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "preprocess_config", PreprocessConfig.from_dict(self.config))
        total = self.counts.get("total")
        if not (isinstance(total, int) and 0 <= total <= MAX_SAMPLES):
            raise ValueError(f"counts.total is {total!r}, not a sample count")

    @classmethod
    def from_attrs(cls, attributes: dict[str, Any]) -> Provenance:
        """Parse a root group's attributes.

        Raises:
            StoreError: no provenance (not a FER store), another schema version, or a provenance
                that cannot be read; the message follows the store's location ("<location> is a
                Zarr group but ...").
        """
        attrs = attributes.get(ATTRS_KEY)
        if not isinstance(attrs, dict):
            raise StoreError(f"is a Zarr group but not a FER guidance store (no {ATTRS_KEY!r} attributes)")
        if attrs.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(
                f"has schema version {attrs.get('schema_version')!r}; this version of the "
                f"software reads version {SCHEMA_VERSION} (a newer store needs a newer fer-guidance-store)"
            )
        try:
            return cls(
                dataset=attrs["dataset"],
                root=attrs.get("root"),
                label_names=tuple(attrs["label_names"]),
                label_sets=dict(attrs["label_sets"]),
                landmark_flip_permutation=tuple(int(i) for i in attrs["landmark_flip_permutation"]),
                splits=tuple(attrs["splits"]),
                created=attrs["created"],
                complete=bool(attrs["complete"]),
                counts=dict(attrs["counts"]),
                config=attrs["config"],
                config_sha256=attrs["config_sha256"],
                manifest_sha256=attrs["manifest_sha256"],
                models=dict(attrs["models"]),
                versions=dict(attrs["versions"]),
                guidance_added=tuple(Growth.from_attrs(record) for record in attrs.get("guidance_added", [])),
                growing=None if attrs.get("growing") is None else Growth.from_attrs(attrs["growing"]),
                box_mapping=None if attrs.get("box_mapping") is None else BoxMapping.from_attrs(attrs["box_mapping"]),
            )
        except Exception as error:  # noqa: BLE001 - any damage to the provenance
            raise StoreError(
                f"has a provenance ({ATTRS_KEY!r} attributes) that cannot be read: {type(error).__name__}: {error}"
            ) from None

    def to_attrs(self) -> dict[str, Any]:
        """The JSON object stored under :data:`ATTRS_KEY`."""
        attrs = {
            "schema_version": self.schema_version,
            "dataset": self.dataset,
            "root": self.root,
            "label_names": list(self.label_names),
            "label_sets": self.label_sets,
            "landmark_flip_permutation": list(self.landmark_flip_permutation),
            "splits": list(self.splits),
            "created": self.created,
            "complete": self.complete,
            "counts": self.counts,
            "config": self.config,
            "config_sha256": self.config_sha256,
            "manifest_sha256": self.manifest_sha256,
            "models": self.models,
            "versions": self.versions,
        }
        if self.guidance_added:
            attrs["guidance_added"] = [growth.to_attrs() for growth in self.guidance_added]
        if self.growing is not None:
            attrs["growing"] = self.growing.to_attrs()
        if self.box_mapping is not None:
            attrs["box_mapping"] = self.box_mapping.to_attrs()
        return attrs

    def replace(self, **changes: Any) -> Provenance:
        return dataclasses.replace(self, **changes)

    @property
    def total(self) -> int:
        """N, the number of samples."""
        return self.counts["total"]

    @property
    def added_types(self) -> tuple[str, ...]:
        """Guidance types added after the build, by finished growths."""
        return tuple(name for growth in self.guidance_added for name in growth.types)

    @property
    def growing_types(self) -> tuple[str, ...]:
        """Guidance types an unfinished growth is adding (empty when none)."""
        return () if self.growing is None else self.growing.types

    def label_set(self, name: str | None) -> LabelSet:
        """The label set ``name`` (None: the default, the first).

        Raises:
            ConfigError: no label set of that name; the message lists those the store has.
        """
        return label_set_from_attrs(self.label_sets, name)
