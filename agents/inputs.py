"""What ``predict`` is given, checked at the door against the policy's observation space and
state spec, and put in the batched form the policy takes. A wrong shape is refused with one line
naming what was given and what fits, instead of a shape error deep inside torch (a transposed
observation can otherwise even return an action)."""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from policies.actor_critic import ActorCritic
from policies.memory import State

from .buffer import Obs, obs_to_tensor

__all__ = ["PredictInputs", "predict_inputs"]


class PredictInputs(NamedTuple):
    obs: Obs  # (B, *obs_shape) tensors on the device
    state: State  # batch B
    episode_starts: Tensor  # (B,) bool
    batched: bool  # whether the caller gave a batch (else one observation)


def predict_inputs(
    policy: ActorCritic,
    space: gym.Space,
    obs: Any,
    state: State | None,
    episode_start: Any,
    device: torch.device,
) -> PredictInputs:
    """Check ``predict``'s arguments and batch them (see :meth:`ActorCriticTrainer.predict`)."""
    n = _batch_of(obs, space, "obs")
    batched = n is not None
    t_obs = obs_to_tensor(obs, device)
    if not batched:
        t_obs = tree_map(lambda x: x.unsqueeze(0), t_obs)
    n = n or 1
    if state is None:
        state = policy.initial_state(n, device)
        starts = torch.ones(n, dtype=torch.bool, device=device)
    else:
        _check_state(policy, state, n)
        if episode_start is None:
            starts = torch.zeros(n, dtype=torch.bool, device=device)
        else:
            flags = np.asarray(episode_start)
            if flags.size != n:
                raise ValueError(
                    f"predict: episode_start has shape {flags.shape}, expected ({n},): one flag "
                    "per observation"
                )
            starts = torch.as_tensor(flags, device=device).bool().reshape(n)
    return PredictInputs(t_obs, state, starts, batched)


def _batch_of(obs: Any, space: gym.Space, name: str) -> int | None:
    """The batch size of ``obs`` for ``space``, None for one observation; ValueError when its
    shape fits neither."""
    if isinstance(space, gym.spaces.Dict):
        if not isinstance(obs, dict) or set(obs) != set(space.spaces):
            got = sorted(obs) if isinstance(obs, dict) else type(obs).__name__
            hint = ""
            if isinstance(obs, dict) and "mission" in set(obs) - set(space.spaces):
                hint = ("; the agent's env drops minigrid's constant mission: make the env as "
                        "the agent does, agents.make_env(model.env_id, model.env_kwargs, "
                        "model.env_wrappers)")
            raise ValueError(
                f"predict: {name} must be a dict with the keys {sorted(space.spaces)}, got "
                f"{got}{hint}"
            )
        sizes = {k: _batch_of(obs[k], s, f"{name}[{k!r}]") for k, s in space.spaces.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"predict: the entries of {name} disagree on the batch: {sizes}")
        return next(iter(sizes.values()))
    shape, want = tuple(np.shape(obs)), tuple(space.shape or ())
    if shape == want:
        return None
    if len(shape) == len(want) + 1 and shape[1:] == want and shape[0] >= 1:
        return shape[0]
    raise ValueError(
        f"predict: {name} has shape {shape}; the observation space {space} takes {want} (one "
        f"observation) or (B, {', '.join(map(str, want))}) (a batch)".replace(", )", ")")
    )


def _check_state(policy: ActorCritic, state: Any, n: int) -> None:
    """``state`` must be a state of ``policy``'s memory for ``n`` envs (keys, dtypes, ranks and
    batch size of its state spec; sizes that grow, such as caches, may differ)."""
    spec = policy.memory.state_spec()
    if not isinstance(state, dict) or set(state) != set(spec):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"predict: state must be the dict predict returned (keys {sorted(spec)}), got {got}; "
            "pass None to start fresh episodes"
        )
    for key, (shape, dtype) in spec.items():
        value = state[key]
        if not isinstance(value, Tensor) or value.dtype != dtype or value.dim() != len(shape) + 1:
            got = (f"{tuple(value.shape)} {value.dtype}" if isinstance(value, Tensor)
                   else type(value).__name__)
            raise ValueError(
                f"predict: state[{key!r}] is {got}, not a (batch, {len(shape)} dims) {dtype} "
                "tensor of this policy's memory"
            )
        if value.shape[0] != n:
            raise ValueError(
                f"predict: state[{key!r}] holds {value.shape[0]} envs but {n} observation(s) were "
                "given; pass the state returned with these envs' previous observations"
            )
