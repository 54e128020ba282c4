"""Counter-based random draws: the same numbers from Python ints, numpy arrays and torch tensors.

A task whose dynamics draw randomness during steps (the Instruction task's characters, messengers
and passers-by) cannot be batched bit for bit if each step pulls from a stateful generator, since
how many numbers a step pulls depends on the state. Instead, the episode draws one 32-bit key from
``np_random`` at reset, and every later draw is a pure function of ``(key, step, slot)``: a hash
(a 32-bit integer finaliser, applied three times), evaluated with 64-bit signed integer
arithmetic whose intermediate values never exceed ``2**49``. So a Python int, a numpy ``int64``
array and a torch ``int64`` tensor on any device give the same bits, and a batched env can draw
for all envs at once without touching a generator.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = [
    "KEY_RANGE",
    "bernoulli",
    "below",
    "draw",
    "hash_draw",
    "mix_u32",
    "scale",
    "step_base",
    "threshold",
]

T = TypeVar("T")

KEY_RANGE = 1 << 32
"""Episode keys are integers in ``[0, KEY_RANGE)``."""
_MASK = KEY_RANGE - 1


def _mul32(x: Any, c: int) -> Any:
    # (x * c) mod 2**32 with c split in 16-bit halves, so no product exceeds 2**48.
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK


def _mix(x: Any) -> Any:
    # A 32-bit avalanche finaliser (xor-shift, multiply, xor-shift, multiply, xor-shift).
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hash_draw(key: T, step: Any, slot: int) -> T:
    """A uniform 32-bit integer (``[0, 2**32)``) for draw number ``slot`` of step ``step``.

    ``key`` and ``step`` may be Python ints, numpy ``int64`` arrays or torch ``int64`` tensors
    (broadcast together); ``slot`` is a small non-negative int naming the draw within the step.
    """
    return _mix(_mix(key ^ _mix(step & _MASK)) ^ slot)


def below(key: T, step: Any, slot: int, n: Any) -> T:
    """A uniform integer in ``[0, n)`` (``n`` in ``[1, 2**30]``, may be an array)."""
    return (hash_draw(key, step, slot) * n) >> 32


def threshold(p: float) -> int:
    """The integer ``h`` bound with ``P(hash_draw < h) = p`` (up to ``2**-32``)."""
    return int(round(float(p) * KEY_RANGE))


def bernoulli(key: T, step: Any, slot: int, p: float) -> T:
    """True with probability ``p`` (bool, or a bool array/tensor)."""
    return hash_draw(key, step, slot) < threshold(p)


def mix_u32(x: Any) -> Any:
    """The 32-bit finaliser of :func:`hash_draw` on a numpy ``uint32`` array, in place (its
    products wrap modulo ``2**32`` by themselves); returns ``x``."""
    import numpy as np

    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def step_base(key: Any, step: Any) -> Any:
    """The part of :func:`hash_draw` shared by every slot of a step (numpy arrays or tensors).

    ``draw(step_base(key, step), slot) == hash_draw(key, step, slot)``; on numpy the result is a
    ``uint32`` array (computed with wrapping ``uint32`` products, the same bits, faster).
    """
    import numpy as np

    if isinstance(key, np.ndarray):
        return mix_u32(key.astype(np.uint32) ^ mix_u32(np.asarray(step & _MASK, np.uint32)))
    return _mix(key ^ _mix(step & _MASK))


def draw(base: Any, slot: Any) -> Any:
    """``hash_draw`` from a :func:`step_base` (``slot`` an int or an integer array)."""
    import numpy as np

    if isinstance(base, np.ndarray):
        return mix_u32(base ^ np.asarray(slot, np.uint32))
    return _mix(base ^ slot)


def scale(h: Any, n: Any) -> Any:
    """``below`` from a draw ``h`` of :func:`draw`: a uniform integer in ``[0, n)``, int64."""
    import numpy as np

    if isinstance(h, np.ndarray):
        return (h.astype(np.int64) * n) >> 32
    return (h * n) >> 32
