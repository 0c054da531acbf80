"""Typed dataclass configs: values checked against annotations, field docstrings, TOML
and command-line flags, all from the dataclass itself.

A job's config is one dataclass whose fields carry their type (``int``, ``float | None``,
``Literal["a", "b"]``, ``list[str]``, ...) and, in a string just below the field, their
documentation. From that one declaration this module derives

- :func:`type_ok` / :func:`hint_name`: whether a value fits a field and how to say what
  the field takes (``one of 'a', 'b'`` for a ``Literal``);
- :func:`field_docs`: the field docstrings (read from the source with :mod:`ast`);
- :func:`add_config_arguments`: one argparse flag per field (the docstring is the help,
  a ``Literal`` gives ``choices``, a bool ``--x``/``--no-x``, ``X | None`` an optional
  ``X``, ``list[X]`` several values), and :func:`given_overrides`, the flags given on
  the command line as ``key=value`` overrides, so that a command passes the same
  overrides to its Python entry that ``--set`` would;
- :func:`toml_value` / :func:`dump_toml`: a config written back as TOML that
  :func:`saekit.config.load_config` reads to an equal config;
- :func:`plural`: a count and a noun that agree, for the messages about them.

It knows nothing about saekit's jobs: :mod:`saekit.config` builds the loading and
checking on it, and the dictionaries use :func:`type_ok` for their per-kind options.
Its only imports are from the standard library, so every layer can use it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import math
import textwrap
import types
import typing
from typing import Any

#: The argparse namespace attribute listing the config fields given on the command line.
GIVEN = "config_fields_given"


# --------------------------------------------------------------------------- types


def type_ok(value: Any, hint: Any) -> bool:
    """Whether a TOML value fits a field's annotation (ints where floats are declared are
    fine; bools are not ints). Annotations it does not understand accept anything."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is list or hint is list:
        args = typing.get_args(hint)
        return isinstance(value, list) and (not args or all(type_ok(v, args[0]) for v in value))
    if origin is dict or hint is dict:
        args = typing.get_args(hint)
        return isinstance(value, dict) and (not args or all(type_ok(v, args[1]) for v in value.values()))
    if origin is typing.Literal:
        # 1 == True in Python: a Literal of strings must not take a bool, nor one of ints a float
        return any(value == c and type(value) is type(c) for c in typing.get_args(hint))
    return True


def hint_name(hint: Any) -> str:
    """How an error message says what a field takes: ``int | None``, ``one of 'a', 'b'``."""
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(c) for c in typing.get_args(hint))
    return str(hint).replace("typing.", "") if not isinstance(hint, type) else hint.__name__


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """``{field: annotation}`` of a dataclass, resolved (``{}`` when they do not resolve)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: check nothing rather than fail
        return {}


def _base(hint: Any) -> tuple[Any, bool]:
    """``(hint without None, whether None was allowed)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        rest = args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007  (a runtime Union)
        return rest, len(args) < len(typing.get_args(hint))
    return hint, False


# --------------------------------------------------------------------------- field docstrings


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring below each field (the string literal after ``name: type = ...``) of a
    dataclass and its bases, the subclass's winning; one paragraph, whitespace collapsed."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue  # defined interactively: no source to read
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


# --------------------------------------------------------------------------- TOML


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (inline tables for dicts); ``None`` has no TOML form."""
    if value is None:
        raise ValueError("None has no TOML form: leave the key out to keep its default")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string (\uXXXX escapes included)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()
                               if v is not None) + "}"
    raise ValueError(f"{type(value).__name__} {value!r} has no TOML form")


def dump_toml(config: Any) -> str:
    """A config dataclass as a TOML document, one ``key = value`` line per field.

    A field holding ``None`` is left out (TOML has no null), which reads back as its
    default; where the default is not ``None`` that would change the config, so it is an
    error naming the field."""
    lines = []
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if v is None:
            if f.default is not None:
                raise ValueError(f"field {f.name!r} is None, which TOML cannot write, and its default is "
                                 f"{f.default!r}")
            continue
        lines.append(f"{f.name} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``"1 dictionary"``, ``"2 dictionaries"``: the count and the noun in agreement
    (``nouns``: the plural where adding "s", or "ies" for a consonant + "y", is wrong)."""
    if n == 1:
        return f"{n} {noun}"
    if nouns is None:
        nouns = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    return f"{n} {nouns}"


# --------------------------------------------------------------------------- command-line flags


class FieldAction(argparse.Action):
    """Stores a config field's value and records that the command line gave it."""

    def __init__(self, option_strings: list[str], dest: str, *, single: bool = False, **kw: Any):
        self.single = single  # a `str | list[str]` field: one value is kept as a plain string
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        if self.nargs == 0:  # a bool: --x or --no-x
            values = not (option_string or "").startswith("--no-")
        elif isinstance(values, list):
            if not values and not self.option_strings:
                return  # an optional positional that was not given
            if self.single and len(values) == 1:
                values = values[0]
        setattr(namespace, self.dest, values)
        given = list(getattr(namespace, GIVEN, None) or [])
        setattr(namespace, GIVEN, [*[g for g in given if g != self.dest], self.dest])


def _flag_spec(hint: Any) -> dict[str, Any] | None:
    """argparse keywords for a field's annotation, or None when no flag fits (tables)."""
    hint, _ = _base(hint)
    origin = typing.get_origin(hint)
    if hint is bool:
        return {"nargs": 0}
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        return {"type": type(choices[0]), "choices": choices}
    if hint in (int, float, str):
        return {"type": hint}
    if origin is list and typing.get_args(hint) and typing.get_args(hint)[0] in (int, float, str):
        return {"type": typing.get_args(hint)[0], "nargs": "+"}
    if origin in (typing.Union, types.UnionType):  # `str | list[str]`: one value or several
        args = typing.get_args(hint)
        lists = [a for a in args if typing.get_origin(a) is list]
        if len(args) == 2 and lists and typing.get_args(lists[0]) and typing.get_args(lists[0])[0] in args:
            return {"type": typing.get_args(lists[0])[0], "nargs": "+", "single": True}
    return None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, positional: dict[str, str] | None = None,
                         exclude: tuple[str, ...] = (), help: dict[str, str] | None = None) -> None:
    """Add one argument per field of the dataclass ``cls`` to ``parser``.

    Parameters
    ----------
    parser
        The command's parser.
    cls
        The config dataclass. Each field ``name`` becomes ``--name`` (underscores as dashes)
        with ``dest=name``, the field's default, and its docstring (plus the default) as
        help. ``bool`` gives ``--name``/``--no-name``; ``Literal[...]`` gives ``choices``;
        ``X | None`` an optional ``X``; ``list[X]`` one or more values. Fields whose type
        has no flag form (tables, lists of tables) are left to TOML and ``--set``.
    positional
        ``{field: metavar}``: fields taken as positional arguments (zero or more values
        for a list), e.g. the dictionaries ``saekit compare`` compares.
    exclude
        Fields that get no flag (a command that sets them another way).
    help
        ``{field: text}`` replacing a field's docstring as its help.

    Notes
    -----
    No flag is argparse-required: a required field may come from a TOML file instead,
    so :func:`saekit.config.build_config` reports the missing ones after merging. Which
    fields the command line gave is recorded (:func:`given_overrides` reads it), so a
    flag overrides the TOML file even when its value equals the field's default.
    """
    docs, hints = field_docs(cls), type_hints(cls)
    positional, help = positional or {}, help or {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        spec = _flag_spec(hints.get(f.name, Any))
        if spec is None:
            continue
        default = _default(f)
        text = help.get(f.name, docs.get(f.name, ""))
        if default is not None and default != [] and spec.get("nargs") != 0:
            text = f"{text} (default: {default})" if text else f"default: {default}"
        text = text.replace("%", "%%")
        if f.name in positional:
            spec = {**spec, "nargs": "*" if spec.get("nargs") == "+" else "?"}
            parser.add_argument(f.name, metavar=positional[f.name], action=FieldAction, default=default,
                                help=text, **spec)
            continue
        flag = "--" + f.name.replace("_", "-")
        names = [flag, "--no-" + flag[2:]] if spec.get("nargs") == 0 else [flag]
        parser.add_argument(*names, dest=f.name, action=FieldAction, default=default, help=text, **spec)


def given_overrides(cls: type, args: argparse.Namespace) -> list[str]:
    """The fields of ``cls`` given on the command line, as ``key=value`` overrides (values
    in TOML), in the order given: what ``--set`` would have said."""
    names = {f.name for f in dataclasses.fields(cls)}
    return [f"{name}={toml_value(getattr(args, name))}" for name in getattr(args, GIVEN, None) or []
            if name in names]


def parse_override(item: str) -> tuple[str, str]:
    """``"key=value"`` as ``(key, value text)``, or a ValueError naming the item."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects key=value, got {item!r}")
    return key.strip(), text.strip()


def add_config_file_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` (a TOML file of the config's fields) and ``--set KEY=VALUE``, for a
    command whose config is otherwise all flags. Precedence: defaults, the file, the
    flags, then ``--set`` items in order."""
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="TOML file of this command's settings (flags and --set override it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting (value parsed as TOML); repeatable")
