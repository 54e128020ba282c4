"""RMT memory: against a naive per-env, per-token reference of the paper's formulation, and the
properties of section 3 (steps never see write tokens, memory rewritten only at segment ends,
gradients across segments through the memory). Learning to recall is in test_recall.py."""

from __future__ import annotations

import functools

import pytest
import torch

from policies.memory import detach_state, make_memory
from policies.memory.segment import segment_layout

D_IN = 6
S = 4
M = 3


CONFIG = dict(segment_len=S, num_memory_tokens=M, d_model=16, num_layers=2, num_heads=2)
RESETS = ((6, 0), (9, 1), (10, 1), (12, 2))  # mid-segment, two in a row, on a segment boundary


@pytest.fixture
def build(build_memory):
    """``build(seed=0, **config)``: a small RMT in eval mode."""
    return functools.partial(build_memory, "rmt", D_IN, **CONFIG)


@pytest.fixture
def episodes(episode_stream):
    """``episodes(t_len, batch)``: inputs and episode starts with the RESETS."""
    return functools.partial(episode_stream, d_in=D_IN, resets=RESETS)


# naive reference: one env, one token list, masks built pair by pair


def naive_run(mem, tokens: list[torch.Tensor], roles: list[tuple[str, int]]) -> torch.Tensor:
    """Run ``mem``'s layers over ``tokens`` with the mask of RMT section 3 built pair by pair:
    read tokens see the read block; step j sees the read block and steps <= j; write tokens see
    everything."""
    n = len(tokens)
    mask = torch.zeros(1, n, n, dtype=torch.bool)
    for q, (rq, iq) in enumerate(roles):
        for k, (rk, ik) in enumerate(roles):
            if rq == "read":
                mask[0, q, k] = rk == "read"
            elif rq == "step":
                mask[0, q, k] = rk == "read" or (rk == "step" and ik <= iq)
            else:
                mask[0, q, k] = True
    h = torch.stack(tokens).unsqueeze(0)
    for block in mem.blocks:
        h = block(h, mask)
    return mem.norm(h)[0]


def naive_reference(mem, x: torch.Tensor, starts: torch.Tensor):
    """Each env alone, one step at a time, from a fresh state: outputs (T, B, d), final memory."""
    t_len, batch, _ = x.shape
    pos = mem.positions
    y = torch.zeros(t_len, batch, mem.output_dim)
    finals = []
    for b in range(batch):
        memory, seg = mem.memory_init, []
        for t in range(t_len):
            if starts[t, b]:
                memory, seg = mem.memory_init, []
            seg.append(mem.embed(x[t, b]))
            read = [memory[i] + pos[i] for i in range(M)]
            steps = [seg[j] + pos[M + j] for j in range(len(seg))]
            roles = [("read", i) for i in range(M)] + [("step", j) for j in range(len(seg))]
            y[t, b] = naive_run(mem, read + steps, roles)[-1]
            if len(seg) == S:  # the segment's end: [read; segment; write]
                write = [memory[i] + pos[M + S + i] for i in range(M)]
                out = naive_run(mem, read + steps + write, roles + [("write", i) for i in range(M)])
                memory, seg = out[-M:], []
        finals.append(memory)
    return y, torch.stack(finals)


# tests


def test_layout_matches_a_step_loop(episodes):
    """Positions and segment indices of the vectorised layout against a per-env loop."""
    x, starts = episodes(15, 3)
    starts[0] = False  # the carried segments go on
    phase = torch.tensor([0, 2, 3])
    carried = torch.randn(3, S, D_IN)
    lay = segment_layout(x, starts, carried, phase, S)
    for b in range(3):
        p, k = int(phase[b]), 0
        for t in range(15):
            if starts[t, b] or p == 0:
                if t > 0 or int(phase[b]) > 0:
                    k += 1
                p = 0
            assert (int(lay.pos[t, b]), int(lay.seg[t, b])) == (p, k), (t, b)
            assert torch.equal(lay.inputs[b, k, p], x[t, b])
            if p == 0:
                assert bool(lay.reset[b, k]) == bool(starts[t, b])
            p = (p + 1) % S
        assert int(lay.phase[b]) == p
    # the carried slots fill segment 0 of the envs that had an open segment
    torch.testing.assert_close(lay.inputs[1, 0, :2], carried[1, :2])
    assert lay.valid[1, 0].tolist() == [True, True, True, True]  # 2 carried + steps 0, 1


def test_matches_naive_reference_any_chunking(build, episodes, run_chunks):
    mem = build()
    x, starts = episodes(19, 3)
    with torch.no_grad():
        y_ref, mem_ref = naive_reference(mem, x, starts)
        for sizes in ([19], [1] * 19, [5, 2, 7, 1, 4]):
            y, state, _ = run_chunks(mem, x, starts, sizes)
            torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(state["memory"], mem_ref, atol=1e-5, rtol=1e-4)
            assert state["phase"].tolist() == [(19 - 6) % S, (19 - 10) % S, (19 - 12) % S]


def test_padding_of_the_open_segment_is_ignored(build, episodes, run_chunks):
    """Garbage after ``phase`` in the state's open segment changes nothing (zero padding too)."""
    mem = build()
    x, starts = episodes(19, 3)
    with torch.no_grad():
        _, state, _ = run_chunks(mem, x[:6], starts[:6], [6])
        assert state["phase"].tolist() == [2, 2, 2]
        noisy = dict(state, segment=state["segment"].clone())
        noisy["segment"][:, 2:] = 1e3 * torch.randn(3, S - 2, D_IN)
        y1, s1, _ = run_chunks(mem, x[6:], starts[6:], [13], state)
        y2, s2, _ = run_chunks(mem, x[6:], starts[6:], [13], noisy)
    torch.testing.assert_close(y1, y2)
    for k in s1:
        torch.testing.assert_close(s1[k], s2[k])


def test_steps_never_see_the_write_tokens(build, episodes, run_chunks):
    """Perturbing what only the write tokens see (their positions) changes no output inside the
    first segment, and does change the next segment (the memory carries it)."""
    mem = build()
    x, starts = episodes(2 * S, 3)
    starts[1:] = False
    with torch.no_grad():
        y1, _, _ = run_chunks(mem, x, starts, [2 * S])
        mem.positions[M + S :] += torch.randn(M, mem.d_model)
        y2, _, _ = run_chunks(mem, x, starts, [2 * S])
    torch.testing.assert_close(y1[:S], y2[:S], atol=0, rtol=0)
    assert (y1[S:] - y2[S:]).abs().amax() > 1e-3
    # and a step never sees later steps of its segment
    x2 = x.clone()
    x2[S - 1] += 1.0
    with torch.no_grad():
        y3, _, _ = run_chunks(mem, x2, starts, [2 * S])
    torch.testing.assert_close(y3[: S - 1], y2[: S - 1], atol=0, rtol=0)
    assert (y3[S:] - y2[S:]).abs().amax() > 1e-3


def test_memory_changes_only_at_segment_ends(build, episodes):
    mem = build()
    x, starts = episodes(15, 3)
    state = mem.initial_state(3)
    init = mem.memory_init.detach()
    with torch.no_grad():
        for t in range(15):
            before = state["memory"].clone()
            _, state, _ = mem(x[t : t + 1], state, starts[t : t + 1])
            for b in range(3):
                wrote = int(state["phase"][b]) == 0
                if wrote:
                    assert not torch.allclose(state["memory"][b], before[b]), (t, b)
                elif starts[t, b]:
                    torch.testing.assert_close(state["memory"][b], init, atol=0, rtol=0)
                else:
                    assert torch.equal(state["memory"][b], before[b]), (t, b)


def test_gradient_crosses_segments_through_memory(build, episodes, run_chunks):
    """A loss on segment 2 reaches segment 0's inputs, only through the memory tokens."""
    mem = build()
    x, starts = episodes(3 * S, 2)
    starts[1:] = False
    x.requires_grad_(True)
    y, _, _ = run_chunks(mem, x, starts, [3 * S])
    y[2 * S :].pow(2).sum().backward()
    assert x.grad[:S].abs().sum() > 0
    assert x.grad[S : 2 * S].abs().sum() > 0
    # cutting the memory between segments 0 and 1 (the open segment is empty there) cuts it
    x.grad = None
    state = mem.initial_state(2)
    _, state, _ = mem(x[:S], state, starts[:S])
    assert state["phase"].tolist() == [0, 0]
    y, _, _ = run_chunks(mem, x[S:], starts[S:], [2 * S], detach_state(state))
    y[S:].pow(2).sum().backward()
    assert x.grad is None or x.grad[:S].abs().sum() == 0


def test_memory_size_counts_tokens_and_segment(build, episodes):
    mem = build()
    x, starts = episodes(S, 2)
    starts[1:] = False
    with torch.no_grad():
        _, _, aux = mem(x, mem.initial_state(2), starts)
    expected = sum(M + j + 1 for j in range(S)) / S
    assert float(aux["memory_size"]) == pytest.approx(expected)


@pytest.mark.parametrize(
    "config, match",
    [
        (dict(num_memory_tokens=0), "num_memory_tokens must be an integer >= 1, got 0"),
        (dict(segment_len=0), "segment_len must be an integer >= 1, got 0"),
        (dict(d_model=30, num_heads=4), "num_heads must divide d_model=30, got num_heads=4"),
        (dict(num_layers=-1), "num_layers must be an integer >= 1, got -1"),
    ],
)
def test_bad_hyperparameters_are_refused(config, match):
    with pytest.raises(ValueError, match=match):
        make_memory("rmt", D_IN, **config)


def test_empty_call_keeps_state_and_bad_shapes_are_refused(build, episodes, run_chunks):
    mem = build()
    x, starts = episodes(6, 3)
    with torch.no_grad():
        _, state, _ = run_chunks(mem, x, starts, [6])
        y, same, _ = mem(x[:0], state, starts[:0])
    assert y.shape == (0, 3, mem.output_dim)
    for k in state:
        assert torch.equal(same[k], state[k])
    with pytest.raises(ValueError, match=r"episode_starts \(T, B\).*episode_starts \(6, 2\)"):
        mem(x, state, starts[:, :2])
