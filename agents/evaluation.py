"""Evaluating a trained agent: the success rate of its policy over fresh episodes."""

from __future__ import annotations

import numpy as np
import torch

from .trainer import ActorCriticTrainer
from .vec import EnvStepper, make_vec_env

__all__ = ["success_rate"]


@torch.no_grad()
def success_rate(
    model: ActorCriticTrainer,
    env_id: str,
    episodes: int = 200,
    *,
    n_envs: int = 50,
    seed: int = 10_000,
    deterministic: bool = True,
) -> float:
    """Mean ``info["success"]`` of ``model``'s policy over the first ``episodes`` episodes that end
    in ``n_envs`` envs of ``env_id`` seeded from ``seed`` (choose seeds unseen in training).

    The policy acts in eval mode, the most likely action when ``deterministic``; an episode without
    a success flag counts as a failure.
    """
    if episodes < 1 or n_envs < 1:
        raise ValueError(f"episodes and n_envs must be >= 1, got {episodes} and {n_envs}")
    venv = make_vec_env(env_id, n_envs, vec="auto", device=model.device)
    try:
        stepper = EnvStepper(venv, model.device)
        stepper.reset(seed=seed)
        policy = model.policy.eval()
        state = policy.initial_state(n_envs, model.device)
        successes: list[float] = []
        while len(successes) < episodes:
            out = policy.act(stepper.obs, state, stepper.episode_starts,
                             deterministic=deterministic)
            res = stepper.step(policy.to_env_actions(out.actions))
            state = out.state
            successes += [float(e.get("success", 0.0)) for e in res.episodes]
    finally:
        venv.close()
    return float(np.mean(successes[:episodes]))
