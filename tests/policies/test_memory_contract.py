"""The memory contract, checked for every registered memory (a new memory is tested automatically).

Each memory runs with its defaults and, where it has them, with small settings that make its
mechanisms act inside the checked window of ``T`` steps: memories expire and the cache shrinks
(Expire-Span with a short span and ramp, Transformer-XL with a short span), segments close and
the memory is rewritten several times per episode (RMT, Memformer, Rehearsal with short
segments). ``test_small_configs_reach_their_mechanism`` checks that they do.

References are naive: step-by-step calls, fresh states, permuted batches.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import pytest
import torch

from policies.memory import (
    available_memories,
    cat_states,
    detach_state,
    index_state,
    make_memory,
    memory_losses,
    stack_states,
    state_nbytes,
)

D_IN = 12
T = 23
B = 4
NAMES = available_memories()
RESETS = ((5, 1), (11, 2), (12, 0), (17, 1))  # row 3 runs one episode over the whole window


class Case(NamedTuple):
    """A memory and the hyperparameters it is checked with."""

    name: str
    config: dict
    #: what the config makes happen inside the window: "expiry" (memories leave the cache) or
    #: "segment_end" (the state key ``written`` changes exactly at segment ends), "" for defaults
    reaches: str = ""
    written: str = ""

    @property
    def id(self) -> str:
        return self.name if not self.config else f"{self.name}-small"


SMALL = [
    Case("expire_span", dict(max_span=6, ramp=2.0, init_span_fraction=0.5, position_window=4),
         "expiry"),
    Case("trxl", dict(max_span=5, position_window=4), "expiry"),
    Case("rmt", dict(segment_len=3, num_memory_tokens=2), "segment_end", "memory"),
    Case("memformer", dict(segment_len=3, num_slots=2), "segment_end", "memory"),
    Case("rehearsal", dict(segment_len=3, num_slots=2, fragment_len=2, num_fragments=2),
         "segment_end", "slots"),
]
CASES = [Case(n, {}) for n in NAMES] + [c for c in SMALL if c.name in NAMES]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request) -> Case:
    return request.param


@pytest.fixture
def build(build_memory, case):
    """``build(seed=0, train=False)``: the case's memory."""
    return functools.partial(build_memory, case.name, D_IN, **case.config)


@pytest.fixture
def sequence(episode_stream):
    """``sequence(t_len=T)``: inputs (T, B, D_IN) and episode starts with mid-window resets."""

    def make(t_len: int = T) -> tuple[torch.Tensor, torch.Tensor]:
        return episode_stream(t_len, B, D_IN, resets=RESETS, seed=1)

    return make


def test_chunk_invariance_with_resets(build, sequence, run_chunks):
    mem = build()
    x, starts = sequence()
    with torch.no_grad():
        y_full, _, _ = run_chunks(mem, x, starts, [T])
        y_step, _, _ = run_chunks(mem, x, starts, [1] * T)
        y_chunk, _, _ = run_chunks(mem, x, starts, [3, 7, 1, 8, 4])
    assert y_full.shape == (T, B, mem.output_dim)
    torch.testing.assert_close(y_step, y_full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y_chunk, y_full, atol=1e-5, rtol=1e-4)


def test_reset_isolation(case, build, sequence, run_chunks):
    """Changing what row 0 saw before its reset at t=12 changes nothing from t=12 on."""
    mem = build()
    x, starts = sequence()
    x2 = x.clone()
    x2[:12, 0] = torch.randn(12, D_IN)
    with torch.no_grad():
        y1, _, _ = run_chunks(mem, x, starts, [T])
        y2, _, _ = run_chunks(mem, x2, starts, [T])
    torch.testing.assert_close(y1[12:, 0], y2[12:, 0], atol=1e-5, rtol=1e-4)
    # and an episode start behaves as a fresh state
    with torch.no_grad():
        y3, _, _ = run_chunks(mem, x[12:, :1], starts[12:, :1], [T - 12])
    torch.testing.assert_close(y1[12:, 0], y3[:, 0], atol=1e-5, rtol=1e-4)
    if case.name != "none":  # and the memory does carry something before the reset
        assert not torch.allclose(y1[1:12, 0], y2[1:12, 0])


def test_batch_permutation_equivariance(build, sequence, run_chunks):
    mem = build()
    x, starts = sequence()
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        y, state, _ = run_chunks(mem, x, starts, [10, 13])
        yp, statep, _ = run_chunks(mem, x[:, perm], starts[:, perm], [10, 13])
    torch.testing.assert_close(yp, y[:, perm], atol=1e-5, rtol=1e-4)
    for k in state:
        torch.testing.assert_close(statep[k], state[k][perm], atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_parameter(build, sequence):
    mem = build()
    mem.train()
    x, starts = sequence(40)
    starts = starts.clone()
    starts[1:] = False  # one long episode per row, so every mechanism (writes, expiry) runs
    state = mem.initial_state(B)
    y, _, aux = mem(x, state, starts)
    loss = y.pow(2).mean() + sum(v for k, v in aux.items() if k.startswith("loss_"))
    loss.backward()
    separate = mem.separately_trained
    missing = [
        n
        for n, p in mem.named_parameters()
        if not n.startswith(separate) and (p.grad is None or not torch.isfinite(p.grad).all()
                                           or p.grad.abs().sum() == 0)
    ]
    assert not missing, f"no gradient for {missing}"


def test_detached_state_cuts_graph(case, build, sequence):
    mem = build()
    x, starts = sequence()
    x = x.clone().requires_grad_(True)
    state = mem.initial_state(B)
    _, state, _ = mem(x[:10], state, starts[:10])
    y, _, _ = mem(x[10:], detach_state(state), starts[10:])
    y.sum().backward()
    assert x.grad is None or x.grad[:10].abs().sum() == 0
    if case.name != "none":  # without the detach, the gradient does reach the first chunk
        x.grad = None
        state = mem.initial_state(B)
        _, state, _ = mem(x[:10], state, starts[:10])
        y, _, _ = mem(x[10:], state, torch.zeros_like(starts[10:]))
        y.sum().backward()
        assert x.grad[:10].abs().sum() > 0


def test_eval_mode_deterministic(build, sequence, run_chunks):
    mem = build()
    x, starts = sequence()
    with torch.no_grad():
        y1, s1, _ = run_chunks(mem, x, starts, [T])
        y2, s2, _ = run_chunks(mem, x, starts, [T])
    assert torch.equal(y1, y2)
    for k in s1:
        assert torch.equal(s1[k], s2[k])


def test_state_is_batch_first_and_indexable(build, sequence):
    mem = build()
    x, starts = sequence()
    state0 = mem.initial_state(B)
    with torch.no_grad():
        _, state, aux = mem(x, state0, starts)
    for s in (state0, state):
        for k, v in s.items():
            assert v.shape[0] == B, f"state[{k!r}] is not batch-first: {tuple(v.shape)}"
    assert set(state) == set(state0)
    assert "memory_size" in aux
    for k, v in aux.items():
        assert torch.is_tensor(v) and torch.isfinite(v).all(), k
    # indexing, stacking and concatenating states keep them usable
    sub = index_state(state, torch.tensor([1, 3]))
    with torch.no_grad():
        y_sub, _, _ = mem(x[:2, [1, 3]], sub, torch.zeros(2, 2, dtype=torch.bool))
        y_all, _, _ = mem(x[:2], state, torch.zeros(2, B, dtype=torch.bool))
    torch.testing.assert_close(y_sub, y_all[:, [1, 3]], atol=1e-5, rtol=1e-4)
    stacked = stack_states([state0, state])
    joined = cat_states([state0, state])
    for k in state:
        assert stacked[k].shape[:2] == (2, B)
        assert joined[k].shape[0] == 2 * B
    # a state stacked with (zero-padded) others still gives the same outputs
    with torch.no_grad():
        y_pad, _, _ = mem(x[:2], index_state(stacked, 1), torch.zeros(2, B, dtype=torch.bool))
    torch.testing.assert_close(y_pad, y_all, atol=1e-5, rtol=1e-4)


def test_state_size_is_reported(case, build):
    mem = build()
    size = mem.state_size_per_env()
    assert isinstance(size, int)
    assert size >= state_nbytes(mem.initial_state(2))
    if case.name != "none":
        assert size > 0


@pytest.mark.parametrize("small", [c for c in SMALL if c.name in NAMES], ids=lambda c: c.name)
def test_small_configs_reach_their_mechanism(small, build_memory, episode_stream):
    """Stepping row 3 (one episode over the window): with "expiry" the cache ends up holding
    fewer memories than the steps seen (Transformer-XL: exactly its span); with "segment_end"
    the written key changes after exactly the steps that end a segment."""
    mem = build_memory(small.name, D_IN, **small.config)
    x, starts = episode_stream(T, B, D_IN, resets=RESETS, seed=1)
    state = mem.initial_state(B)
    changed = []
    with torch.no_grad():
        for t in range(T):
            before = state
            _, state, _ = mem(x[t : t + 1], state, starts[t : t + 1])
            if small.written:
                changed.append(not torch.equal(before[small.written][3], state[small.written][3]))
    if small.reaches == "expiry":
        kept = [int(v[3].sum()) for k, v in state.items() if k.startswith("valid_")]
        assert kept and max(kept) < T, kept
        if small.name == "trxl":
            assert kept == [small.config["max_span"]] * len(kept)
    else:
        s_len = small.config["segment_len"]
        assert changed == [(t + 1) % s_len == 0 for t in range(T)]


def test_memory_losses_are_named_finite_scalars(case, build, sequence):
    """memory_losses: the ``loss_*`` terms of aux, then those of auxiliary_losses, every one a
    finite scalar that back-propagates; without auxiliary_losses, exactly aux's terms."""
    mem = build(train=True)
    x, starts = sequence()
    state = mem.initial_state(B)
    _, _, aux = mem(x, state, starts)
    targets = torch.randn(T, B, generator=torch.Generator().manual_seed(2))
    losses = memory_losses(mem, aux, x, starts, state, targets)
    in_aux = [k for k in aux if k.startswith("loss_")]
    assert list(losses)[: len(in_aux)] == in_aux
    for k, v in losses.items():
        assert k.startswith("loss_") and v.shape == () and torch.isfinite(v), k
    if losses:
        sum(losses.values()).backward()
    only_aux = memory_losses(mem, aux, x, starts, state, targets, with_auxiliary_losses=False)
    assert list(only_aux) == in_aux


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree(build, sequence, run_chunks):
    mem = build()
    x, starts = sequence()
    with torch.no_grad():
        y_cpu, _, _ = run_chunks(mem, x, starts, [T])
        mem.cuda()
        y_gpu, _, _ = run_chunks(mem, x.cuda(), starts.cuda(), [T])
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-4, rtol=1e-3)


def test_unknown_memory_and_hyperparameter_are_refused():
    with pytest.raises(ValueError, match="unknown memory 'nope'.*lstm"):
        make_memory("nope", D_IN)
    with pytest.raises(ValueError, match="unknown hyperparameter.*'hiden_dim'.*hidden_dim"):
        make_memory("lstm", D_IN, hiden_dim=3)
    with pytest.raises(ValueError, match="hidden_dim"):
        make_memory("gru", D_IN, hidden_dim=0)
