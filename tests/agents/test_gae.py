"""GAE on the device equals a plain Python loop; truncation bootstraps, termination does not."""

from __future__ import annotations

import pytest
import torch

from agents.gae import compute_gae


def gae_loop(rewards, values, terminated, truncated, last_values, final_values, gamma, lam):
    """Reference: one env and one step at a time, floats only."""
    t_len, n_envs = rewards.shape
    adv = [[0.0] * n_envs for _ in range(t_len)]
    for b in range(n_envs):
        running = 0.0
        for t in reversed(range(t_len)):
            if terminated[t][b]:
                next_v, running = 0.0, 0.0
            elif truncated[t][b]:
                next_v, running = float(final_values[t][b]), 0.0
            elif t == t_len - 1:
                next_v = float(last_values[b])
            else:
                next_v = float(values[t + 1][b])
            delta = float(rewards[t][b]) + gamma * next_v - float(values[t][b])
            running = delta + gamma * lam * running
            adv[t][b] = running
    return torch.tensor(adv)


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 1.0), (0.5, 0.0)])
def test_gae_matches_loop(gamma, lam):
    g = torch.Generator().manual_seed(0)
    t_len, n = 37, 5
    rewards = torch.randn(t_len, n, generator=g)
    values = torch.randn(t_len, n, generator=g)
    final_values = torch.randn(t_len, n, generator=g)
    last_values = torch.randn(n, generator=g)
    ends = torch.rand(t_len, n, generator=g)
    terminated = ends < 0.1
    truncated = (ends >= 0.1) & (ends < 0.2)
    adv, ret = compute_gae(
        rewards, values, terminated, truncated, last_values, final_values, gamma=gamma,
        gae_lambda=lam,
    )
    ref = gae_loop(rewards, values, terminated, truncated, last_values, final_values, gamma, lam)
    assert terminated.any() and truncated.any()
    torch.testing.assert_close(adv, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ret, adv + values)


def test_truncation_bootstraps_and_termination_does_not():
    # one step, two envs: env 0 terminates, env 1 is truncated; both have final value 10
    rewards = torch.ones(1, 2)
    values = torch.zeros(1, 2)
    final_values = torch.full((1, 2), 10.0)
    last_values = torch.full((2,), 100.0)  # the next episode's value: must never be used here
    terminated = torch.tensor([[True, False]])
    truncated = torch.tensor([[False, True]])
    adv, _ = compute_gae(
        rewards, values, terminated, truncated, last_values, final_values, gamma=0.5,
        gae_lambda=1.0,
    )
    assert adv.tolist() == [[1.0, 1.0 + 0.5 * 10.0]]


def test_episode_end_stops_the_recursion():
    # a big reward after a termination must not leak into the step before it
    rewards = torch.tensor([[0.0], [0.0], [50.0]])
    values = torch.zeros(3, 1)
    terminated = torch.tensor([[False], [True], [False]])
    truncated = torch.zeros(3, 1, dtype=torch.bool)
    adv, _ = compute_gae(
        rewards, values, terminated, truncated, torch.zeros(1), torch.zeros(3, 1), gamma=1.0,
        gae_lambda=1.0,
    )
    assert adv[:2].abs().sum() == 0 and adv[2, 0] == 50.0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="same"):
        compute_gae(torch.zeros(3, 2), torch.zeros(3, 1), torch.zeros(3, 2), torch.zeros(3, 2),
                    torch.zeros(2), torch.zeros(3, 2), gamma=0.9, gae_lambda=0.9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gae_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(1)
    args = [torch.randn(20, 3, generator=g), torch.randn(20, 3, generator=g),
            torch.rand(20, 3, generator=g) < 0.1, torch.rand(20, 3, generator=g) < 0.1,
            torch.randn(3, generator=g), torch.randn(20, 3, generator=g)]
    cpu, _ = compute_gae(*args, gamma=0.99, gae_lambda=0.95)
    gpu, _ = compute_gae(*[a.cuda() for a in args], gamma=0.99, gae_lambda=0.95)
    torch.testing.assert_close(gpu.cpu(), cpu)
