"""Expire-Span and Transformer-XL memories against naive references written here.

The references recompute attention over the whole episode history with a per-pair loop over
(t, i) (no cache, no deletion, no block parallelism), so they check the soft mask, the
renormalisation, the relative positions, resets and that deleting expired memories changes nothing.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from policies.memory import detach_state, make_memory, stack_states
from policies.memory.expire_span import expire_soft_mask
from policies.memory.transformer import masked_attention_weights

D_IN = 6


RESETS = ((9, 0), (21, 1), (22, 1))  # mid-stream, and two in a row


@pytest.fixture
def stream(episode_stream):
    """``stream(t_len, batch)``: inputs and episode starts with the RESETS."""
    return functools.partial(episode_stream, d_in=D_IN, resets=RESETS, seed=3)


# naive references


def naive_memory(mem, x, starts, detach_before: int = 0):
    """Per-pair loop over (t, i) for one env: ``x`` (T, D_in), ``starts`` (T,) bool.

    Spans are recomputed from each layer's input ``h_i`` and stay in the graph. With
    ``detach_before = k`` every layer's inputs of steps ``< k`` are detached, as a cache carried
    over a detached state (an agent's BPTT sequence starting at step ``k``).
    Returns the outputs (T, d_model) and the last layer's spans (T,) (None for Transformer-XL).
    """
    expire = mem.name == "expire_span"
    t_len = x.shape[0]
    episode_start, first = [], 0
    for t in range(t_len):
        first = t if bool(starts[t]) else first
        episode_start.append(first)
    h = mem.proj(x)
    spans = None
    for l, layer in enumerate(mem.layers):
        h = torch.cat([h[:detach_before].detach(), h[detach_before:]])
        if expire:
            spans = [
                mem.max_span * torch.sigmoid(mem.span_predictors[l](h[i]))[0] for i in range(t_len)
            ]
        hn = layer.norm_att(h)
        n_h, d_h = layer.num_heads, layer.d_head
        outs = []
        for t in range(t_len):
            q = layer.q(hn[t]).view(n_h, d_h) / math.sqrt(d_h)
            scores, masks, values = [], [], []
            for i in range(episode_start[t], t + 1):
                d = t - i
                if expire:
                    m = (1.0 + (spans[i] - d) / mem.ramp).clamp(0.0, 1.0)
                else:
                    m = torch.tensor(1.0 if d <= mem.max_span else 0.0)
                if m.item() == 0.0:
                    continue
                k, v = layer.kv(hn[i]).view(2, n_h, d_h)
                s = (q * k).sum(-1)
                if layer.rel is not None and d < layer.rel.shape[0]:
                    s = s + (q * layer.rel[d]).sum(-1)
                scores.append(s)
                masks.append(m)
                values.append(v)
            a = torch.softmax(torch.stack(scores), dim=0)  # (n_keys, H)
            m = torch.stack(masks).unsqueeze(1)
            a = m * a / (m * a).sum(0, keepdim=True)
            o = (a.unsqueeze(-1) * torch.stack(values)).sum(0).reshape(-1)
            out = h[t] + layer.out(o)
            outs.append(out + layer.ff(layer.norm_ff(out)))
        h = torch.stack(outs)
    return mem.norm_out(h), None if spans is None else torch.stack(spans).detach()


# mask and renormalised attention


def test_soft_mask_and_renormalised_attention_equal_a_pair_loop():
    g = torch.Generator().manual_seed(0)
    b, h, t_len, k_len, ramp = 2, 3, 4, 9, 2.5
    dist = torch.randint(-2, 12, (b, t_len, k_len), generator=g)
    dist[:, :, -1] = 0  # each query sees its own step
    span = torch.rand(b, k_len, generator=g) * 10
    scores = torch.randn(b, h, t_len, k_len, generator=g)
    soft = expire_soft_mask(dist, span, ramp)
    visible = (dist >= 0) & (soft > 0)
    got = masked_attention_weights(scores, visible, soft)
    for bi in range(b):
        for t in range(t_len):
            ms = []
            for i in range(k_len):
                r = span[bi, i].item() - dist[bi, t, i].item()
                m = max(0.0, min(1.0, 1.0 + r / ramp))
                assert soft[bi, t, i].item() == pytest.approx(m, abs=1e-6)
                ms.append(m if dist[bi, t, i] >= 0 else 0.0)
            for hi in range(h):
                seen = [i for i in range(k_len) if ms[i] > 0]
                z = sum(math.exp(scores[bi, hi, t, i].item()) for i in seen)
                a = {i: math.exp(scores[bi, hi, t, i].item()) / z for i in seen}
                norm = sum(ms[i] * a[i] for i in seen)
                for i in range(k_len):
                    want = ms[i] * a[i] / norm if i in a else 0.0
                    assert got[bi, hi, t, i].item() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize(
    "name, config",
    [
        ("expire_span", dict(max_span=6, ramp=3.0, init_span_fraction=0.4, position_window=4)),
        ("expire_span", dict(max_span=20, ramp=4.0, num_layers=1, position_window=0)),
        ("trxl", dict(max_span=5, position_window=3)),
    ],
)
def test_cached_blocks_equal_full_history_loop(name, config, build_memory, stream, run_chunks):
    """Chunked runs with a cache (expired memories deleted) equal attention over all history."""
    mem = build_memory(name, D_IN, **config)
    x, starts = stream(30, 2)
    with torch.no_grad():
        for sizes in ([30], [1] * 30, [4, 11, 1, 7, 7]):
            y, _, auxs = run_chunks(mem, x, starts, sizes)
            for b in range(2):
                want, spans = naive_memory(mem, x[:, b], starts[:, b])
                torch.testing.assert_close(y[:, b], want, atol=2e-5, rtol=1e-4)
                if spans is not None:
                    got = torch.cat([a["spans"][:, b] for a in auxs])
                    torch.testing.assert_close(got, spans, atol=1e-4, rtol=1e-5)


# span loss


def _hand_state(mem, ages, spans):
    """One-layer state of one env holding memories of the given ages and spans.

    The span predictor is set to read only feature 0 (``w = e_0``, ``b = 0``), and each memory's
    feature 0 is ``logit(e_i / L)``, so ``e_i = L * sigmoid(w . h_i + b)`` are the given spans.
    The cached memories are a gradient leaf, as a detached state's are not: ``(w, b)`` must get
    gradient through them anyway.
    """
    pred = mem.span_predictors[0]
    with torch.no_grad():
        pred.weight.zero_()
        pred.weight[0, 0] = 1.0
        pred.bias.zero_()
    m = len(ages)
    h = torch.randn(1, m, mem.d_model)
    h[0, :, 0] = torch.logit(torch.tensor(spans) / mem.max_span)
    state = {
        "mem_0": h.requires_grad_(),
        "age_0": torch.tensor([ages]),
        "valid_0": torch.ones(1, m, dtype=torch.bool),
    }
    torch.testing.assert_close(mem.spans(0, state["mem_0"])[0].detach(), torch.tensor(spans))
    return state


def _capture_spans(mem, monkeypatch) -> list:
    """Record the (B, K) spans of ``[cache; block]`` each forward computes, keeping their grad."""
    seen, spans = [], mem.spans

    def recorded(layer, h):
        e = spans(layer, h)
        if e.requires_grad:
            e.retain_grad()
        seen.append(e)
        return e

    monkeypatch.setattr(mem, "spans", recorded)
    return seen


def _naive_span_loss(mem, state, x, alpha):
    """``alpha * sum_{t, i: 0 < m_{t,i} < 1} e_i / (R T B)`` by a loop over pairs, one env."""
    t_len, ramp = x.shape[0], mem.ramp

    def span(h):
        return mem.max_span * torch.sigmoid(mem.span_predictors[0](h))[0]

    ages = state["age_0"][0].tolist()
    cache = [(span(h), age) for h, age in zip(state["mem_0"][0], ages, strict=True)]
    block = [span(h) for h in mem.proj(x[:, 0])]
    total = torch.zeros(())
    for t in range(t_len):
        pairs = [(e, age + t) for e, age in cache] + [(block[j], t - j) for j in range(t + 1)]
        for e, d in pairs:
            m = 1.0 + (e.item() - d) / ramp
            if 0.0 < m < 1.0:
                total = total + e
    return alpha * total / (ramp * t_len * 1)


def test_span_loss_and_mask_gradients_come_only_from_the_ramp(monkeypatch, build_memory):
    ramp, alpha, t_len = 4.0, 0.5, 3
    mem = build_memory("expire_span", D_IN, max_span=50, ramp=ramp, alpha=alpha, num_layers=1)
    pred = mem.span_predictors[0]
    # distances to the 3 queries are age, age+1, age+2
    ages = [2, 4, 10, 6, 6]
    spans = [20.0, 5.0, 1.0, 6.5, 2.9]
    # m = 1 always | ramp at t=2 | m = 0 | ramp at t=1,2 | ramp at t=0 only, 0 after
    in_ramp = [False, True, False, True, True]
    x = torch.randn(t_len, 1, D_IN)
    no_start = torch.zeros(t_len, 1, dtype=torch.bool)
    seen = _capture_spans(mem, monkeypatch)

    # span penalty: value and (w, b) gradients equal the per-pair loop's
    state = _hand_state(mem, ages, spans)
    _, _, aux = mem(x, state, no_start)
    loss = aux["loss_expire_span"]
    got = torch.autograd.grad(loss, [pred.weight, pred.bias, seen[-1], state["mem_0"]])
    want_loss = _naive_span_loss(mem, state, x, alpha)
    want = torch.autograd.grad(want_loss, [pred.weight, pred.bias])
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5)
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    assert got[1].abs().item() > 0
    # per memory: only those inside the ramp, both for e_i and for the cached h_i it comes from
    for i, ramped in enumerate(in_ramp):
        assert (got[2][0, i] != 0).item() == ramped, (i, got[2])
        assert bool((got[3][0, i] != 0).any()) == ramped, (i, got[3])

    # the task loss reaches spans (and so (w, b)) only through the mask's ramp too
    state = _hand_state(mem, ages, spans)
    y, _, _ = mem(x, state, no_start)
    y.pow(2).sum().backward()
    grad = seen[-1].grad[0]
    for i, ramped in enumerate(in_ramp):
        assert (grad[i] != 0).item() == ramped, (i, grad)
    assert pred.bias.grad.abs().item() > 0


def test_detached_old_memories_still_train_the_span_predictor(monkeypatch, build_memory):
    """A memory made before a detached state boundary (an agent's BPTT cut) sends gradient to
    ``(w, b)`` when it is inside its ramp in the new sequence, and none when it is not."""
    ramp, span = 4.0, 2.5  # m = 1 up to distance 2.5, ramp up to 6.5, then 0
    mem = build_memory("expire_span", D_IN, max_span=10, ramp=ramp, alpha=0.1, num_layers=1)
    pred = mem.span_predictors[0]
    with torch.no_grad():  # every memory has e = 2.5
        pred.weight.zero_()
        pred.bias.fill_(math.log(span / (10 - span)))
    seen = _capture_spans(mem, monkeypatch)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(8, 1, D_IN, generator=g)
    starts = torch.zeros(8, 1, dtype=torch.bool)
    starts[0] = True
    for n_prev, ramped_ages in [(2, []), (6, [3, 4, 5, 6])]:
        _, state, _ = mem(x[:n_prev], mem.initial_state(1), starts[:n_prev])
        state = detach_state(state)
        assert not any(v.requires_grad for v in state.values())
        assert state["age_0"][0].tolist() == list(range(n_prev, 0, -1))
        # one step: its own memory is at distance 0 (m = 1), so only old memories can count
        y, _, aux = mem(x[n_prev : n_prev + 1], state, starts[n_prev : n_prev + 1])
        e = seen[-1]
        for loss in (y.pow(2).sum(), aux["loss_expire_span"]):
            gw, gb, ge = torch.autograd.grad(loss, [pred.weight, pred.bias, e], retain_graph=True)
            assert (gb.abs().item() > 0) == bool(ramped_ages), (n_prev, gb)
            assert (gw.abs().sum().item() > 0) == bool(ramped_ages), (n_prev, gw)
            ages = state["age_0"][0].tolist() + [0]
            for j, age in enumerate(ages):
                assert (ge[0, j] != 0).item() == (age in ramped_ages), (n_prev, age, ge)

    # expiry follows the current parameters: with e = 0.5 now, memories at distance >= 4.5 from
    # the next call's first step are deleted (ages 2..7 of the old ones, 1 of the new step)
    with torch.no_grad():
        pred.bias.fill_(math.log(0.5 / 9.5))
        _, state, _ = mem(x[6:7], state, starts[6:7])
    assert state["age_0"][0].tolist() == [4, 3, 2, 1]
    assert state["valid_0"].all()


@pytest.mark.parametrize("boundary", [5, 12])
def test_detached_sequences_match_a_detached_full_history_loop(boundary, build_memory, stream):
    """Chunks with ``detach_state`` between them (agents' BPTT) give the task loss's gradients for
    the span predictors and all other parameters that a full-history loop does when the layer
    inputs before the cut are detached: old memories reach ``(w, b)`` through their spans."""
    # in float64: the gradients are sums of terms that cancel, and the float32 rounding of the two
    # orders of summation (block-parallel against the per-pair loop) reaches 1e-5
    mem = build_memory(
        "expire_span", D_IN, max_span=6, ramp=3.0, init_span_fraction=0.4, position_window=4
    )
    mem.double()
    x, starts = stream(24, 2)
    x = x.double()
    _, state, _ = mem(x[:boundary], mem.initial_state(2), starts[:boundary])
    y, _, _ = mem(x[boundary:], detach_state(state), starts[boundary:])
    names, params = zip(*mem.named_parameters(), strict=True)
    got = torch.autograd.grad(y.pow(2).sum(), params, allow_unused=True)
    want_loss = sum(
        naive_memory(mem, x[:, b], starts[:, b], boundary)[0][boundary:].pow(2).sum()
        for b in range(2)
    )
    want = torch.autograd.grad(want_loss, params, allow_unused=True)
    grads = dict(zip(names, got, strict=True))
    for name, g1, g2 in zip(names, got, want, strict=True):
        if g2 is None:
            assert g1 is None or not g1.any(), name
        else:
            torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4, msg=name)
    for l in range(mem.num_layers):
        assert grads[f"span_predictors.{l}.bias"].abs().item() > 0, l


# cache size


def test_expire_span_cache_stays_within_the_span_bound(build_memory):
    ramp = 4.0
    mem = build_memory("expire_span", D_IN, max_span=200, ramp=ramp, init_span_fraction=0.02)
    x = torch.randn(300, 3, D_IN)
    starts = torch.zeros(300, 3, dtype=torch.bool)
    starts[0] = True
    state = mem.initial_state(3)
    lo = 0
    with torch.no_grad():
        for size in [7, 1, 13] * 14 + [6]:
            _, state, aux = mem(x[lo : lo + size], state, starts[lo : lo + size])
            lo += size
            for l in range(mem.num_layers):
                valid, age = state[f"valid_{l}"], state[f"age_{l}"]
                span = mem.spans(l, state[f"mem_{l}"])
                # every kept memory can still be seen: distance < e + R
                assert (age[valid] < span[valid] + ramp).all()
                bound = math.ceil(span[valid].max().item() + ramp)
                assert valid.shape[1] <= bound < 20
                assert valid.sum(1).amax() == valid.shape[1]  # trimmed to the largest row
            assert 0 < aux["memory_size"].item() < 20
    assert lo == 300
    assert mem.capacity() == 203


def test_trxl_keeps_exactly_the_last_span(build_memory, run_chunks):
    span = 10
    mem = build_memory("trxl", D_IN, max_span=span)
    t_len = 57
    x = torch.randn(t_len, 2, D_IN)
    starts = torch.zeros(t_len, 2, dtype=torch.bool)
    starts[0] = True
    with torch.no_grad():
        y, state, auxs = run_chunks(mem, x, starts, [4, 1, 20, 32])
    for l in range(mem.num_layers):
        assert state[f"valid_{l}"].shape[1] == span and state[f"valid_{l}"].all()
        assert sorted(state[f"age_{l}"][0].tolist()) == list(range(1, span + 1))
        torch.testing.assert_close(state[f"mem_{l}"].shape[1], span)
    # memory size: min(L, steps seen) per step, averaged over the call
    want = sum(min(span, t) for t in range(25, t_len)) / (t_len - 25)
    assert auxs[-1]["memory_size"].item() == pytest.approx(want)
    assert auxs[0]["memory_size"].item() == pytest.approx(sum(range(4)) / 4)


def test_state_padded_to_its_spec_gives_the_same_outputs(build_memory, stream, run_chunks):
    for name in ("expire_span", "trxl"):
        ramp = dict(ramp=2.0) if name == "expire_span" else {}
        mem = build_memory(name, D_IN, max_span=8, **ramp)
        x, starts = stream(30, 2)
        with torch.no_grad():
            _, state, _ = run_chunks(mem, x[:20], starts[:20], [20])
            full = {
                k: torch.zeros(2, *shape, dtype=dt) for k, (shape, dt) in mem.state_spec().items()
            }
            padded = {k: v[1] for k, v in stack_states([full, state]).items()}
            assert all(padded[k].shape == full[k].shape for k in full)
            y1, _, _ = mem(x[20:], state, starts[20:])
            y2, _, _ = mem(x[20:], padded, starts[20:])
        torch.testing.assert_close(y1, y2)


# random shortening


def test_random_shortening_only_in_training_mode(monkeypatch, build_memory, stream, run_chunks):
    mem = build_memory("expire_span", D_IN, max_span=40, init_span_fraction=0.5, dropout=0.0)
    x, starts = stream(25, 2)
    with torch.no_grad():
        torch.manual_seed(1)
        y_eval, _, _ = run_chunks(mem, x, starts, [25])
        torch.manual_seed(2)
        assert torch.equal(run_chunks(mem, x, starts, [25])[0], y_eval)
        mem.train()
        outs = []
        for seed in range(8):  # l ~ U(0, 40) falls below the 24 steps seen for some seeds
            torch.manual_seed(seed)
            outs.append(run_chunks(mem, x, starts, [25])[0])
        assert any(not torch.allclose(y, y_eval) for y in outs)
        torch.manual_seed(3)
        assert torch.equal(run_chunks(mem, x, starts, [25])[0], outs[3])
        # l = 0: every step sees only itself, as if each step started an episode
        monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros((), device=k.get("device")))
        y_short, _, _ = run_chunks(mem, x, starts, [25])
        monkeypatch.undo()
        mem.eval()
        y_alone, _, _ = run_chunks(mem, x, torch.ones_like(starts), [25])
        torch.testing.assert_close(y_short, y_alone)
        # without shortening, training mode (no dropout) equals evaluation
        mem.random_shortening = False
        mem.train()
        torch.testing.assert_close(run_chunks(mem, x, starts, [25])[0], y_eval)


# arguments


@pytest.mark.parametrize(
    "name, config, match",
    [
        ("expire_span", dict(max_span=0), "max_span must be an integer >= 1, got 0"),
        ("expire_span", dict(ramp=-1.0), "ramp must be a number > 0, got -1.0"),
        ("expire_span", dict(alpha=-0.1), "alpha must be a number >= 0"),
        ("expire_span", dict(init_span_fraction=1.0), r"init_span_fraction must be in \(0, 1\)"),
        (
            "trxl",
            dict(d_model=30, num_heads=4),
            "d_model must be divisible by num_heads=4, got 30",
        ),
        ("trxl", dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        ("trxl", dict(position_window=-1), "position_window must be an integer >= 0"),
        ("trxl", dict(num_layers=0), "num_layers must be an integer >= 1"),
        ("expire_span", dict(num_heads=0), "num_heads must be an integer >= 1, got 0"),
    ],
)
def test_bad_hyperparameters_are_refused(name, config, match):
    with pytest.raises(ValueError, match=match):
        make_memory(name, D_IN, **config)


# learning


def _recall_batch(g: torch.Generator, t_len: int, b: int, n_tokens: int = 4):
    """A token (one-hot in dims 0..n_tokens-1) at step 0, noise in the other dims after it."""
    tokens = torch.randint(0, n_tokens, (b,), generator=g)
    x = torch.zeros(t_len, b, D_IN)
    x[0, torch.arange(b), tokens] = 1.0
    x[1:, :, n_tokens:] = torch.randn(t_len - 1, b, D_IN - n_tokens, generator=g)
    return x, tokens


def _train_recall(mem, t_len: int, steps: int, lr: float, seed: int = 0):
    """Supervised recall: output the step-0 token at the last step. Returns (accuracy, aux)."""
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(mem.output_dim, 4)
    opt = torch.optim.Adam([*mem.parameters(), *head.parameters()], lr=lr)
    mem.train()
    starts = torch.zeros(t_len, 64, dtype=torch.bool)
    starts[0] = True
    for _ in range(steps):
        x, tokens = _recall_batch(g, t_len, 64)
        y, _, aux = mem(x, mem.initial_state(64), starts)
        loss = torch.nn.functional.cross_entropy(head(y[-1]), tokens)
        loss = loss + sum(v for k, v in aux.items() if k.startswith("loss_"))
        opt.zero_grad()
        loss.backward()
        opt.step()
    mem.eval()
    with torch.no_grad():
        x, tokens = _recall_batch(g, t_len, 512)
        starts = torch.zeros(t_len, 512, dtype=torch.bool)
        starts[0] = True
        y, _, aux = mem(x, mem.initial_state(512), starts)
        acc = (head(y[-1]).argmax(-1) == tokens).float().mean().item()
    return acc, aux


def test_span_grows_where_the_task_needs_it():
    """Gradient through the soft mask lengthens the span of the step the task must recall.

    The token sits 6 steps back; initial spans (~2.4) put it inside the ramp (R = 4), so only
    the mask's gradient can keep it: spans of the token steps must grow past 6.
    """
    torch.manual_seed(0)
    mem = make_memory(
        "expire_span",
        D_IN,
        max_span=24,
        ramp=4.0,
        alpha=0.0,
        num_layers=1,
        d_model=32,
        init_span_fraction=0.1,
        position_window=0,
        random_shortening=False,
    )
    _, aux0 = _train_recall(mem, t_len=7, steps=0, lr=3e-3)
    acc, aux = _train_recall(mem, t_len=7, steps=100, lr=3e-3)
    assert aux0["spans"].mean() < 3.0
    token_span, other_spans = aux["spans"][0].mean(), aux["spans"][1:].mean()
    assert token_span > 6.0 and token_span > other_spans + 1.0, (token_span, other_spans)
    assert acc > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("name", ["expire_span", "trxl"])
def test_recall_a_token_over_thirty_noisy_steps(name):
    torch.manual_seed(0)
    mem = make_memory(name, D_IN)
    acc, aux = _train_recall(mem, t_len=32, steps=400, lr=1e-3)
    assert acc > 0.95, (name, acc)
    if name == "expire_span":
        # the token step's memory outlives the 31 steps to the query
        assert aux["spans"][0].mean() + mem.ramp > 31
