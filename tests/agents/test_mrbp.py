"""MRBP (Memformer algorithm 1) leaves the same gradients as full BPTT, for every memory."""

from __future__ import annotations

import pytest
import torch
from agent_helpers import ACT_SPACE, OBS_SPACE, random_batch, small_policy
from torch import nn

from agents.config import PPOConfig
from agents.loss import make_loss_fn
from agents.mrbp import bptt_backward, mrbp_backward, run_policy
from policies import ActorCritic
from policies.encoders import make_encoder
from policies.memory import Memory, available_memories

NAMES = available_memories()


def grads(policy) -> dict[str, torch.Tensor]:
    return {
        n: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        for n, p in policy.named_parameters()
    }


def assert_same_grads(a, b):
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("name", NAMES)
def test_mrbp_equals_full_bptt(name):
    policy = small_policy(name)
    policy.eval()  # deterministic: one call over the sequence is the reference
    batch = random_batch(policy)
    loss_fn = make_loss_fn(policy, PPOConfig(), memory_hook=False)

    policy.zero_grad()
    stats_full = bptt_backward(policy, batch, loss_fn)
    full = grads(policy)
    for chunk in (4, 5, 24):  # uneven last chunk, and one chunk
        policy.zero_grad()
        stats = mrbp_backward(policy, batch, loss_fn, chunk)
        assert_same_grads(grads(policy), full)
        torch.testing.assert_close(stats["losses/loss"], stats_full["losses/loss"])
    assert any(g.abs().sum() > 0 for g in full.values())


@pytest.mark.parametrize("name", NAMES)
def test_mrbp_equals_chunked_bptt_in_train_mode(name):
    """Train mode (stochastic layers on): MRBP equals BPTT over the same chunks with the graph
    kept across them, RNG draws replayed."""
    policy = small_policy(name)
    policy.train()
    batch = random_batch(policy, t_len=16)
    loss_fn = make_loss_fn(policy, PPOConfig(), memory_hook=False)
    torch.manual_seed(3)
    policy.zero_grad()
    reference_chunked(policy, batch, loss_fn, 4)
    ref = grads(policy)
    torch.manual_seed(3)
    policy.zero_grad()
    mrbp_backward(policy, batch, loss_fn, 4)
    assert_same_grads(grads(policy), ref)


def reference_chunked(policy, batch, loss_fn, chunk):
    """Full BPTT, chunk by chunk with the state (and graph) passed along; one backward."""
    state, total, length = batch.state, 0.0, batch.actions.shape[0]
    for lo in range(0, length, chunk):
        hi = min(lo + chunk, length)
        part = batch.time_slice(lo, hi, state)
        out = run_policy(policy, part, state)
        loss, _ = loss_fn(part, out, (hi - lo) / length)
        total = total + loss
        state = out.state
    total.backward()


class DropoutGRUMemory(Memory):
    """A GRU cell run step by step with dropout on its input and hidden state (test memory)."""

    def __init__(self, input_dim: int, hidden_dim: int = 16, p: float = 0.3) -> None:
        super().__init__(input_dim, hidden_dim)
        self.cell = nn.GRUCell(input_dim, hidden_dim)
        self.drop = nn.Dropout(p)

    def initial_state(self, batch_size, device=None):
        return {"h": torch.zeros(batch_size, self.output_dim, device=device)}

    def forward(self, x, state, episode_starts):
        h, ys = state["h"], []
        for t in range(x.shape[0]):
            h = h * (~episode_starts[t]).float().unsqueeze(-1)
            h = self.cell(self.drop(x[t]), self.drop(h))
            ys.append(h)
        return torch.stack(ys), {"h": h}, {"memory_size": torch.tensor(1.0)}


def test_dropout_replays_exactly():
    torch.manual_seed(0)
    enc = make_encoder(OBS_SPACE, features_dim=16)
    policy = ActorCritic(enc, DropoutGRUMemory(16), ACT_SPACE)
    policy.train()
    batch = random_batch(policy, t_len=20)
    loss_fn = make_loss_fn(policy, PPOConfig(), memory_hook=False)

    # dropout really is random here: two runs from different RNG states differ
    with torch.no_grad():
        torch.manual_seed(1)
        a = run_policy(policy, batch, batch.state).values
        torch.manual_seed(2)
        b = run_policy(policy, batch, batch.state).values
    assert not torch.allclose(a, b)

    torch.manual_seed(5)
    policy.zero_grad()
    reference_chunked(policy, batch, loss_fn, 5)
    ref = grads(policy)
    after_ref = torch.rand(3)
    torch.manual_seed(5)
    policy.zero_grad()
    mrbp_backward(policy, batch, loss_fn, 5)
    assert_same_grads(grads(policy), ref)
    # and the RNG continues as if the sequence had been run once
    torch.testing.assert_close(torch.rand(3), after_ref)


def test_mrbp_gradient_crosses_chunks():
    """The injected state gradient matters: the first chunk's inputs get gradient from a loss on
    the last step only, which they reach only through the memory state."""
    policy = small_policy("gru")
    policy.eval()
    batch = random_batch(policy, t_len=12, n=1)
    marker = torch.zeros(12, 1)
    marker[-1] = 1.0
    obs = batch.obs.clone().requires_grad_(True)
    batch = batch._replace(
        obs=obs, returns=marker, episode_starts=torch.zeros(12, 1, dtype=torch.bool)
    )

    def last_step_loss(part, out, fraction):
        return (out.values * part.returns).sum(), {}

    mrbp_backward(policy, batch, last_step_loss, 4)
    assert obs.grad is not None and obs.grad[:4].abs().sum() > 0


def test_bad_chunk_len():
    policy = small_policy("gru")
    batch = random_batch(policy, t_len=4)
    with pytest.raises(ValueError, match="chunk_len"):
        mrbp_backward(policy, batch, make_loss_fn(policy, PPOConfig()), 0)
