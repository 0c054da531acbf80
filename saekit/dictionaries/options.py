"""Per-kind options: a typed dataclass declared beside each dictionary class.

A kind's hyperparameters (``aux_coefficient`` of ``topk``, ``solver`` of ``snmf``, ...)
are the fields of its ``Options`` dataclass, a subclass of :class:`KindOptions` that the
dictionary class names as ``Options`` (as SAELens registers ``TopKSAEConfig`` beside
``TopKSAE``). The field's annotation is its type (``Literal`` for a choice), its default
the option's default, and the string below it its documentation.

On disk and in :class:`~saekit.dictionaries.DictionaryConfig`, ``options`` stays a
plain dict (the format is unchanged); :func:`check_options` validates such a dict
against the kind's dataclass: an unknown option is an error listing the kind's options,
a value of the wrong type an error naming the option and what it takes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from saekit.schema import hint_name, type_hints, type_ok


@dataclass
class KindOptions:
    """Base of every kind's options dataclass (no options of its own)."""


def option_defaults(options_cls: type) -> dict[str, Any]:
    """``{option: default}`` of a kind's options dataclass (its ``OPTIONS`` dict)."""
    return {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(options_cls)}


def options_class(name: str, defaults: dict[str, Any]) -> type:
    """An options dataclass for a kind declared the earlier way, with an ``OPTIONS`` dict
    of defaults only: every option untyped (any value), so only unknown keys are refused."""
    return dataclasses.make_dataclass(name, [(k, Any, dataclasses.field(default=v)) for k, v in defaults.items()],
                                      bases=(KindOptions,))


def check_options(kind: str, options_cls: type, options: Any, where: str = "") -> None:
    """Validate a plain ``options`` dict against the kind's options dataclass.

    Raises
    ------
    ValueError
        ``{where}: unknown option(s) [...] for kind '...'; allowed: [...]``, or
        ``{where}: option 'x' of kind '...' must be <type>, got <value>``.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(options, dict):
        raise ValueError(f"{prefix}options of kind {kind!r} must be a table of option = value, got {options!r}")
    names = [f.name for f in dataclasses.fields(options_cls)]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"{prefix}unknown option(s) {unknown} for kind {kind!r}; allowed: {sorted(names)}")
    hints = type_hints(options_cls)
    for key, value in options.items():
        hint = hints.get(key, Any)
        if not type_ok(value, hint):
            raise ValueError(f"{prefix}option {key!r} of kind {kind!r} must be {hint_name(hint)}, got {value!r}")
