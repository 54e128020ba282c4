"""Command lines from the config dataclasses: one option per field, its parser chosen by the
field's type, its help text the field's (:func:`~agents.config.field_docs`), its default the
presets' (shown, not set: an option not given leaves the field to the algorithm and env presets).

A small generator of our own rather than a library (``tyro``, ``simple-parsing``): the config
uses six kinds of type (bool, int, float, ``Literal``, ``X | None``, ``dict``), argparse covers
each in a line, and the scripts keep argparse's plain ``--help`` and our one-line errors
(:class:`OneLineParser`) instead of a dependency's formatting.

Type -> option: ``bool`` is ``--x/--no-x``; ``int``, ``float`` and ``str`` take one value;
``Literal[...]`` takes one of its values (``choices``); ``X | None`` takes an X or ``none``;
``dict[str, ...]`` takes ``KEY=VALUE ...`` (values read as Python literals where they are one);
``Annotated[X, ...]`` is X's option (its checks run when the config is validated).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, NoReturn, Union

from .config import field_docs, field_types

__all__ = ["OneLineParser", "add_config_options", "config_options", "parse_kv"]


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``prog: error: ...``, then a hint to
    ``--help``) instead of the usage block and the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_kv(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values read as Python literals if they are);
    a ValueError for an item without ``=``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} entries must be key=value, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def add_config_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config_class: type,
    defaults: Mapping[str, Any],
    skip: Sequence[str] = (),
) -> None:
    """One option per field of ``config_class`` (but ``skip``), ``--field-name``, storing into
    ``field_name`` only when given; ``defaults`` maps a name (e.g. an algorithm) to a config
    instance whose values the help shows."""
    docs, hints = field_docs(config_class), field_types(config_class)
    for f in dataclasses.fields(config_class):
        if f.name in skip:
            continue
        shown = {name: getattr(cfg, f.name) for name, cfg in defaults.items()}
        if len({repr(v) for v in shown.values()}) == 1:
            default = repr(next(iter(shown.values())))
        else:
            default = ", ".join(f"{name}: {v!r}" for name, v in shown.items())
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, default=argparse.SUPPRESS,
            help=f"{docs[f.name]} (default: {default})".replace("%", "%%"),
            **_argument_kwargs(f.name, hints[f.name]),
        )


def config_options(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The fields of ``config_class`` given on the command line, by name."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
            if hasattr(args, f.name)}


# helpers


class _KeyValues(argparse.Action):
    """``KEY=VALUE ...`` into a dict (:func:`parse_kv`)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        try:
            setattr(namespace, self.dest, parse_kv(values, option_string or self.dest))
        except ValueError as err:
            raise argparse.ArgumentError(self, str(err)) from None


def _argument_kwargs(name: str, hint: Any) -> dict[str, Any]:
    """argparse's keywords for a field of type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _argument_kwargs(name, args[0])
    if origin in (Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        parse = _argument_kwargs(name, inner)["type"]

        def optional(text: str) -> Any:
            return None if text.lower() == "none" else parse(text)

        optional.__name__ = f"{parse.__name__} or none"  # argparse names it in its errors
        return {"type": optional, "metavar": f"{inner.__name__.upper()}|none"}
    if origin is Literal:
        return {"choices": list(args)}
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if hint in (int, float, str):
        return {"type": hint}
    if origin is dict:
        return {"nargs": "*", "metavar": "KEY=VALUE", "action": _KeyValues}
    raise TypeError(f"config field {name}: no command-line option for type {hint!r}")

