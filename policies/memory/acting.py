"""The acting cache: what a memory derives from its state, kept while the parameters are fixed.

A rollout calls a memory one step at a time without gradients, and every step needs values that
are functions of the state and the parameters only: each cached memory's keys and values in every
layer, Expire-Span's spans, a segment's partial encoding. Recomputing them from the stored hidden
states at every step is what made acting cost grow with the cache. While acting, a memory
therefore attaches them to the state it returns, and the next acting call reuses them instead of
recomputing them. Training calls (gradients recorded) never use an acting cache: they recompute
everything from the stored hidden states, which is what trains e.g. Expire-Span's span predictor on
memories made before a BPTT boundary.

Where the cache lives. The state's keys, shapes and values are unchanged (the contract of
:mod:`.base` holds as before); the cache is attached to one tensor of the returned state (the
*anchor*) through a registry keyed by that tensor object (weakly: it goes when the tensor goes),
so it travels with that exact tensor and nothing else:

* anything that makes new tensors drops it: :func:`~.base.index_state`, :func:`~.base.stack_states`,
  :func:`~.base.cat_states`, :func:`~.base.detach_state`, ``.to(device)``, a checkpoint's
  ``.cpu()``, pickling, deep copies; the next acting call then recomputes the cache once from
  the stored hidden states. A rollout buffer that stores a state keeps a reference to the same
  tensors (no copy, no extra keys), and the batches it builds from them carry no cache.

When a cache is trusted. Only by the memory that made it (a token per memory instance), only if
the anchor and the other state tensors it was derived from are the same objects, unmodified
(autograd version counters), and only if the parameters it depends on are unchanged: no call of
the memory has recorded gradients since (a training update always runs one before its optimizer
step, fused optimizers included), and the parameters' version counters and storages are the same
(in-place optimizer steps, ``load_state_dict``, ``.to()``). Code that writes ``p.data`` directly
between acting calls, without a training call in between, must pass a state without cache
(:func:`~.base.detach_state` does it).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["Stamp", "acting_call", "attach_cache", "cache_stamp", "cached", "has_cache"]

#: What a cache was made under: (memory token, training calls, parameter versions and storages).
Stamp = tuple[object, int, tuple[tuple[int, int], ...]]


class _Cache(NamedTuple):
    """An acting cache attached to a state tensor (see the module docstring)."""

    anchor: weakref.ref  # the tensor it is attached to
    stamp: Stamp
    sources: tuple[tuple[str, weakref.ref, int], ...]  # (key, tensor, version) it was made from
    values: dict[str, Tensor]


#: anchor tensor id -> its cache; an entry is removed when its anchor is freed
_CACHES: dict[int, _Cache] = {}


def _forget(key: int, ref: weakref.ref) -> None:
    entry = _CACHES.get(key)
    if entry is not None and entry.anchor is ref:
        del _CACHES[key]


def acting_call(memory: nn.Module) -> bool:
    """Whether this call of ``memory`` may use and attach an acting cache.

    True when no gradient is recorded and ``memory.acting_cache`` (default True) allows it. A call
    that records gradients is counted: it may precede a parameter update, so it invalidates every
    cache the memory made before.
    """
    if torch.is_grad_enabled():
        memory.__dict__["_training_calls"] = memory.__dict__.get("_training_calls", 0) + 1
        return False
    return bool(getattr(memory, "acting_cache", True))


def cache_stamp(memory: nn.Module, parameters: Iterable[Tensor]) -> Stamp:
    """The stamp of caches ``memory`` makes now from ``parameters`` (those the cache depends on)."""
    token = memory.__dict__.get("_cache_token")
    if token is None:
        token = memory.__dict__["_cache_token"] = object()
    versions = tuple((_version(p), p.data_ptr()) for p in parameters)
    return token, memory.__dict__.get("_training_calls", 0), versions


def _version(tensor: Tensor) -> int:
    """The tensor's autograd version counter; -1 for inference-mode tensors, which have none (an
    in-place change of one inside ``torch.inference_mode`` is not noticed)."""
    return -1 if tensor.is_inference() else tensor._version


def _entry(tensor: Tensor) -> _Cache | None:
    entry = _CACHES.get(id(tensor))
    return entry if entry is not None and entry.anchor() is tensor else None


def cached(state: dict[str, Tensor], anchor: str, stamp: Stamp) -> dict[str, Tensor] | None:
    """The cache attached to ``state[anchor]`` if it is still valid under ``stamp``, else None."""
    entry = _entry(state[anchor])
    if entry is None:
        return None
    made = entry.stamp
    if made[0] is not stamp[0] or made[1] != stamp[1] or made[2] != stamp[2]:
        return None
    for key, ref, version in entry.sources:
        now = state.get(key)
        if now is None or now is not ref() or _version(now) != version:
            return None
    return entry.values


def attach_cache(
    state: dict[str, Tensor], anchor: str, stamp: Stamp, values: dict[str, Tensor],
    sources: Sequence[str] = (),
) -> None:
    """Attach ``values`` to ``state[anchor]``, derived from it and from ``state[k]`` for ``k`` in
    ``sources`` under the parameters of ``stamp``."""
    tensor = state[anchor]
    key = id(tensor)
    ref = weakref.ref(tensor, lambda r, key=key: _forget(key, r))
    made_from = tuple((k, weakref.ref(state[k]), _version(state[k])) for k in (anchor, *sources))
    _CACHES[key] = _Cache(ref, stamp, made_from, values)


def has_cache(tensor: Tensor) -> bool:
    """Whether ``tensor`` carries an acting cache (valid or not); for tests and diagnostics."""
    return _entry(tensor) is not None
