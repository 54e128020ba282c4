"""Generalised advantage estimation (Schulman et al. 2016) on time-major tensors, on the device."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["compute_gae"]


def compute_gae(
    rewards: Tensor,
    values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    last_values: Tensor,
    final_values: Tensor,
    *,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """Advantages and returns of a rollout, all tensors ``(T, B)`` except ``last_values`` ``(B,)``.

    Args:
        rewards: reward of step ``t``.
        values: value estimate of the observation at step ``t``.
        terminated: step ``t`` ended its episode in a terminal state (no future reward).
        truncated: step ``t`` ended its episode by a time limit (the future is cut, not zero).
        last_values: value of the observation after the last step (bootstraps step ``T - 1``).
        final_values: value of the final observation of step ``t`` where ``truncated[t]``
            (ignored elsewhere).
        gamma: discount factor.
        gae_lambda: GAE's lambda.

    Returns:
        ``(advantages, returns)`` with ``returns = advantages + values``.

    A terminated step bootstraps with zero; a truncated step bootstraps with the value of its final
    observation, since the episode would have gone on (the time-limit bootstrap of Pardo et al.
    2018, "Time limits in reinforcement learning"). Either ends the advantage recursion.
    Vectorised over envs; one loop over time of device ops (no host reads).
    """
    if not (rewards.shape == values.shape == terminated.shape == truncated.shape):
        raise ValueError(
            "rewards, values, terminated and truncated must have the same (T, B) shape, got "
            f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(terminated.shape)}, "
            f"{tuple(truncated.shape)}"
        )
    terminated = terminated.bool()
    truncated = truncated.bool()
    done = terminated | truncated
    next_values = torch.cat([values[1:], last_values.unsqueeze(0)])
    # the value the step bootstraps with: the next obs, the final obs (truncation), or zero
    boot = torch.where(truncated, final_values, next_values)
    boot = torch.where(terminated, torch.zeros_like(boot), boot)
    deltas = rewards + gamma * boot - values
    carry = gamma * gae_lambda * (~done).to(values.dtype)
    advantages = torch.empty_like(values)
    running = torch.zeros_like(last_values)
    for t in range(values.shape[0] - 1, -1, -1):
        running = deltas[t] + carry[t] * running
        advantages[t] = running
    return advantages, advantages + values
