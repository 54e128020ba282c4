"""Memories behind one contract (see :mod:`policies.memory.base`); importing this package
registers every memory by name."""

# importing a memory module registers it
from . import expire_span, memformer, rehearsal, rmt, rnn, trxl  # noqa: F401
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
