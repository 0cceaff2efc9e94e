"""The preprocessing knobs, read off the fields of :class:`~pipeline.config.PreprocessConfig`.

A knob is a config field declared with :func:`pipeline.config.knob` metadata. Everything that
offers the knobs to a user is made from :func:`preprocess_knobs`: ``fer-preprocess``'s options
(:mod:`cli.preprocess`), ``make preprocess``'s variables (:attr:`Knob.make_variable`) and the
config layer they give (:func:`config_layer`). Adding a knob is adding one field.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.config import PreprocessConfig


@dataclass(frozen=True)
class Knob:
    """One preprocessing knob.

    section: the config section holding it (``"align"``), or None for a top-level field.
    name: the field's name in that section (``"size"``).
    option: the command-line option (``"--size"``).
    help: what it does, one sentence.
    default: the field's default (a dataset's own defaults come before it).
    value_type: ``int``, ``float`` or ``str`` (a comma-separated list for a tuple field).
    choices: the values a ``Literal`` field allows, in its order; None for any value of the type.
    """

    section: str | None
    name: str
    option: str
    help: str
    default: Any
    value_type: type
    choices: tuple[str, ...] | None

    @property
    def parameter(self) -> str:
        """The option's parameter name (``"detect_min_face"`` for ``--detect-min-face``)."""
        return self.option.removeprefix("--").replace("-", "_")

    @property
    def make_variable(self) -> str:
        """The ``make preprocess`` variable (``"DETECT_MIN_FACE"``)."""
        return self.parameter.upper()

    @property
    def path(self) -> str:
        """The field's dotted path in the config (``"align.size"``)."""
        return self.name if self.section is None else f"{self.section}.{self.name}"

    def in_layer(self, layer: Mapping[str, Any]) -> Any:
        """This knob's value in a config layer (a dataset's ``config_defaults``), or None."""
        if self.section is None:
            return layer.get(self.name)
        return layer.get(self.section, {}).get(self.name)


def preprocess_knobs() -> tuple[Knob, ...]:
    """Every knob of :class:`PreprocessConfig`, in the order of its sections and fields."""
    knobs: list[Knob] = []
    defaults = PreprocessConfig()
    for top in dataclasses.fields(PreprocessConfig):
        value = getattr(defaults, top.name)
        if dataclasses.is_dataclass(value):
            hints = typing.get_type_hints(type(value))
            for inner in dataclasses.fields(value):
                if "option" in inner.metadata:
                    knobs.append(_knob(top.name, inner, hints[inner.name], inner.default))
        elif "option" in top.metadata:
            knobs.append(_knob(None, top, typing.get_type_hints(PreprocessConfig)[top.name], top.default))
    return tuple(knobs)


def _knob(section: str | None, field: dataclasses.Field[Any], hint: Any, default: Any) -> Knob:
    choices: tuple[str, ...] | None = None
    if typing.get_origin(hint) is typing.Literal:
        choices, value_type = typing.get_args(hint), str
    elif hint in (int, float, str):
        value_type = hint
    elif typing.get_origin(hint) is tuple:
        value_type, default = str, ",".join(default)
    else:
        raise TypeError(f"knob {field.name!r} has a type the command line cannot take: {hint!r}")
    return Knob(section, field.name, field.metadata["option"], field.metadata["help"], default, value_type, choices)


def config_layer(values: Mapping[str, Any]) -> dict[str, Any]:
    """The config layer (as :func:`pipeline.config.build_config` takes it) of the knobs given:
    ``values`` maps :attr:`Knob.parameter` names to values, None for a knob not given."""
    layer: dict[str, Any] = {}
    for knob in preprocess_knobs():
        value = values.get(knob.parameter)
        if value is None:
            continue
        if knob.section is None:
            layer[knob.name] = value
        else:
            layer.setdefault(knob.section, {})[knob.name] = value
    return layer
