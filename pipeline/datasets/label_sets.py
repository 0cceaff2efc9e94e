"""Label sets: the ways a dataset's stored labels become training targets.

A store keeps each sample's label as the dataset defines it (``label`` indexes ``label_names``),
plus valence and vote counts where the dataset has them. A :class:`LabelSet` says how to turn
those columns into the targets of one experiment: AffectNet's 7 classes (codes 0-6), its 8 classes
(0-7), 3-class polarity from valence, FERPlus vote distributions as soft targets, ... Each adapter
defines its label sets once; the store records them in its attributes (``label_sets``, the first
one is the default), so training reads them from the store without importing the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pipeline.datasets.ferplus_votes import vote_distributions
from pipeline.errors import ConfigError

LabelSetKind = Literal["label", "valence", "votes"]
VoteScheme = Literal["share", "ferplus"]
POLARITY_NAMES = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class LabelSet:
    """One way of deriving targets from a store's columns.

    Attributes:
        name: what ``fer-train --labels`` calls it (``7``, ``8``, ``polarity``, ``votes``, ...).
        names: the target class names.
        kind: ``label``: ``mapping[stored label]`` is the target index (-1 excludes the sample);
            ``valence``: polarity from valence, negative < ``thresholds[0]`` <= neutral <=
            ``thresholds[1]`` < positive (NaN valence excludes the sample); ``votes``: soft
            targets from the vote counts, by ``scheme``.
        scheme: for kind ``votes``: ``share``, the counts of ``vote_columns`` divided by their sum
            (no votes there excludes the sample); ``ferplus``, Barsoum et al.'s probability and
            cross-entropy distribution over every vote column recorded (the eight emotions,
            unknown, NF: :mod:`pipeline.datasets.ferplus_votes`).
        draw: train on a one-hot label drawn from the soft target each time a sample is trained
            on (FERPlus's ``probability`` scheme), instead of the soft target itself.
        evaluated_with: the label set validation and test are scored with ("": this one);
            FERPlus's soft schemes are scored by majority.
    """

    name: str
    names: tuple[str, ...]
    kind: LabelSetKind
    mapping: tuple[int, ...] = ()
    thresholds: tuple[float, ...] = ()  # (low, high) for the valence kind
    vote_columns: tuple[int, ...] = ()
    scheme: VoteScheme = "share"
    draw: bool = False
    evaluated_with: str = ""

    def __post_init__(self) -> None:
        if self.kind == "label" and any(not -1 <= m < len(self.names) for m in self.mapping):
            raise ValueError(f"label set {self.name!r}: mapping {self.mapping} leaves 0..{len(self.names) - 1}")
        if self.kind == "valence" and (len(self.thresholds) != 2 or len(self.names) != 3):
            raise ValueError(f"label set {self.name!r}: polarity needs two thresholds and three names")
        if self.kind == "votes" and len(self.vote_columns) != len(self.names):
            raise ValueError(f"label set {self.name!r}: one vote column per class name")
        if self.scheme not in ("share", "ferplus") or (self.draw and self.kind != "votes"):
            raise ValueError(
                f"label set {self.name!r}: scheme {self.scheme!r}, draw {self.draw} for kind {self.kind!r}"
            )

    @classmethod
    def identity(cls, name: str, names: tuple[str, ...]) -> LabelSet:
        """Targets are the stored labels themselves."""
        return cls(name, tuple(names), "label", tuple(range(len(names))))

    @classmethod
    def from_labels(cls, name: str, label_names: tuple[str, ...], groups: dict[str, tuple[str, ...]]) -> LabelSet:
        """Targets named by ``groups`` (target name -> the stored label names it takes); stored
        labels in no group are excluded."""
        mapping = [-1] * len(label_names)
        for target, members in enumerate(groups.values()):
            for member in members:
                mapping[label_names.index(member)] = target
        return cls(name, tuple(groups), "label", tuple(mapping))

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "kind": self.kind,
            "mapping": list(self.mapping),
            "thresholds": list(self.thresholds),
            "vote_columns": list(self.vote_columns),
            **({"scheme": self.scheme} if self.scheme != "share" else {}),
            **({"draw": True} if self.draw else {}),
            **({"evaluated_with": self.evaluated_with} if self.evaluated_with else {}),
        }

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any]) -> LabelSet:
        return cls(
            name,
            tuple(data["names"]),
            data["kind"],
            tuple(data["mapping"]),
            tuple(data["thresholds"]),
            tuple(data["vote_columns"]),
            data.get("scheme", "share"),  # stores written before schemes: shares
            bool(data.get("draw", False)),
            str(data.get("evaluated_with", "")),
        )

    def targets(
        self, label: np.ndarray, valence: np.ndarray | None = None, votes: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Targets of N samples.

        Args:
            label: ``(N,) int`` stored labels, -1 unknown.
            valence: ``(N,) float32``, NaN where absent (kind ``valence``).
            votes: ``(N, L) float32`` vote counts (kind ``votes``).

        Returns:
            ``(targets, keep)``: ``targets`` is ``(N,) int64`` class indices (-1 where excluded)
            or, for kind ``votes``, ``(N, len(names)) float32`` rows summing to 1 (zeros where
            excluded); ``keep`` is ``(N,) bool``, the samples this label set trains on.
        """
        label = np.asarray(label)
        if self.kind == "label":
            table = np.asarray((*self.mapping, -1), dtype=np.int64)  # index -1 -> last entry -> -1
            known = (label >= 0) & (label < len(self.mapping))
            target = np.where(known, table[np.where(known, label, -1)], -1)
            return target, target >= 0
        if self.kind == "valence":
            if valence is None:
                raise ConfigError(f"label set {self.name!r} needs valence, which this store lacks")
            low, high = self.thresholds
            target = np.full(label.shape, -1, dtype=np.int64)
            target[valence < low] = 0
            target[(valence >= low) & (valence <= high)] = 1
            target[valence > high] = 2
            return target, target >= 0
        if votes is None:
            raise ConfigError(f"label set {self.name!r} needs vote counts, which this store lacks")
        if self.scheme == "ferplus":
            return vote_distributions(votes)
        counts = np.asarray(votes, dtype=np.float32)[:, list(self.vote_columns)]
        total = counts.sum(axis=1, keepdims=True)
        keep = total[:, 0] > 0
        return np.where(keep[:, None], counts / np.maximum(total, 1e-12), 0.0).astype(np.float32), keep


def label_sets_to_attrs(label_sets: tuple[LabelSet, ...]) -> dict[str, dict[str, Any]]:
    """``{name: definition}`` in order (the first is the default), for the store's attributes."""
    return {label_set.name: label_set.to_dict() for label_set in label_sets}


def label_set_from_attrs(attrs: dict[str, dict[str, Any]], name: str | None) -> LabelSet:
    """The label set ``name`` (None: the default, the first) recorded in a store's attributes.

    Raises:
        ConfigError: the store has no label set of that name; the message lists those it has.
    """
    if name is None:
        name = next(iter(attrs))
    if name not in attrs:
        raise ConfigError(f"no label set {name!r} in this store; it has: {', '.join(attrs)}")
    return LabelSet.from_dict(name, attrs[name])
