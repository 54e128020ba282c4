"""The gridworld memory tasks of MemoRL: Corridor, multi-room Portal, Instruction and the Passive
T-Maze.

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


def _entry(module: str, task: str, env_id: str, **kwargs: Any) -> EnvEntry:
    # every task's single env and batched env come from its one module
    return EnvEntry(env_id, f"envs.{module}:{task}Env", kwargs, f"envs.{module}:{task}VectorEnv")


#: Every registered id, in one place (the tests are parametrised over it).
ENV_TABLE: tuple[EnvEntry, ...] = (
    _entry("corridor", "Corridor", "MemoRL/Corridor-v0", min_length=3, max_length=200),
    _entry("corridor", "Corridor", "MemoRL/Corridor-L10-v0", min_length=10, max_length=10),
    _entry("corridor", "Corridor", "MemoRL/Corridor-Short-v0", min_length=3, max_length=20),
    _entry("portal", "Portal", "MemoRL/Portal-v0", n_rooms=50, max_steps=1000),
    _entry("portal", "Portal", "MemoRL/Portal-R5-v0", n_rooms=5, max_steps=200),
    _entry("instruction", "Instruction", "MemoRL/Instruction-v0"),
    _entry("instruction", "Instruction", "MemoRL/Instruction-Short-v0", n_rooms=3,
           episode_length=200, execute_delay=60, answer_window=60, instruction_prob=0.05),
    _entry("tmaze", "TMaze", "MemoRL/TMaze-v0", length=100),
    _entry("tmaze", "TMaze", "MemoRL/TMaze-L10-v0", length=10),
    _entry("tmaze", "TMaze", "MemoRL/TMaze-L50-v0", length=50),
    _entry("tmaze", "TMaze", "MemoRL/TMaze-L1500-v0", length=1500),
    _entry("tmaze", "TMaze", "MemoRL/TMaze-L3000-v0", length=3000),
)

#: Short names accepted by the scripts' ``--env`` option.
SHORT_NAMES: dict[str, str] = {
    "corridor": "MemoRL/Corridor-v0",
    "portal": "MemoRL/Portal-v0",
    "instruction": "MemoRL/Instruction-v0",
    "tmaze": "MemoRL/TMaze-v0",
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

    The ids of our tasks only; the agents and scripts resolve every form of id (minigrid's,
    ``module:Env-v0``) with ``agents.resolve_env``.

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
