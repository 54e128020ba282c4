"""Memformer memory: the slot-attention writer against a per-slot, per-head loop (eqs. 4-8), biased
memory normalisation, the temperature, and the segment loop against a per-env step-by-step
reference. Learning to recall is in test_recall.py."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from policies.memory import make_memory

D_IN = 6
S = 4
K = 3

CONFIG = dict(segment_len=S, num_slots=K, d_model=16, num_layers=2, num_heads=2)
RESETS = ((6, 0), (9, 1), (12, 2))  # mid-segment and on segment boundaries


@pytest.fixture
def build(build_memory):
    """``build(seed=0, **config)``: a small Memformer in eval mode."""
    return functools.partial(build_memory, "memformer", D_IN, **CONFIG)


@pytest.fixture
def episodes(episode_stream):
    """``episodes(t_len, batch)``: inputs and episode starts with the RESETS."""
    return functools.partial(episode_stream, d_in=D_IN, resets=RESETS)


def naive_write(writer, memory: torch.Tensor, hidden: torch.Tensor, tau: float) -> torch.Tensor:
    """Memformer eqs. 4-8 and BMN, one slot and one head at a time: ``memory`` (k, d) unit-norm
    slots, ``hidden`` (S, d) the segment's final hidden states."""
    k, d = memory.shape
    heads = writer.num_heads
    dh = d // heads
    new = []
    for i in range(k):
        slot = memory[i]
        q = writer.query(slot * math.sqrt(d))
        keys = [writer.key(slot * math.sqrt(d))] + [writer.key(h) for h in hidden]
        values = [slot] + [writer.value(h) for h in hidden]
        out = torch.zeros(d)
        for head in range(heads):
            sl = slice(head * dh, (head + 1) * dh)
            logits = torch.stack([q[sl] @ kk[sl] for kk in keys]) / (math.sqrt(dh) * tau)
            a = torch.softmax(logits, dim=0)
            out[sl] = sum(a[j] * values[j][sl] for j in range(len(values)))
        m = out + writer.bias[i]
        new.append(m / m.norm())
    return torch.stack(new)


def naive_reference(mem, x: torch.Tensor, starts: torch.Tensor):
    """Each env alone, one step at a time from a fresh state; the open segment is padded with
    garbage (masked), the write is :func:`naive_write`. Returns outputs (T, B, d), final memory."""
    t_len, batch, _ = x.shape
    init = mem.writer.bias / mem.writer.bias.norm(dim=-1, keepdim=True)
    y = torch.zeros(t_len, batch, mem.output_dim)
    finals = []
    g = torch.Generator().manual_seed(7)
    for b in range(batch):
        memory, seg = init, []
        for t in range(t_len):
            if starts[t, b]:
                memory, seg = init, []
            seg.append(x[t, b])
            n = len(seg)
            inputs = torch.cat([torch.stack(seg), 1e2 * torch.randn(S - n, D_IN, generator=g)])
            valid = torch.arange(S) < n
            hidden = mem.encode(memory[None], inputs[None], valid[None])[0]
            y[t, b] = hidden[n - 1]
            if n == S:
                memory, seg = naive_write(mem.writer, memory, hidden, mem.tau), []
        finals.append(memory)
    return y, torch.stack(finals)


def segment_hidden(seed: int = 3, batch: int = 2, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    memory = torch.nn.functional.normalize(torch.randn(batch, K, d, generator=g), dim=-1)
    hidden = 2.0 * torch.randn(batch, S, d, generator=g)
    return memory, hidden, torch.ones(batch, S, dtype=torch.bool)


# the writer


def test_writer_matches_per_slot_loop(build):
    mem = build()
    memory, hidden, valid = segment_hidden()
    for tau in (0.5, 0.2):
        mem.tau = tau
        with torch.no_grad():
            new, _ = mem.writer(memory, hidden, valid)
            for b in range(memory.shape[0]):
                ref = naive_write(mem.writer, memory[b], hidden[b], tau)
                torch.testing.assert_close(new[b], ref, atol=1e-5, rtol=1e-4)


def test_slot_update_ignores_other_slots(build):
    """Perturbing slot j changes only slot j's new memory."""
    mem = build()
    memory, hidden, valid = segment_hidden()
    with torch.no_grad():
        new, _ = mem.writer(memory, hidden, valid)
        for j in range(K):
            other = memory.clone()
            other[:, j] = torch.nn.functional.normalize(torch.randn_like(other[:, j]), dim=-1)
            new_j, _ = mem.writer(other, hidden, valid)
            for i in range(K):
                if i == j:
                    assert (new_j[:, i] - new[:, i]).abs().amax() > 1e-3
                else:
                    torch.testing.assert_close(new_j[:, i], new[:, i], atol=0, rtol=0)


def test_bmn_gives_unit_slots_and_initial_state_is_normalised_bias(build, episodes, run_chunks):
    mem = build()
    bias = mem.writer.bias.detach()
    expected = bias / bias.norm(dim=-1, keepdim=True)
    state = mem.initial_state(5)
    for b in range(5):
        torch.testing.assert_close(state["memory"][b], expected)
    x, starts = episodes(19, 3)
    with torch.no_grad():
        _, state, _ = run_chunks(mem, x, starts, [19])
        memory, hidden, valid = segment_hidden()
        new, _ = mem.writer(memory * 3.0, hidden, valid)  # unnormalised input: still unit
    torch.testing.assert_close(state["memory"].norm(dim=-1), torch.ones(3, K))
    torch.testing.assert_close(new.norm(dim=-1), torch.ones(2, K))
    assert not torch.allclose(state["memory"], expected.expand(3, -1, -1))


def test_lower_tau_sharpens_the_write(build):
    mem = build()
    memory, hidden, valid = segment_hidden()
    entropies = []
    for tau in (1.0, 0.5, 0.25, 0.1):
        mem.tau = tau
        with torch.no_grad():
            attn = mem.writer.attention(memory, hidden, valid)
        torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
        entropies.append(-(attn * attn.clamp_min(1e-30).log()).sum(-1).mean().item())
    assert all(a > b for a, b in zip(entropies, entropies[1:], strict=False)), entropies


def test_write_ignores_empty_slots_of_the_segment(build):
    mem = build()
    memory, hidden, valid = segment_hidden()
    valid[:, 2:] = False
    noisy = hidden.clone()
    noisy[:, 2:] = 1e3
    with torch.no_grad():
        a, _ = mem.writer(memory, hidden, valid)
        b, _ = mem.writer(memory, noisy, valid)
    torch.testing.assert_close(a, b)


# the segment loop


def test_matches_naive_reference_any_chunking(build, episodes, run_chunks):
    mem = build()
    x, starts = episodes(19, 3)
    with torch.no_grad():
        y_ref, mem_ref = naive_reference(mem, x, starts)
        for sizes in ([19], [1] * 19, [3, 6, 2, 8]):
            y, state, _ = run_chunks(mem, x, starts, sizes)
            torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(state["memory"], mem_ref, atol=1e-5, rtol=1e-4)


def test_every_layer_reads_the_memory(build, episodes, run_chunks):
    """Each layer's cross-attention changes the first step's output (it reads the memory)."""
    mem = build()
    x, starts = episodes(1, 3)
    with torch.no_grad():
        y0, _, _ = run_chunks(mem, x, starts, [1])
        for block in mem.blocks:
            saved = block.cross_attn.out.weight.clone()
            block.cross_attn.out.weight.zero_()
            y1, _, _ = run_chunks(mem, x, starts, [1])
            block.cross_attn.out.weight.copy_(saved)
            assert (y1 - y0).abs().amax() > 1e-4


def test_memory_size_counts_slots_and_segment(build, episodes):
    mem = build()
    x, starts = episodes(2 * S, 2)
    starts[1:] = False
    with torch.no_grad():
        _, _, aux = mem(x, mem.initial_state(2), starts)
    assert float(aux["memory_size"]) == pytest.approx(sum(K + j + 1 for j in range(S)) / S)


@pytest.mark.parametrize(
    "config, match",
    [
        (dict(tau=0.0), r"tau must be in \(0, 1\], got 0.0"),
        (dict(tau=1.5), r"tau must be in \(0, 1\], got 1.5"),
        (dict(num_slots=0), "num_slots must be an integer >= 1, got 0"),
        (dict(num_heads=3), "num_heads must divide d_model=64, got num_heads=3"),
    ],
)
def test_bad_hyperparameters_are_refused(config, match):
    with pytest.raises(ValueError, match=match):
        make_memory("memformer", D_IN, **config)
    mem = make_memory("memformer", D_IN)
    with pytest.raises(ValueError, match="tau must be in"):
        mem.tau = -0.1
