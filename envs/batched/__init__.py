"""Batched versions of the tasks: every env of a vector steps at once with array operations.

:class:`CorridorVectorEnv`, :class:`PortalVectorEnv` and :class:`InstructionVectorEnv` are
``gymnasium.vector.VectorEnv`` subclasses that reproduce a ``SyncVectorEnv`` of the single env
(same seeds, same actions: the same observations, rewards, flags and infos, bit for bit), on numpy
arrays or on torch tensors of any device. They are each registered id's ``vector_entry_point``::

    gymnasium.make_vec("MemoRL/Corridor-v0", num_envs=1024, vectorization_mode="vector_entry_point")
"""

from __future__ import annotations

from typing import Any

__all__ = ["CorridorVectorEnv", "InstructionVectorEnv", "PortalVectorEnv"]

_CLASSES = {
    "CorridorVectorEnv": "envs.batched.corridor",
    "PortalVectorEnv": "envs.batched.portal",
    "InstructionVectorEnv": "envs.batched.instruction",
}


def __getattr__(name: str) -> Any:
    # Lazy imports: the single envs import envs.batched.keyed_random, so importing the batched
    # classes (which import the single envs) here eagerly would be circular.
    if name in _CLASSES:
        import importlib

        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
