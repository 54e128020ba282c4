"""Memories behind one contract (see :mod:`policies.memory.base`); importing this package
registers every memory by name."""

# importing a memory module registers it
from . import base, expire_span, memformer, rehearsal, rmt, rnn, trxl  # noqa: F401

# the contract, the registry and the state helpers: everything in base.__all__
from .base import *  # noqa: F403

__all__: list[str] = []
__all__ += base.__all__
