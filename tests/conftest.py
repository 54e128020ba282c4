"""Builders shared by the test suite: seeded memories, synthetic episode streams, chunked runs.

Each is a fixture returning the function, so a test asks for what it uses by name (and a test
file can bind its own defaults with ``functools.partial``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import pytest
import torch
from torch import Tensor

from policies.memory import Memory, State, make_memory


def _build_memory(
    name: str, d_in: int, *, seed: int = 0, train: bool = False, **config
) -> Memory:
    """The memory registered as ``name`` with ``d_in`` inputs, built after ``manual_seed(seed)``
    (so its parameters are reproducible), in eval mode unless ``train``."""
    torch.manual_seed(seed)
    return make_memory(name, d_in, **config).train(train)


def _episode_stream(
    t_len: int, batch: int, d_in: int, *, resets: Iterable[tuple[int, int]] = (), seed: int = 1
) -> tuple[Tensor, Tensor]:
    """Inputs ``x`` (T, B, d_in), standard normal from ``seed``, and ``episode_starts`` (T, B):
    true at t = 0 for every row and at each ``(t, b)`` of ``resets`` with ``t < T`` (row
    ``b % B``, so one reset table serves any batch size)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t_len, batch, d_in, generator=g)
    starts = torch.zeros(t_len, batch, dtype=torch.bool)
    starts[0] = True
    for t, b in resets:
        if t < t_len:
            starts[t, b % batch] = True
    return x, starts


def _run_chunks(
    mem: Memory, x: Tensor, starts: Tensor, sizes: Sequence[int], state: State | None = None
) -> tuple[Tensor, State, list[dict[str, Tensor]]]:
    """Run ``mem`` over ``x`` in consecutive calls of ``sizes`` steps, passing the state along
    (from ``initial_state`` unless ``state`` is given). Returns the outputs (T, B, D_out)
    concatenated, the final state and each call's ``aux``."""
    if sum(sizes) != x.shape[0]:
        raise ValueError(f"chunk sizes {list(sizes)} do not add up to the {x.shape[0]} steps")
    state = mem.initial_state(x.shape[1], x.device) if state is None else state
    ys, auxs, lo = [], [], 0
    for size in sizes:
        y, state, aux = mem(x[lo : lo + size], state, starts[lo : lo + size])
        ys.append(y)
        auxs.append(aux)
        lo += size
    return torch.cat(ys), state, auxs


@pytest.fixture
def build_memory() -> Callable[..., Memory]:
    """``build_memory(name, d_in, *, seed=0, train=False, **config)``: a seeded memory."""
    return _build_memory


@pytest.fixture
def episode_stream() -> Callable[..., tuple[Tensor, Tensor]]:
    """``episode_stream(t_len, batch, d_in, *, resets=(), seed=1)``: ``(x, episode_starts)``."""
    return _episode_stream


@pytest.fixture
def run_chunks() -> Callable[..., tuple[Tensor, State, list[dict[str, Tensor]]]]:
    """``run_chunks(mem, x, starts, sizes, state=None)``: ``(y, final state, auxs)``."""
    return _run_chunks
