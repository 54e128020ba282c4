"""The acting cache (``policies/memory/acting.py``) against the uncached forward, for every memory.

References: the same memory with gradients enabled (the training path, which never uses an acting
cache), the same memory with ``acting_cache = False``, and fresh copies of the state. The windows
hold episode starts (also two in a row), expired memories and segment ends, with small
hyperparameters so that all of them happen within a few steps.
"""

from __future__ import annotations

import copy
import io
import sys

import pytest
import torch

from policies.memory import (
    available_memories,
    cat_states,
    detach_state,
    index_state,
    make_memory,
    stack_states,
)
from policies.memory.acting import has_cache

D_IN = 5
T = 26
B = 3

#: per memory, configurations whose expiry / segment ends fall inside the window; memories not
#: listed are run with their defaults
CONFIGS: dict[str, list[dict]] = {
    "expire_span": [
        dict(max_span=8, ramp=3.0, init_span_fraction=0.4, position_window=4, d_model=16,
             num_heads=2, d_ff=32),
        dict(max_span=30, ramp=4.0, init_span_fraction=0.2, num_layers=1, position_window=0,
             d_model=16, num_heads=4, d_ff=32),
    ],
    "trxl": [
        dict(max_span=5, position_window=3, d_model=16, num_heads=2, d_ff=32),
        dict(max_span=7, position_window=0, num_layers=1, d_model=16, num_heads=4, d_ff=32),
    ],
    "rmt": [
        dict(segment_len=3, num_memory_tokens=2, d_model=16, num_heads=2),
        dict(segment_len=5, d_model=16, num_heads=4, num_layers=1),
    ],
    "memformer": [
        dict(segment_len=3, num_slots=2, d_model=16, num_heads=2),
        dict(segment_len=4, d_model=16, num_heads=4, num_layers=1, tau=0.3),
    ],
    "rehearsal": [
        dict(segment_len=3, num_slots=3, d_model=16, num_heads=2),
        dict(segment_len=1, d_model=16, num_heads=4),
    ],
    "gru": [dict(hidden_dim=8, num_layers=2)],
}
CASES = [(name, cfg) for name in available_memories() for cfg in CONFIGS.get(name, [{}])]
IDS = [f"{name}-{i}" for name in available_memories()
       for i in range(len(CONFIGS.get(name, [{}])))]
#: memories whose state carries an acting cache (the recurrent baselines have nothing to keep)
CACHING = ("expire_span", "trxl", "rmt", "memformer", "rehearsal")


def build(name: str, config: dict, seed: int = 0):
    torch.manual_seed(seed)
    return make_memory(name, D_IN, **config).eval()


def stream(t_len: int = T, b: int = B, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t_len, b, D_IN, generator=g)
    starts = torch.zeros(max(t_len, T), b, dtype=torch.bool)
    starts[0] = True
    starts[7, 0] = True
    starts[11, 1 % b] = True
    starts[12, 1 % b] = True  # two in a row
    starts[18, 2 % b] = True
    return x, starts[:t_len].clone()


def steps(mem, x, starts, state=None, cache: bool = True):
    """One no-grad call per step, the state passed along (a rollout)."""
    mem.acting_cache = cache
    state = mem.initial_state(x.shape[1]) if state is None else state
    ys, auxs = [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            y, state, aux = mem(x[t : t + 1], state, starts[t : t + 1])
            ys.append(y)
            auxs.append(aux)
    mem.acting_cache = True
    return torch.cat(ys), state, auxs


def assert_states_close(got, want):
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape, k
        torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-4, msg=k)


def lookups(monkeypatch) -> list[bool]:
    """Record whether each acting-cache lookup found a valid cache."""
    found: list[bool] = []
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("policies.memory.") and hasattr(
            module, "cached"
        ) and module.__name__ != "policies.memory.acting":
            original = module.cached

            def spy(state, anchor, stamp, original=original):
                got = original(state, anchor, stamp)
                found.append(got is not None)
                return got

            monkeypatch.setattr(module, "cached", spy)
    return found


# the cached path equals the uncached one


@pytest.mark.parametrize(("name", "config"), CASES, ids=IDS)
def test_cached_steps_equal_the_training_forward_and_uncached_steps(name, config, monkeypatch):
    mem = build(name, config)
    x, starts = stream()
    with torch.enable_grad():  # the training path: everything from the stored hidden states
        y_train, s_train, aux_train = mem(x, mem.initial_state(B), starts)
    y_plain, s_plain, aux_plain = steps(mem, x, starts, cache=False)
    found = lookups(monkeypatch)
    y_cached, s_cached, aux_cached = steps(mem, x, starts)
    torch.testing.assert_close(y_cached, y_train.detach(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(y_cached, y_plain, atol=1e-5, rtol=1e-4)
    assert_states_close(s_cached, detach_state(s_train))
    assert_states_close(s_cached, s_plain)
    for a, b in zip(aux_cached, aux_plain, strict=True):
        assert set(a) == set(b)
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    size = torch.stack([a["memory_size"] for a in aux_cached]).mean()
    torch.testing.assert_close(size, aux_train["memory_size"], atol=1e-5, rtol=1e-5)
    if name in CACHING:
        # every step after the first found the cache its previous step attached
        assert found and not found[0] and all(found[len(found) // T :]), found
        assert any(has_cache(v) for v in s_cached.values())


@pytest.mark.parametrize(("name", "config"), CASES, ids=IDS)
def test_chunked_calls_then_cached_steps_equal_one_call(name, config):
    """Multi-step no-grad calls (an MRBP forward, an evaluation) hand over to one-step calls."""
    mem = build(name, config)
    x, starts = stream()
    with torch.no_grad():
        y_full, s_full, _ = mem(x, mem.initial_state(B), starts)
        y1, state, _ = mem(x[:9], mem.initial_state(B), starts[:9])
    y2, state, _ = steps(mem, x[9:17], starts[9:17], state)
    with torch.no_grad():
        y3, state, _ = mem(x[17:], state, starts[17:])
    torch.testing.assert_close(torch.cat([y1, y2, y3]), y_full, atol=1e-5, rtol=1e-4)
    assert_states_close(state, s_full)


# when the cache is not trusted


def _train_step(mem, optimizer=None):
    x, starts = stream(6, B, seed=7)
    mem.train()
    y, _, aux = mem(x, mem.initial_state(B), starts)
    loss = y.pow(2).mean() + sum(v for k, v in aux.items() if k.startswith("loss_"))
    loss.backward()
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad()
    mem.eval()


PARAMETER_CHANGES = ["adam", "adam_foreach", "adam_fused", "training_call", "in_place",
                     "load_state_dict"]


@pytest.mark.parametrize("change", PARAMETER_CHANGES)
@pytest.mark.parametrize("name", [n for n in CACHING if n in available_memories()])
def test_a_parameter_change_invalidates_the_cache(name, change):
    """A state carried across an update (the trainer's rollouts) acts with the new parameters."""
    config = CONFIGS[name][0]
    mem = build(name, config)
    x, starts = stream()
    _, state, _ = steps(mem, x[:10], starts[:10])
    assert any(has_cache(v) for v in state.values())
    params = [p for p in mem.parameters() if p.requires_grad]
    if change.startswith("adam"):
        kw = {"adam_foreach": dict(foreach=True), "adam_fused": dict(fused=True)}.get(change, {})
        _train_step(mem, torch.optim.Adam(params, lr=0.05, **kw))
    elif change == "training_call":  # gradients computed; the parameters changed out of sight
        _train_step(mem)
        with torch.no_grad():
            for p in params:
                p.data.mul_(1.5)
    elif change == "in_place":
        with torch.no_grad():
            for p in params:
                p.add_(0.05)
    else:
        other = build(name, config, seed=5)
        mem.load_state_dict(other.state_dict())
    y_cached, s_cached, _ = steps(mem, x[10:], starts[10:], state)
    y_plain, s_plain, _ = steps(mem, x[10:], starts[10:], state, cache=False)
    torch.testing.assert_close(y_cached, y_plain, atol=1e-5, rtol=1e-4)
    assert_states_close(s_cached, s_plain)


@pytest.mark.parametrize("name", [n for n in CACHING if n in available_memories()])
def test_derived_or_modified_states_do_not_use_the_cache(name):
    mem = build(name, CONFIGS[name][0])
    x, starts = stream()
    _, state, _ = steps(mem, x[:10], starts[:10])
    anchors = [k for k, v in state.items() if has_cache(v)]
    assert anchors
    # states made from it carry no cache (and need none to give the same outputs)
    derived = {
        "index": index_state(state, torch.arange(B)),
        "detach": detach_state(state),
        "stack": {k: v[1] for k, v in stack_states([state, state]).items()},
        "cat": index_state(cat_states([state, state]), slice(B, 2 * B)),
        "deepcopy": copy.deepcopy(state),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    derived["pickle"] = torch.load(buffer)  # weights_only: nothing but tensors was written
    y_want, s_want, _ = steps(mem, x[10:], starts[10:], state, cache=False)
    for how, other in derived.items():
        assert not any(has_cache(other[k]) for k in anchors), how
        y, s, _ = steps(mem, x[10:], starts[10:], other)
        torch.testing.assert_close(y, y_want, atol=1e-5, rtol=1e-4, msg=how)
        assert_states_close(s, s_want)
    # a state tensor changed in place: the cache made from it is not used
    changed = dict(state)
    key = anchors[0]
    changed[key].mul_(0.5)
    y, _, _ = steps(mem, x[10:], starts[10:], changed)
    y_want, _, _ = steps(mem, x[10:], starts[10:], {k: v.clone() for k, v in changed.items()},
                         cache=False)
    torch.testing.assert_close(y, y_want, atol=1e-5, rtol=1e-4)


def test_a_cache_is_used_only_by_the_memory_that_made_it():
    config = CONFIGS["expire_span"][0]
    mem, twin = build("expire_span", config), build("expire_span", config, seed=3)
    x, starts = stream()
    _, state, _ = steps(mem, x[:10], starts[:10])
    y, _, _ = steps(twin, x[10:], starts[10:], state)
    y_want, _, _ = steps(twin, x[10:], starts[10:], state, cache=False)
    torch.testing.assert_close(y, y_want, atol=1e-5, rtol=1e-4)


# fixed capacity: static shapes, no host reads, the same outputs


class _NoHostReads:
    """Make reading a tensor's value back to Python an error (what syncs an accelerator)."""

    names = ("tolist", "item", "__bool__", "__int__", "__float__", "__index__")

    def __enter__(self):
        def refuse(*args, **kwargs):
            raise AssertionError("a tensor value was read back to the host")

        self.saved = {n: getattr(torch.Tensor, n) for n in self.names}
        for n in self.names:
            setattr(torch.Tensor, n, refuse)
        return self

    def __exit__(self, *exc):
        for n, f in self.saved.items():
            setattr(torch.Tensor, n, f)


@pytest.mark.parametrize("name", ["expire_span", "trxl"])
def test_fixed_capacity_equals_dynamic_without_host_reads(name):
    config = CONFIGS[name][0]
    dynamic = build(name, config)
    fixed = build(name, {**config, "fixed_capacity": True})
    cap = fixed.capacity()
    x, starts = stream()
    y_dyn, s_dyn, _ = steps(dynamic, x, starts)
    with _NoHostReads():
        y_fix, s_fix, _ = steps(fixed, x, starts)
    torch.testing.assert_close(y_fix, y_dyn, atol=1e-5, rtol=1e-4)
    for k, v in s_fix.items():
        assert v.shape[:2] == (B, cap), k
    # the same memories, padded with empty slots
    for l in range(fixed.num_layers):
        for b in range(B):
            vd, vf = s_dyn[f"valid_{l}"][b], s_fix[f"valid_{l}"][b]
            assert torch.equal(s_fix[f"age_{l}"][b][vf], s_dyn[f"age_{l}"][b][vd])
            torch.testing.assert_close(s_fix[f"mem_{l}"][b][vf], s_dyn[f"mem_{l}"][b][vd])
    # blocks (training) too, from a dynamic state or a fixed one
    with torch.no_grad(), _NoHostReads():
        y_blk, _, _ = fixed(x[:13], fixed.initial_state(B), starts[:13])
        y_blk2, _, _ = fixed(x[13:], s_fix, starts[13:])
    torch.testing.assert_close(y_blk, y_dyn[:13], atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        y_ref, _, _ = dynamic(x[13:], s_fix, starts[13:])
    torch.testing.assert_close(y_blk2, y_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["lstm", "gru", "none"])
def test_recurrent_baselines_act_without_host_reads(name):
    mem = build(name, CONFIGS.get(name, [{}])[0])
    x, starts = stream()
    y_full, _, _ = mem(x, mem.initial_state(B), starts)
    with _NoHostReads():
        y, _, _ = steps(mem, x, starts)
    torch.testing.assert_close(y, y_full.detach(), atol=1e-5, rtol=1e-4)


# work only where it is needed


def test_rehearsal_encodes_and_writes_only_where_a_segment_ends():
    s_len = 4
    mem = build("rehearsal", dict(segment_len=s_len, d_model=16, num_heads=2))
    encoded: list[int] = []  # segments per call of the segment encoder
    mem.encoder.register_forward_pre_hook(lambda module, args: encoded.append(args[0].shape[0]))
    x = torch.randn(11, 2, D_IN)
    starts = torch.zeros(11, 2, dtype=torch.bool)
    starts[0] = True
    starts[0, 1] = True
    starts[2, 1] = True  # row 1's segments end at steps 5 and 9, row 0's at 3 and 7
    steps(mem, x, starts)
    assert len(encoded) == 4, encoded  # one call per step where some row's segment ends
    encoded.clear()
    with torch.no_grad():
        mem(x, mem.initial_state(2), starts)
    # one call over the sequence encodes exactly the 4 segments that end
    assert encoded == [4], encoded


def test_inference_mode_acts_with_the_cache():
    mem = build("expire_span", CONFIGS["expire_span"][0])
    x, starts = stream()
    y_want, _, _ = steps(mem, x, starts)
    state = mem.initial_state(B)
    ys = []
    with torch.inference_mode():
        for t in range(T):
            y, state, _ = mem(x[t : t + 1], state, starts[t : t + 1])
            ys.append(y)
    torch.testing.assert_close(torch.cat(ys), y_want, atol=1e-5, rtol=1e-4)
    assert any(has_cache(v) for v in state.values())
