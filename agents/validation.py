"""Checks at the door: one validator per kind of value (an integer in a range, a finite number in a
range, one of a set of choices, a device name). Each returns the value and raises a one-line
``ValueError`` that names the value and what is allowed, so every public entry point (the config
dataclasses, the trainer, evaluation, the scripts) refuses bad input with the same words."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Annotated, Any

__all__ = [
    "Device",
    "check_choice",
    "check_device",
    "check_int",
    "check_number",
    "describe",
    "range_text",
]

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def describe(value: Any) -> str:
    """``repr(value)``, with its type where a number was expected (``'0.9' (a str)``)."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return repr(value)
    return f"{value!r} (a {type(value).__name__})"


def range_text(ge: float | None = None, gt: float | None = None, le: float | None = None) -> str:
    """``>= 1``, ``> 0``, ``in [0, 1]``, ``in (0, 1]``, or ``""`` for no bound."""
    low = ge if ge is not None else gt
    if low is not None and le is not None:
        return f"in {'[' if gt is None else '('}{_num(low)}, {_num(le)}]"
    if ge is not None:
        return f">= {_num(ge)}"
    if gt is not None:
        return f"> {_num(gt)}"
    if le is not None:
        return f"<= {_num(le)}"
    return ""


def check_int(
    name: str, value: Any, *, ge: int | None = None, le: int | None = None
) -> int:
    """``value`` as an ``int`` (bools refused) within ``[ge, le]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not _within(value, ge, None, le):
        allowed = " ".join(filter(None, ("an integer", range_text(ge=ge, le=le))))
        raise ValueError(f"{name} must be {allowed}, got {describe(value)}")
    return int(value)


def check_number(
    name: str,
    value: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
) -> float:
    """``value`` as a finite ``float`` (ints accepted, bools and strings refused) within the
    bounds: ``ge``/``le`` inclusive, ``gt`` exclusive."""
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and _within(value, ge, gt, le)
    )
    if not ok:
        allowed = " ".join(filter(None, ("a finite number", range_text(ge, gt, le))))
        raise ValueError(f"{name} must be {allowed}, got {describe(value)}")
    return float(value)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of the strings ``choices``."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of: {', '.join(map(str, options))}, got {value!r}")
    return value


def check_device(name: str, value: Any) -> str:
    """A device name: ``auto`` (cuda when available), ``cpu``, ``cuda`` or ``cuda:N``. Whether the
    device exists is checked where it is used (:func:`agents.distributed.resolve_device`)."""
    text = str(value) if _is_device(value) else value
    if not isinstance(text, str) or _DEVICE.fullmatch(text) is None:
        raise ValueError(f"{name} must be auto, cpu, cuda or cuda:N, got {value!r}")
    return text


Device = Annotated[str, check_device]
"""A device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``): a string checked by
:func:`check_device` wherever a field of this type is validated."""


# helpers


def _is_device(value: Any) -> bool:
    import torch

    return isinstance(value, torch.device)


def _within(value: float, ge: float | None, gt: float | None, le: float | None) -> bool:
    return (
        (ge is None or value >= ge) and (gt is None or value > gt) and (le is None or value <= le)
    )


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)
