"""Memories behind one contract (see :mod:`policies.memory.base`); importing this package
registers every memory by name."""

from . import rnn  # noqa: F401  (registers lstm, gru, none)
from .base import (
    Memory,
    State,
    available_memories,
    cat_states,
    detach_state,
    index_state,
    make_memory,
    memory_class,
    register_memory,
    reset_state,
    stack_states,
    state_nbytes,
)

__all__ = [
    "Memory",
    "State",
    "available_memories",
    "cat_states",
    "detach_state",
    "index_state",
    "make_memory",
    "memory_class",
    "register_memory",
    "reset_state",
    "stack_states",
    "state_nbytes",
]
