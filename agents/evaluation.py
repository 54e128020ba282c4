"""Evaluating a trained agent: its policy's outcomes over fresh episodes.

Episodes of different lengths end at different times, so "the first N episodes that end" in a set
of parallel envs over-represents short episodes (on the full corridor, short corridors, which are
the easy ones) and episodes that end early (on a fixed corridor, successes, which end before a
truncation). Here every env contributes a fixed quota of episodes, its first ones, whatever their
length: the N episodes are the ones fixed by the seeds, not the fastest ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .env_ids import wrappers_for
from .trainer import ActorCriticTrainer
from .validation import check_int
from .vec import EnvStepper, make_vec_env

__all__ = ["evaluate", "success_rate", "summarize"]


def _quotas(episodes: int, n_envs: int) -> np.ndarray:
    """Episodes each env contributes: ``episodes`` split as evenly as possible over the envs."""
    quota = np.full(n_envs, episodes // n_envs)
    quota[: episodes % n_envs] += 1
    return quota


@torch.no_grad()
def evaluate(
    model: ActorCriticTrainer,
    env_id: str,
    episodes: int = 200,
    *,
    n_envs: int = 50,
    seed: int = 10_000,
    deterministic: bool = True,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Outcomes of ``model``'s policy over ``episodes`` episodes of ``env_id``.

    ``min(n_envs, episodes)`` envs seeded from ``seed`` (choose seeds unseen in training) each
    play their first ``episodes / n_envs`` episodes (the remainder going to the first envs); the
    policy acts in eval mode, the most likely action when ``deterministic``.

    Returns arrays of length ``episodes`` in env-major order: ``success`` (``info["success"]``;
    0 for an episode without the flag), ``return`` and ``length`` (steps); and ``memory_size``,
    one entry per evaluation step: the memories the policy attended per layer at that step
    (``aux["memory_size"]``), averaged over the envs. ``metrics``: the task's own measures
    (:func:`agents.vec.task_metrics`, e.g. ``rooms_reached`` on the Portal), name -> an array of
    length ``episodes`` of the values the episodes' last ``info`` reported (NaN for an episode
    without it); an empty dict for envs without such measures.
    """
    check_int("episodes", episodes, ge=1)
    check_int("n_envs", n_envs, ge=1)
    check_int("seed", seed, ge=0)
    n_envs = min(n_envs, episodes)
    quota = _quotas(episodes, n_envs)
    kept: list[list[dict[str, Any]]] = [[] for _ in range(n_envs)]
    venv = make_vec_env(env_id, n_envs, vec="auto", device=model.device, env_kwargs=env_kwargs,
                        wrappers=wrappers_for(model, env_id))
    try:
        for kind in ("observation", "action"):
            want, have = getattr(model, f"{kind}_space"), getattr(venv, f"single_{kind}_space")
            if want != have:
                raise ValueError(
                    f"cannot evaluate on {env_id}: its {kind} space is {have}, the policy's "
                    f"(trained on {model.env_id}) is {want}"
                )
        stepper = EnvStepper(venv, model.device)
        stepper.reset(seed=seed)
        policy = model.policy.eval()
        state = policy.initial_state(n_envs, model.device)
        missing = int(quota.sum())
        sizes: list[torch.Tensor] = []
        while missing > 0:
            out = policy.act(stepper.obs, state, stepper.episode_starts,
                             deterministic=deterministic)
            res = stepper.step(policy.to_env_actions(out.actions))
            state = out.state
            if "memory_size" in out.aux:
                sizes.append(out.aux["memory_size"].float().reshape(()))
            for ep in res.episodes:
                i = int(ep["env"])
                if len(kept[i]) < quota[i]:
                    kept[i].append(ep)
                    missing -= 1
        names = stepper.metrics
    finally:
        venv.close()
    flat = [ep for env_eps in kept for ep in env_eps]
    return {
        "success": np.array([float(ep.get("success", 0.0)) for ep in flat]),
        "return": np.array([ep["return"] for ep in flat]),
        "length": np.array([ep["length"] for ep in flat]),
        "memory_size": torch.stack(sizes).cpu().numpy() if sizes else np.zeros(0),
        "metrics": {name: np.array([ep.get("metrics", {}).get(name, np.nan) for ep in flat])
                    for name in names},
    }


def summarize(outcomes: dict[str, Any]) -> dict[str, Any]:
    """The means of :func:`evaluate`'s outcomes: ``success``, ``return``, ``length``,
    ``memory_size`` (None when the memory reports none), ``episodes`` and ``metrics`` (name ->
    the mean of each task measure over the episodes that report it, None if none does)."""
    sizes = outcomes["memory_size"]
    return {
        "success": float(outcomes["success"].mean()),
        "return": float(outcomes["return"].mean()),
        "length": float(outcomes["length"].mean()),
        "memory_size": float(sizes.mean()) if len(sizes) else None,
        "episodes": len(outcomes["success"]),
        "metrics": {name: float(np.nanmean(v)) if np.isfinite(v).any() else None
                    for name, v in outcomes.get("metrics", {}).items()},
    }


def success_rate(
    model: ActorCriticTrainer,
    env_id: str,
    episodes: int = 200,
    *,
    n_envs: int = 50,
    seed: int = 10_000,
    deterministic: bool = True,
    env_kwargs: dict[str, Any] | None = None,
) -> float:
    """Mean success of ``model``'s policy over ``episodes`` episodes (see :func:`evaluate`)."""
    out = evaluate(model, env_id, episodes, n_envs=n_envs, seed=seed,
                   deterministic=deterministic, env_kwargs=env_kwargs)
    return float(out["success"].mean())
