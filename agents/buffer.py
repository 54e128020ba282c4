"""The rollout buffer: preallocated time-major ``(T, B)`` tensors on the device, the memory state
at the start of each training sequence, GAE, and minibatches of whole sequences."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from policies.memory import State, index_state, stack_states

from .gae import compute_gae

__all__ = ["RolloutBuffer", "SequenceBatch", "obs_to_tensor"]

#: an observation batch: a tensor, or a (nested) dict of tensors; handled with torch's pytree
Obs = Tensor | dict[str, Any]


def obs_to_tensor(obs: Any, device: torch.device) -> Obs:
    """A numpy observation batch (array or dict of arrays) as tensors on ``device``."""
    return tree_map(lambda x: torch.as_tensor(np.asarray(x), device=device), obs)


def _empty_obs(space: gym.Space, lead: tuple[int, ...], device: torch.device) -> Obs:
    if isinstance(space, gym.spaces.Dict):
        return {k: _empty_obs(s, lead, device) for k, s in space.spaces.items()}
    dtype = torch.as_tensor(np.zeros((), dtype=space.dtype)).dtype
    return torch.zeros(*lead, *space.shape, dtype=dtype, device=device)


class SequenceBatch(NamedTuple):
    """``N`` training sequences of ``L`` steps: tensors ``(L, N, ...)`` and the start states."""

    obs: Obs
    actions: Tensor  # (L, N)
    log_probs: Tensor  # (L, N) at collection
    values: Tensor  # (L, N) at collection
    advantages: Tensor  # (L, N)
    returns: Tensor  # (L, N)
    episode_starts: Tensor  # (L, N) bool
    state: State  # memory state before step 0 of each sequence, batch dim N

    def time_slice(self, lo: int, hi: int, state: State | None = None) -> SequenceBatch:
        """Steps ``lo:hi`` of every sequence, with ``state`` as its start state."""
        return SequenceBatch(
            tree_map(lambda x: x[lo:hi], self.obs),
            self.actions[lo:hi],
            self.log_probs[lo:hi],
            self.values[lo:hi],
            self.advantages[lo:hi],
            self.returns[lo:hi],
            self.episode_starts[lo:hi],
            self.state if state is None else state,
        )


class RolloutBuffer:
    """One rollout of ``rollout_len`` steps of ``n_envs`` envs, cut into sequences of ``bptt_len``.

    Args:
        rollout_len: steps per env (T).
        n_envs: envs (B).
        observation_space: the single-env observation space.
        bptt_len: training sequence length; must divide ``rollout_len``.
        device: where every tensor lives.
    """

    def __init__(
        self,
        rollout_len: int,
        n_envs: int,
        observation_space: gym.Space,
        bptt_len: int,
        device: torch.device | str,
    ) -> None:
        if rollout_len % bptt_len:
            raise ValueError(f"bptt_len ({bptt_len}) must divide rollout_len ({rollout_len})")
        self.rollout_len, self.n_envs, self.bptt_len = rollout_len, n_envs, bptt_len
        self.device = torch.device(device)
        lead, dev = (rollout_len, n_envs), self.device
        self.obs = _empty_obs(observation_space, lead, dev)
        self.actions = torch.zeros(lead, dtype=torch.long, device=dev)
        self.log_probs = torch.zeros(lead, device=dev)
        self.values = torch.zeros(lead, device=dev)
        self.rewards = torch.zeros(lead, device=dev)
        self.final_values = torch.zeros(lead, device=dev)  # value of the final obs on truncation
        self.episode_starts = torch.zeros(lead, dtype=torch.bool, device=dev)
        self.terminated = torch.zeros(lead, dtype=torch.bool, device=dev)
        self.truncated = torch.zeros(lead, dtype=torch.bool, device=dev)
        self.advantages = torch.zeros(lead, device=dev)
        self.returns = torch.zeros(lead, device=dev)
        self.seq_states: list[State] = []

    @property
    def n_sequences(self) -> int:
        """Training sequences per rollout (``n_envs * rollout_len / bptt_len``)."""
        return self.n_envs * (self.rollout_len // self.bptt_len)

    def reset(self) -> None:
        """Start a new rollout (the tensors are overwritten in place)."""
        self.seq_states = []
        self.final_values.zero_()

    def add(
        self,
        t: int,
        obs: Obs,
        episode_starts: Tensor,
        state: State,
        actions: Tensor,
        log_probs: Tensor,
        values: Tensor,
    ) -> None:
        """Record what the agent saw and did at step ``t`` (``state``: memory before the step)."""
        if t % self.bptt_len == 0:
            self.seq_states.append(state)

        def write(dst: Tensor, src: Tensor) -> None:
            dst[t] = src

        tree_map(write, self.obs, obs)  # matched by key, in whatever order obs has them
        self.episode_starts[t] = episode_starts
        self.actions[t] = actions
        self.log_probs[t] = log_probs
        self.values[t] = values

    def add_outcome(self, t: int, rewards: Tensor, terminated: Tensor, truncated: Tensor) -> None:
        """Record the env's answer to step ``t``."""
        self.rewards[t] = rewards
        self.terminated[t] = terminated
        self.truncated[t] = truncated

    def compute_returns(self, last_values: Tensor, gamma: float, gae_lambda: float) -> None:
        """GAE advantages and returns; ``last_values`` ``(B,)``: value after the last step."""
        self.advantages, self.returns = compute_gae(
            self.rewards, self.values, self.terminated, self.truncated, last_values,
            self.final_values, gamma=gamma, gae_lambda=gae_lambda,
        )

    def _seq(self, x: Tensor) -> Tensor:
        """(T, B, ...) -> (L, K * B, ...), sequence n = k * B + b covers steps k*L .. k*L+L-1."""
        t, b = x.shape[:2]
        k = t // self.bptt_len
        x = x.reshape(k, self.bptt_len, b, *x.shape[2:]).transpose(0, 1)
        return x.reshape(self.bptt_len, k * b, *x.shape[3:])

    def sequences(self) -> SequenceBatch:
        """Every training sequence of the rollout, batched: ``(bptt_len, n_sequences, ...)``."""
        states = stack_states(self.seq_states)  # (K, B, ...)
        flat = {k: v.reshape(v.shape[0] * v.shape[1], *v.shape[2:]) for k, v in states.items()}
        return SequenceBatch(
            tree_map(self._seq, self.obs),
            self._seq(self.actions),
            self._seq(self.log_probs),
            self._seq(self.values),
            self._seq(self.advantages),
            self._seq(self.returns),
            self._seq(self.episode_starts),
            flat,
        )

    def minibatches(
        self, n_minibatches: int, generator: torch.Generator | None = None
    ) -> Iterator[SequenceBatch]:
        """The sequences shuffled and split into ``n_minibatches`` batches of whole sequences."""
        seqs = self.sequences()
        n = self.n_sequences
        if n % n_minibatches:
            raise ValueError(
                f"n_minibatches ({n_minibatches}) must divide the number of sequences ({n})"
            )
        perm = torch.randperm(n, generator=generator).to(self.device)
        size = n // n_minibatches
        for i in range(n_minibatches):
            idx = perm[i * size : (i + 1) * size]
            yield select_sequences(seqs, idx)


def select_sequences(seqs: SequenceBatch, idx: Tensor) -> SequenceBatch:
    """The sequences ``idx`` (dim 1 of the tensors, dim 0 of the state)."""
    return SequenceBatch(
        tree_map(lambda x: x[:, idx], seqs.obs),
        seqs.actions[:, idx],
        seqs.log_probs[:, idx],
        seqs.values[:, idx],
        seqs.advantages[:, idx],
        seqs.returns[:, idx],
        seqs.episode_starts[:, idx],
        index_state(seqs.state, idx),
    )

