"""The gridworld memory tasks of MemoRL: Corridor, multi-room Portal and Instruction.

Importing this package registers every task with gymnasium (see :data:`ENV_TABLE`, the one table
of registered ids), so ``gymnasium.make("MemoRL/Corridor-v0")`` works after ``import envs``, and
``gymnasium.make("envs:MemoRL/Corridor-v0")`` works in a fresh interpreter. Registration is
idempotent: importing or calling :func:`register_envs` again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

__all__ = [
    "ENV_TABLE",
    "SHORT_NAMES",
    "EnvEntry",
    "register_envs",
    "registered_ids",
    "resolve_env_id",
]


@dataclass(frozen=True)
class EnvEntry:
    """One registered configuration of a task."""

    id: str
    """The gymnasium id, ``MemoRL/<Task>[-<variant>]-v<N>``."""
    entry_point: str
    """``module:Class`` of the single-env implementation."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Constructor arguments of this configuration."""
    vector_entry_point: str | None = None
    """``module:Class`` of a batched implementation, used by ``gymnasium.make_vec`` when set."""


_CORRIDOR = "envs.corridor:CorridorEnv"
_PORTAL = "envs.portal:PortalEnv"
_INSTRUCTION = "envs.instruction:InstructionEnv"
_CORRIDOR_VEC = "envs.batched.corridor:CorridorVectorEnv"
_PORTAL_VEC = "envs.batched.portal:PortalVectorEnv"
_INSTRUCTION_VEC = "envs.batched.instruction:InstructionVectorEnv"

#: Every registered id, in one place (the tests are parametrised over it).
ENV_TABLE: tuple[EnvEntry, ...] = (
    EnvEntry("MemoRL/Corridor-v0", _CORRIDOR, {"min_length": 3, "max_length": 200}, _CORRIDOR_VEC),
    EnvEntry(
        "MemoRL/Corridor-L10-v0", _CORRIDOR, {"min_length": 10, "max_length": 10}, _CORRIDOR_VEC
    ),
    EnvEntry(
        "MemoRL/Corridor-Short-v0", _CORRIDOR, {"min_length": 3, "max_length": 20}, _CORRIDOR_VEC
    ),
    EnvEntry("MemoRL/Portal-v0", _PORTAL, {"n_rooms": 50, "max_steps": 1000}, _PORTAL_VEC),
    EnvEntry("MemoRL/Portal-R5-v0", _PORTAL, {"n_rooms": 5, "max_steps": 200}, _PORTAL_VEC),
    EnvEntry("MemoRL/Instruction-v0", _INSTRUCTION, {}, _INSTRUCTION_VEC),
    EnvEntry(
        "MemoRL/Instruction-Short-v0",
        _INSTRUCTION,
        {
            "n_rooms": 3,
            "episode_length": 200,
            "execute_delay": 60,
            "answer_window": 60,
            "instruction_prob": 0.05,
        },
        _INSTRUCTION_VEC,
    ),
)

#: Short names accepted by the scripts' ``--env`` option.
SHORT_NAMES: dict[str, str] = {
    "corridor": "MemoRL/Corridor-v0",
    "portal": "MemoRL/Portal-v0",
    "instruction": "MemoRL/Instruction-v0",
}


def register_envs() -> None:
    """Registers every id of :data:`ENV_TABLE` that gymnasium does not know yet."""
    for entry in ENV_TABLE:
        if entry.id in gym.registry:
            continue
        gym.register(
            id=entry.id,
            entry_point=entry.entry_point,
            kwargs=dict(entry.kwargs),
            vector_entry_point=entry.vector_entry_point,
        )


def registered_ids() -> list[str]:
    """The ids of :data:`ENV_TABLE`, in table order."""
    return [entry.id for entry in ENV_TABLE]


def resolve_env_id(name: str) -> str:
    """Maps a short name (``"corridor"``) or any registered gymnasium id to a gymnasium id.

    Raises:
        ValueError: ``name`` is neither a short name nor a registered id (the message lists both).
    """
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    if name in gym.registry:
        return name
    raise ValueError(
        f"unknown env {name!r}: choose a short name {sorted(SHORT_NAMES)} or a registered id, "
        f"e.g. {registered_ids()}"
    )


register_envs()
