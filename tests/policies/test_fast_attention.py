"""The transformer memories' attention (one fused softmax over an additive mask, relative positions
as a shifted view) against the formulation it replaced, written here as the reference: masked
scores, ``exp``, multiplied by the soft mask and renormalised, positions gathered per pair.

The update must give the same loss and gradients on the same batch, up to float rounding.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from policies import make_policy
from policies.memory.transformer import (
    HIDDEN,
    CachedAttentionLayer,
    attention_bias,
    block_position_scores,
    masked_attention_weights,
    relative_position_scores,
)


def reference_weights(scores, visible, soft):
    """The renormalised masked attention as first written (Expire-Span 4.1)."""
    s = scores.masked_fill(~visible.unsqueeze(1), float("-inf"))
    w = torch.exp(s - s.amax(dim=-1, keepdim=True).detach())
    if soft is not None:
        w = w * soft.unsqueeze(1)
    return w / w.sum(dim=-1, keepdim=True)


def reference_layer(self, h, hn, k, v, dist, bias):
    """:class:`CachedAttentionLayer` forward with the reference attention and positions; the
    visibility and soft mask are read back from the bias (``m = exp(log m)``)."""
    b, t, d = h.shape
    q = self.q(hn).view(b, t, self.num_heads, self.d_head).transpose(1, 2) / math.sqrt(self.d_head)
    scores = q @ k.transpose(-1, -2)
    if self.rel is not None:
        scores = scores + relative_position_scores(q, self.rel, dist)
    visible = bias > HIDDEN / 2
    soft = torch.where(visible, bias, 0.0).exp() * visible
    w = self.drop(reference_weights(scores, visible, soft))
    o = (w @ v).transpose(1, 2).reshape(b, t, d)
    h = h + self.drop(self.out(o))
    return h + self.drop(self.ff(self.norm_ff(h)))


def test_bias_softmax_equals_the_renormalised_mask_with_its_gradients():
    g = torch.Generator().manual_seed(0)
    b, h, t, k = 2, 3, 5, 9
    scores = torch.randn(b, h, t, k, generator=g, dtype=torch.float64).requires_grad_()
    soft = torch.rand(b, t, k, generator=g, dtype=torch.float64)
    soft[soft < 0.3] = 0.0  # expired pairs
    soft[soft > 0.8] = 1.0  # pairs before the ramp
    soft.requires_grad_()
    visible = (soft > 0) & (torch.rand(b, t, k, generator=g) > 0.2)
    visible[..., 0] = True  # every query sees a key (its own step, in the memory)
    soft.data[..., 0] = 1.0
    upstream = torch.randn(b, h, t, k, generator=g, dtype=torch.float64)
    for fn in (masked_attention_weights, reference_weights):
        w = fn(scores, visible, soft)
        grads = torch.autograd.grad((w * upstream).sum(), [scores, soft])
        if fn is masked_attention_weights:
            want_w, want_grads = w, grads
    torch.testing.assert_close(want_w, w)
    for got, want in zip(want_grads, grads, strict=True):
        torch.testing.assert_close(got, want)
    assert torch.isfinite(grads[1]).all()
    # hidden keys get exactly zero weight, in float32 too
    w32 = masked_attention_weights(scores.float().detach() * 30, visible, soft.float().detach())
    assert (w32[~visible.unsqueeze(1).expand_as(w32)] == 0).all()
    bias = attention_bias(visible, None, torch.float32)
    assert ((bias == 0) == visible).all()


@pytest.mark.parametrize(("t", "window", "cache"), [(7, 3, 4), (3, 5, 6), (6, 6, 0), (9, 2, 1)])
def test_block_positions_equal_the_gather(t, window, cache):
    g = torch.Generator().manual_seed(1)
    b, h, dh = 2, 3, 4
    q = torch.randn(b, h, t, dh, generator=g, dtype=torch.float64).requires_grad_()
    rel = torch.randn(window, h, dh, generator=g, dtype=torch.float64).requires_grad_()
    age = torch.randint(1, 9, (b, cache), generator=g)
    steps = torch.arange(t)
    dist = torch.cat([steps[None, :, None] + age[:, None, :],
                      (steps[:, None] - steps[None, :]).expand(b, -1, -1)], dim=2)
    seen = torch.cat([torch.ones(b, t, cache, dtype=torch.bool), dist[:, :, cache:] >= 0], 2)
    upstream = torch.randn(b, h, t, cache + t, generator=g, dtype=torch.float64)
    upstream = upstream * seen.unsqueeze(1)  # keys after the query are never attended
    got = block_position_scores(q, rel, dist, cache)
    want = relative_position_scores(q, rel, dist)
    torch.testing.assert_close(got * seen.unsqueeze(1), want * seen.unsqueeze(1))
    for a, b_ in zip(torch.autograd.grad((got * upstream).sum(), [q, rel]),
                     torch.autograd.grad((want * upstream).sum(), [q, rel]), strict=True):
        torch.testing.assert_close(a, b_)


def _batch(name, seed=0, t=24, n=3, **config):
    """A policy, a stored state mid-episode (a cache with expired memories), a batch."""
    torch.manual_seed(seed)
    space = gym.spaces.Box(0, 1, (3, 3, 6), np.uint8)
    policy = make_policy(name, space, gym.spaces.Discrete(4), **config).eval()
    g = torch.Generator().manual_seed(seed + 1)

    def obs(steps):
        return torch.randint(0, 2, (steps, n, 3, 3, 6), generator=g, dtype=torch.uint8)

    starts = torch.zeros(30, n, dtype=torch.bool)
    starts[0] = True
    with torch.no_grad():
        _, _, state, _ = policy(obs(30), policy.initial_state(n), starts)
    starts = torch.zeros(t, n, dtype=torch.bool)
    starts[9, 1] = True
    starts[15, 2] = True
    return policy, state, obs(t), starts, torch.randint(0, 4, (t, n), generator=g), \
        torch.randn(t, n, generator=g), torch.randn(t, n, generator=g)


def _loss_and_grads(policy, state, obs, starts, actions, adv, returns):
    policy.zero_grad()
    dist, values, _, aux = policy(obs, state, starts)
    loss = -(dist.log_prob(actions) * adv).mean() + 0.5 * (values - returns).pow(2).mean()
    loss = loss + sum(v for k, v in aux.items() if k.startswith("loss_")) - 0.01 * \
        dist.entropy().mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in policy.named_parameters()
                           if p.grad is not None}


@pytest.mark.parametrize(("name", "config"), [
    ("expire_span", dict(max_span=12, ramp=4.0, init_span_fraction=0.5, alpha=1e-2)),
    ("expire_span", {}),
    ("trxl", dict(max_span=10, position_window=6)),
])
def test_update_loss_and_gradients_equal_the_previous_attention(name, config, monkeypatch):
    batch = _batch(name, **config)
    state = batch[1]
    assert state["valid_0"].shape[1] > 0
    loss, grads = _loss_and_grads(*batch)
    monkeypatch.setattr(CachedAttentionLayer, "forward", reference_layer)
    want_loss, want_grads = _loss_and_grads(*batch)
    torch.testing.assert_close(loss, want_loss, atol=1e-6, rtol=1e-5)
    assert set(grads) == set(want_grads)
    for n, g in grads.items():
        torch.testing.assert_close(g, want_grads[n], atol=1e-6, rtol=1e-4, msg=n)
