"""The memory contract, checked for every registered memory (a new memory is tested automatically).

References are naive: step-by-step calls, fresh states, permuted batches.
"""

from __future__ import annotations

import pytest
import torch

from policies.memory import (
    available_memories,
    cat_states,
    detach_state,
    index_state,
    make_memory,
    stack_states,
    state_nbytes,
)

D_IN = 12
T = 23
B = 4
NAMES = available_memories()


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    mem = make_memory(name, D_IN)
    mem.eval()
    return mem


def sequence(seed: int = 1, t: int = T, b: int = B):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, b, D_IN, generator=g)
    starts = torch.zeros(t, b, dtype=torch.bool)
    starts[0] = True
    starts[5, 1] = True
    starts[11, 2] = True
    starts[12, 0] = True
    starts[17, 1] = True
    return x, starts


def run_chunks(mem, x, starts, sizes):
    state = mem.initial_state(x.shape[1], x.device)
    ys, lo = [], 0
    for size in sizes:
        y, state, _ = mem(x[lo : lo + size], state, starts[lo : lo + size])
        ys.append(y)
        lo += size
    assert lo == x.shape[0]
    return torch.cat(ys), state


@pytest.mark.parametrize("name", NAMES)
def test_chunk_invariance_with_resets(name):
    mem = build(name)
    x, starts = sequence()
    with torch.no_grad():
        y_full, _ = run_chunks(mem, x, starts, [T])
        y_step, _ = run_chunks(mem, x, starts, [1] * T)
        y_chunk, _ = run_chunks(mem, x, starts, [3, 7, 1, 8, 4])
    assert y_full.shape == (T, B, mem.output_dim)
    torch.testing.assert_close(y_step, y_full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y_chunk, y_full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_reset_isolation(name):
    """Changing what row 0 saw before its reset at t=12 changes nothing from t=12 on."""
    mem = build(name)
    x, starts = sequence()
    x2 = x.clone()
    x2[:12, 0] = torch.randn(12, D_IN)
    with torch.no_grad():
        y1, _ = run_chunks(mem, x, starts, [T])
        y2, _ = run_chunks(mem, x2, starts, [T])
    torch.testing.assert_close(y1[12:, 0], y2[12:, 0], atol=1e-5, rtol=1e-4)
    # and an episode start behaves as a fresh state
    with torch.no_grad():
        y3, _ = run_chunks(mem, x[12:, :1], starts[12:, :1], [T - 12])
    torch.testing.assert_close(y1[12:, 0], y3[:, 0], atol=1e-5, rtol=1e-4)
    if name != "none":  # and the memory does carry something before the reset
        assert not torch.allclose(y1[1:12, 0], y2[1:12, 0])


@pytest.mark.parametrize("name", NAMES)
def test_batch_permutation_equivariance(name):
    mem = build(name)
    x, starts = sequence()
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        y, state = run_chunks(mem, x, starts, [10, 13])
        yp, statep = run_chunks(mem, x[:, perm], starts[:, perm], [10, 13])
    torch.testing.assert_close(yp, y[:, perm], atol=1e-5, rtol=1e-4)
    for k in state:
        torch.testing.assert_close(statep[k], state[k][perm], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    mem = build(name)
    mem.train()
    x, starts = sequence(t=40)
    starts = starts.clone()
    starts[1:] = False  # one long episode per row, so every mechanism (writes, expiry) runs
    state = mem.initial_state(B)
    y, _, aux = mem(x, state, starts)
    loss = y.pow(2).mean() + sum(v for k, v in aux.items() if k.startswith("loss_"))
    loss.backward()
    separate = tuple(getattr(mem, "separately_trained", ()))
    missing = [
        n
        for n, p in mem.named_parameters()
        if not n.startswith(separate) and (p.grad is None or not torch.isfinite(p.grad).all()
                                           or p.grad.abs().sum() == 0)
    ]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_detached_state_cuts_graph(name):
    mem = build(name)
    x, starts = sequence()
    x = x.clone().requires_grad_(True)
    state = mem.initial_state(B)
    _, state, _ = mem(x[:10], state, starts[:10])
    y, _, _ = mem(x[10:], detach_state(state), starts[10:])
    y.sum().backward()
    assert x.grad is None or x.grad[:10].abs().sum() == 0
    if name != "none":  # without the detach, the gradient does reach the first chunk
        x.grad = None
        state = mem.initial_state(B)
        _, state, _ = mem(x[:10], state, starts[:10])
        y, _, _ = mem(x[10:], state, torch.zeros_like(starts[10:]))
        y.sum().backward()
        assert x.grad[:10].abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_eval_mode_deterministic(name):
    mem = build(name)
    x, starts = sequence()
    with torch.no_grad():
        y1, s1 = run_chunks(mem, x, starts, [T])
        y2, s2 = run_chunks(mem, x, starts, [T])
    assert torch.equal(y1, y2)
    for k in s1:
        assert torch.equal(s1[k], s2[k])


@pytest.mark.parametrize("name", NAMES)
def test_state_is_batch_first_and_indexable(name):
    mem = build(name)
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


@pytest.mark.parametrize("name", NAMES)
def test_state_size_is_reported(name):
    mem = build(name)
    size = mem.state_size_per_env()
    assert isinstance(size, int)
    assert size >= state_nbytes(mem.initial_state(2))
    if name != "none":
        assert size > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cpu_and_cuda_agree(name):
    mem = build(name)
    x, starts = sequence()
    with torch.no_grad():
        y_cpu, _ = run_chunks(mem, x, starts, [T])
        mem.cuda()
        y_gpu, _ = run_chunks(mem, x.cuda(), starts.cuda(), [T])
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, atol=1e-4, rtol=1e-3)


def test_unknown_memory_and_hyperparameter_are_refused():
    with pytest.raises(ValueError, match="unknown memory 'nope'.*lstm"):
        make_memory("nope", D_IN)
    with pytest.raises(ValueError, match="unknown hyperparameter.*'hiden_dim'.*hidden_dim"):
        make_memory("lstm", D_IN, hiden_dim=3)
    with pytest.raises(ValueError, match="hidden_dim"):
        make_memory("gru", D_IN, hidden_dim=0)
