"""Shared helpers of the agent tests: small policies, synthetic sequences."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from agents.buffer import SequenceBatch
from policies import make_policy

OBS_SPACE = gym.spaces.Box(0.0, 1.0, (6,), np.float32)
ACT_SPACE = gym.spaces.Discrete(4)


def small_policy(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return make_policy(name, OBS_SPACE, ACT_SPACE, features_dim=16)


def episode_starts(t_len: int, n: int) -> torch.Tensor:
    starts = torch.zeros(t_len, n, dtype=torch.bool)
    starts[0] = True
    if t_len > 7:
        starts[7, 0] = True
        starts[t_len - 3, n - 1] = True
    return starts


def random_batch(policy, t_len: int = 24, n: int = 3, seed: int = 1) -> SequenceBatch:
    """A synthetic batch of ``n`` sequences with mid-sequence episode starts."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(t_len, n, *OBS_SPACE.shape, generator=g)
    return SequenceBatch(
        obs=obs,
        actions=torch.randint(0, 4, (t_len, n), generator=g),
        log_probs=torch.randn(t_len, n, generator=g) * 0.1 - 1.4,
        values=torch.randn(t_len, n, generator=g),
        advantages=torch.randn(t_len, n, generator=g),
        returns=torch.randn(t_len, n, generator=g),
        episode_starts=episode_starts(t_len, n),
        state=policy.initial_state(n, "cpu"),
    )
