"""Rehearsal Memory: the writer against hand-written references, the rehearsal losses, the sampler.

The contract (chunking, resets, gradients) is checked by ``test_memory_contract.py``; here each
piece is compared with a naive reference (loops over envs, slots and items).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from policies.memory import make_memory
from policies.memory.rehearsal import RehearsalMemory
from policies.memory.rehearsal_sampler import (
    HistoryTeacher,
    build_fragments,
    fragment_items,
    select_fragments,
)

D_IN = 12


@pytest.fixture
def build(build_memory):
    """``build(seed=0, **config)``: a Rehearsal Memory in training mode."""
    return functools.partial(build_memory, "rehearsal", D_IN, train=True)


def random_starts(t: int, b: int, p: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    starts = torch.rand(t, b, generator=g) < p
    starts[0] = True
    return starts


# fragments


def naive_fragments(starts: torch.Tensor, length: int) -> set[tuple[int, int]]:
    """(start, env) of every fragment, walking each row step by step."""
    t_len, batch = starts.shape
    out = set()
    for b in range(batch):
        origin = 0
        for t in range(t_len):
            if starts[t, b]:
                origin = t
            if (t - origin) % length or t + length > t_len:
                continue
            if not any(starts[u, b] for u in range(t + 1, t + length)):
                out.add((t, b))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_fragments_never_cross_an_episode_start(seed):
    t_len, batch, length = 57, 6, 5
    starts = random_starts(t_len, batch, 0.08, seed)
    starts[0, 2] = False  # a row whose episode began before the sequence
    x = torch.randn(t_len, batch, 3)
    frags = build_fragments(x, starts, length)
    got = {
        (int(frags.start[c, b]), b)
        for c in range(frags.start.shape[0])
        for b in range(batch)
        if frags.valid[c, b]
    }
    assert got == naive_fragments(starts, length)
    for t0, b in got:
        assert not starts[t0 + 1 : t0 + length, b].any()
        assert t0 + length <= t_len
    # time order within each row, and items are the right steps
    items = fragment_items(x, frags)
    for c in range(frags.start.shape[0]):
        for b in range(batch):
            if frags.valid[c, b]:
                t0 = int(frags.start[c, b])
                torch.testing.assert_close(items[c, b], x[t0 : t0 + length, b])
                if c > 0:
                    assert frags.valid[c - 1, b] and frags.start[c - 1, b] < t0
    with pytest.raises(ValueError, match="length must be >= 1, got 0"):
        build_fragments(x, starts, 0)


def test_select_fragments_takes_half_from_each_half_of_the_history():
    scores = torch.tensor([[5.0], [4.0], [3.0], [0.1], [0.2], [0.3], [9.0]])
    candidates = torch.tensor([[True], [True], [True], [True], [True], [True], [False]])
    picked, ok = select_fragments(scores, candidates, 4, halves=True)
    assert sorted(picked[:2, 0].tolist()) == [0, 1]  # best two of the first three
    assert sorted(picked[2:, 0].tolist()) == [4, 5]  # best two of the last three
    assert ok.all()
    picked, ok = select_fragments(scores, candidates, 4, halves=False)
    assert sorted(picked[:, 0].tolist()) == [0, 1, 2, 5]  # 6 is not a candidate
    picked, ok = select_fragments(scores, candidates & (torch.arange(7) < 2)[:, None], 4, True)
    assert ok.sum() == 2 and sorted(picked[ok].tolist()) == [0, 1]


# the writer


def reference_write(mem: RehearsalMemory, slots: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Eqs. 1-2 for one env, slot by slot and item by item, GRU written out."""
    k_slots, n_items = slots.shape[0], feats.shape[0]
    w_a = mem.w_align.weight[0]
    scores = torch.empty(k_slots, n_items)
    for k in range(k_slots):
        for n in range(n_items):
            a = mem.w_slot.weight @ slots[k] + mem.w_slot.bias + mem.w_item.weight @ feats[n]
            scores[k, n] = w_a @ torch.tanh(a)
    g = mem.gru
    w_ir, w_iz, w_in = g.weight_ih.chunk(3)
    w_hr, w_hz, w_hn = g.weight_hh.chunk(3)
    b_ir, b_iz, b_in = g.bias_ih.chunk(3)
    b_hr, b_hz, b_hn = g.bias_hh.chunk(3)
    out = []
    for k in range(k_slots):
        weights = [torch.exp(scores[k, n]) / torch.exp(scores[:, n]).sum() for n in range(n_items)]
        aligned = sum(w * f for w, f in zip(weights, feats, strict=True))
        m = slots[k]
        r = torch.sigmoid(w_ir @ aligned + b_ir + w_hr @ m + b_hr)
        z = torch.sigmoid(w_iz @ aligned + b_iz + w_hz @ m + b_hz)
        n_ = torch.tanh(w_in @ aligned + b_in + r * (w_hn @ m + b_hn))
        out.append((1 - z) * n_ + z * m)
    return torch.stack(out)


def test_gru_update_equals_per_slot_reference(build):
    mem = build(num_slots=3, d_model=16, num_heads=2)
    slots = torch.randn(2, 3, 16)
    feats = torch.randn(2, 5, 16)
    with torch.no_grad():
        got = mem.write(slots, feats)
        for b in range(2):
            torch.testing.assert_close(got[b], reference_write(mem, slots[b], feats[b]))


def reference_read(mem: RehearsalMemory, item, slots, segment) -> torch.Tensor:
    """One step's output: its item attends, head by head, to the slots and the segment so far."""
    keys, values = mem.read_kv(torch.cat([slots, torch.stack(segment)])).chunk(2, dim=-1)
    q = mem.read_q(item)
    dh = mem.d_model // mem.num_heads
    heads = []
    for h in range(mem.num_heads):
        part = slice(h * dh, (h + 1) * dh)
        weights = torch.softmax(keys[:, part] @ q[part] / dh**0.5, dim=0)
        heads.append(weights @ values[:, part])
    y = mem.norm_read(item + mem.read_out(torch.cat(heads)))
    return mem.norm_ff(y + mem.ff(y))


def test_slots_are_written_only_at_segment_ends(build):
    """Step by step, against a naive memory that keeps each env's segment in a list."""
    s_len, t_len, batch = 4, 30, 3
    mem = build(segment_len=s_len, d_model=16, num_heads=2).eval()
    x = torch.randn(t_len, batch, D_IN)
    starts = torch.zeros(t_len, batch, dtype=torch.bool)
    starts[0] = True
    starts[6, 0] = starts[13, 1] = starts[14, 1] = starts[21, 2] = True
    state = mem.initial_state(batch)
    ref = [mem.slot_init.detach().clone() for _ in range(batch)]
    segs: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    writes = 0
    with torch.no_grad():
        items = mem.item_proj(x)
        for t in range(t_len):
            before = state["slots"].clone()
            y, state, _ = mem(x[t : t + 1], state, starts[t : t + 1])
            for b in range(batch):
                if starts[t, b]:
                    ref[b], segs[b] = mem.slot_init.clone(), []
                segs[b].append(items[t, b] + mem.phase_emb[len(segs[b])])
                y_ref = reference_read(mem, segs[b][-1], ref[b], segs[b])
                torch.testing.assert_close(y[0, b], y_ref, atol=1e-5, rtol=1e-4)
                end = len(segs[b]) == s_len
                if end:
                    feats = mem.encoder(torch.stack(segs[b])[None])[0]
                    ref[b], segs[b] = reference_write(mem, ref[b], feats), []
                    writes += 1
                    assert not torch.allclose(state["slots"][b], before[b])
                elif not starts[t, b]:  # no write, no reset: the slots are untouched
                    assert torch.equal(state["slots"][b], before[b])
                torch.testing.assert_close(state["slots"][b], ref[b], atol=1e-5, rtol=1e-4)
                assert int(state["phase"][b]) == len(segs[b])
    assert writes >= 12


def test_bad_hyperparameters_are_refused():
    for config, match in [
        ({"num_slots": 0}, "num_slots must be an integer >= 1, got 0"),
        ({"num_heads": 3}, "num_heads must divide d_model=64, got 3"),
        ({"fragment_len": 1}, "fragment_len must be an integer >= 2, got 1"),
        ({"mask_ratio": 1.0}, "mask_ratio must be in \\(0, 1\\)"),
        ({"mask_ratio": 0.01}, "mask_ratio"),
        ({"familiarity_weight": -1.0}, "familiarity_weight must be >= 0, got -1.0"),
        ({"sampler": "best"}, "sampler must be one of \\('teacher', 'uniform'\\), got 'best'"),
    ]:
        with pytest.raises(ValueError, match=match):
            make_memory("rehearsal", D_IN, **config)


# the rehearsal losses


def test_rehearsal_losses_are_finite_and_train_every_rehearsal_parameter(build):
    mem = build()
    mem.train()
    t_len, batch = 40, 4
    x = torch.randn(t_len, batch, D_IN)
    starts = random_starts(t_len, batch, 0.03, seed=3)
    targets = torch.randn(t_len, batch)
    losses = mem.auxiliary_losses(x, starts, mem.initial_state(batch), targets)
    assert set(losses) == {"loss_recollection", "loss_familiarity", "loss_teacher"}
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v) and v > 0, k
    sum(losses.values()).backward()
    separate = [n for n, _ in mem.named_parameters() if n.startswith(mem.separately_trained)]
    assert any(n.startswith("rehearsal.") for n in separate)
    assert any(n.startswith("teacher.") for n in separate)
    # the decoder, the teacher, and the writer that fills the memory all learn from rehearsal
    writer = ("slot_init", "encoder.", "w_slot.", "w_item.", "w_align.", "gru.", "item_proj.")
    for n, p in mem.named_parameters():
        if n.startswith((*mem.separately_trained, *writer)):
            assert p.grad is not None and p.grad.abs().sum() > 0, n
    # the teacher is trained apart: its loss sends no gradient into the memory
    mem.zero_grad()
    mem.auxiliary_losses(x, starts, mem.initial_state(batch), targets)["loss_teacher"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for n, p in mem.named_parameters()
               if not n.startswith("teacher."))


def test_losses_are_weighted_and_uniform_sampler_needs_no_teacher(build):
    t_len, batch = 40, 4
    x = torch.randn(t_len, batch, D_IN)
    starts = random_starts(t_len, batch, 0.0, seed=0)
    out = {}
    for weight in (1.0, 3.0):
        mem = build(recollection_weight=weight, familiarity_weight=2 * weight, sampler="uniform")
        torch.manual_seed(5)
        out[weight] = mem.auxiliary_losses(x, starts, mem.initial_state(batch), torch.randn(40, 4))
    for k in ("loss_recollection", "loss_familiarity"):
        torch.testing.assert_close(out[3.0][k], 3 * out[1.0][k])
    assert out[1.0]["loss_teacher"] == 0
    # the uniform pick: valid, written fragments, num_fragments per row at most
    mem = build(sampler="uniform", num_fragments=3)
    res = mem.rehearse(x, starts, mem.initial_state(batch))
    assert res.picked.shape == (3, batch) and res.picked_valid.all()
    assert res.fragments.valid[res.picked, torch.arange(batch)].all()


def test_only_fragments_written_into_the_memory_are_rehearsed(build):
    """A fragment is rehearsed only if a segment ended, in its episode, at or after its end."""
    mem = build(segment_len=8, fragment_len=4, num_fragments=10, sampler="uniform")
    starts = torch.zeros(20, 2, dtype=torch.bool)
    starts[0] = True
    starts[6, 1] = True  # row 1: an episode of 6 steps (no segment end), then one from step 6
    res = mem.rehearse(torch.randn(20, 2, D_IN), starts, mem.initial_state(2))
    picked = [
        sorted(int(res.fragments.start[c, b]) for c, ok in zip(res.picked[:, b],
                                                               res.picked_valid[:, b], strict=True)
               if ok)
        for b in range(2)
    ]
    # row 0: segment ends at 7 and 15; row 1: one segment end, at 13
    assert picked == [[0, 4, 8, 12], [6, 10]]


def row_stream(t_len: int, batch: int, seed: int) -> torch.Tensor:
    """Each env row draws its items around its own random centre (fragments belong to a row)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(1, batch, D_IN, generator=g) * 2
    return centre + 0.5 * torch.randn(t_len, batch, D_IN, generator=g)


def test_familiarity_separates_positives_from_negatives(build):
    mem = build(seed=1, sampler="uniform", d_model=32, num_heads=2, decoder_layers=1)
    opt = torch.optim.Adam(mem.parameters(), lr=1e-2)
    t_len, batch = 32, 8
    starts = torch.zeros(t_len, batch, dtype=torch.bool)
    starts[0] = True
    for step in range(120):
        x = row_stream(t_len, batch, seed=step)
        losses = mem.auxiliary_losses(x, starts, mem.initial_state(batch))
        opt.zero_grad()
        (losses["loss_recollection"] + losses["loss_familiarity"]).backward()
        opt.step()
    mem.eval()
    with torch.no_grad():
        res = mem.rehearse(row_stream(t_len, batch, seed=999), starts, mem.initial_state(batch))
    ok = res.picked_valid
    assert ok.sum() >= batch
    p_pos, p_neg = res.p_positive[ok], res.p_negative[ok]
    assert p_pos.mean() > p_neg.mean() + 0.2
    assert (p_pos > p_neg).float().mean() > 0.75


def cue_stream(t_len: int, batch: int, length: int, seed: int):
    """Noise, except fragment 2 of each row carries a cue flag (dim 1) and a key (dim 0, +-1);
    every step's target is the key."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t_len, batch, D_IN, generator=g)
    x[:, :, 0] = torch.randint(0, 2, (t_len, batch), generator=g) * 2.0 - 1.0
    x[:, :, 1] = 0.0
    key = torch.randint(0, 2, (batch,), generator=g) * 2.0 - 1.0
    x[2 * length : 3 * length, :, 0] = key
    x[2 * length : 3 * length, :, 1] = 1.0
    return x, key.expand(t_len, batch).clone()


def test_teacher_ranks_the_informative_fragment_above_noise(build):
    t_len, batch, length = 64, 16, 8
    torch.manual_seed(0)
    teacher = HistoryTeacher(D_IN, hidden_dim=32)
    opt = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    starts = torch.zeros(t_len, batch, dtype=torch.bool)
    starts[0] = True
    frags = build_fragments(torch.zeros(t_len, batch, 1), starts, length)
    for step in range(150):
        x, targets = cue_stream(t_len, batch, length, seed=step)
        loss = teacher.loss(teacher(x, starts, frags), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss < 0.3
    with torch.no_grad():
        x, targets = cue_stream(t_len, batch, length, seed=1000)
        importance = teacher(x, starts, frags).importance  # (C, B)
    noise = torch.cat([importance[:2], importance[3:]])
    assert (importance[2] > noise.max(dim=0).values).all()
    # and the memory's teacher sampler rehearses it
    mem = build(fragment_len=length, num_fragments=2)
    mem.teacher = teacher
    res = mem.rehearse(x, starts, mem.initial_state(batch), targets)
    assert (res.picked[0] == 2).all()  # the first half's pick
    assert (res.picked[1] >= 4).all()  # the second half's pick


# learning


@pytest.mark.slow
def test_recalls_a_token_across_noise():
    """A token at step 0, noise for 31 steps: output the token at the end (4 segment writes)."""
    torch.manual_seed(0)
    n_tokens, t_len, batch = 4, 32, 64
    mem = make_memory("rehearsal", D_IN, d_model=32, num_heads=2)
    head = torch.nn.Linear(32, n_tokens)
    opt = torch.optim.Adam([*mem.parameters(), *head.parameters()], lr=3e-3)
    starts = torch.zeros(t_len, batch, dtype=torch.bool)
    starts[0] = True
    acc = 0.0
    for _ in range(600):
        token = torch.randint(0, n_tokens, (batch,))
        x = torch.randn(t_len, batch, D_IN)
        x[:, :, :n_tokens] = 0.0
        x[0, :, :n_tokens] = F.one_hot(token, n_tokens).float()
        y, _, _ = mem(x, mem.initial_state(batch), starts)
        logits = head(y[-1])
        loss = F.cross_entropy(logits, token)
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = 0.9 * acc + 0.1 * (logits.argmax(-1) == token).float().mean().item()
        if acc > 0.95:
            break
    assert acc > 0.95
