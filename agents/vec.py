"""Vector environments for the agents: creation from an id, a short name or an env, and a stepper
that turns gymnasium's numpy batches into time-major torch tensors on the device.

Autoreset: we create every vector env with ``AutoresetMode.SAME_STEP``. The step that ends an
episode returns the next episode's first observation, with the last one in
``info["final_obs"]`` and the ending step's info in ``info["final_info"]``. Every step the agent
takes is then a real transition (gymnasium's default ``NEXT_STEP`` spends one step per episode on
a reset whose action is ignored, which would have to be masked out of the loss), and the final
observation is at hand for the time-limit bootstrap. A user-made vector env must use ``SAME_STEP``
too; any other mode is refused with an error saying how to create it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from torch import Tensor

from .buffer import obs_to_tensor

__all__ = ["EnvStepper", "StepResult", "env_id_of", "make_vec_env", "resolve_env"]


def resolve_env(name: str) -> str:
    """A registered gymnasium id for ``name`` (a short name such as ``corridor``, or any id)."""
    import envs  # registers our tasks

    resolver: Callable[[str], str] | None = getattr(envs, "resolve_env_id", None)
    if resolver is not None:
        try:
            return resolver(name)
        except (KeyError, ValueError):
            if name not in gym.registry:
                raise
    if name not in gym.registry:
        import difflib

        close = difflib.get_close_matches(name, list(gym.registry), n=5)
        hint = f"; did you mean: {', '.join(close)}" if close else ""
        raise ValueError(f"unknown env {name!r}{hint}")
    return name


def env_id_of(env: Any) -> str:
    """The id of an env or vector env (its spec id), or its class name."""
    spec = getattr(env, "spec", None)
    if spec is not None and getattr(spec, "id", None):
        return spec.id
    inner = getattr(env, "envs", None)
    if inner:
        return env_id_of(inner[0])
    return type(getattr(env, "unwrapped", env)).__name__


def make_vec_env(
    env: str | gym.Env | VectorEnv,
    n_envs: int,
    *,
    async_envs: bool = False,
    env_kwargs: dict[str, Any] | None = None,
) -> VectorEnv:
    """A ``SAME_STEP`` vector env of ``n_envs`` copies of ``env``.

    ``env`` is an id or short name (made with ``gymnasium.make(id, **env_kwargs)``), a single
    ``gymnasium.Env`` (copied ``n_envs`` times), or a ``VectorEnv`` (returned as is after checking
    its autoreset mode).
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if isinstance(env, VectorEnv):
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"the vector env's autoreset mode is {mode}; the agents need "
                "AutoresetMode.SAME_STEP (create it with "
                "SyncVectorEnv(fns, autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP))"
            )
        if not isinstance(env.single_action_space, gym.spaces.Discrete):
            raise ValueError(
                f"the env's action space must be Discrete, got {env.single_action_space!r}"
            )
        return env
    if isinstance(env, str):
        env_id = resolve_env(env)
        kwargs = dict(env_kwargs or {})
        fns = [_maker(env_id, kwargs) for _ in range(n_envs)]
    elif isinstance(env, gym.Env):
        fns = [_copier(env, i) for i in range(n_envs)]
    else:
        raise ValueError(
            f"env must be an env id, a gymnasium.Env or a gymnasium VectorEnv, got {type(env)}"
        )
    cls = AsyncVectorEnv if async_envs else SyncVectorEnv
    return cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)


def _maker(env_id: str, kwargs: dict[str, Any]) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        import envs  # noqa: F401  (registers our tasks inside subprocess workers too)

        return gym.make(env_id, **kwargs)

    return make


def _copier(env: gym.Env, i: int) -> Callable[[], gym.Env]:
    return (lambda: env) if i == 0 else (lambda: copy.deepcopy(env))


@dataclass
class StepResult:
    """One vector step as tensors on the device, plus what ended."""

    obs: Any  # next observations (B, ...), the next episode's first where an episode ended
    rewards: Tensor  # (B,) float32
    terminated: Tensor  # (B,) bool
    truncated: Tensor  # (B,) bool
    final_obs: Any | None  # final observations of the truncated envs (N, ...), or None
    truncated_idx: Tensor | None  # (N,) indices of those envs
    episodes: list[dict[str, float]] = field(default_factory=list)  # ended episodes' stats


class EnvStepper:
    """Steps a ``SAME_STEP`` vector env with tensor actions; tracks episode returns and lengths.

    ``episode_starts`` (B,) is true where the current observation is an episode's first.
    """

    def __init__(self, venv: VectorEnv, device: torch.device) -> None:
        self.venv = venv
        self.device = device
        self.n_envs = venv.num_envs
        self.obs: Any = None
        self.episode_starts = torch.ones(self.n_envs, dtype=torch.bool, device=device)
        self.ep_returns = np.zeros(self.n_envs)
        self.ep_lengths = np.zeros(self.n_envs, dtype=np.int64)

    def reset(self, seed: int | None = None) -> Any:
        """Reset every env (env ``i`` seeded ``seed + i``); returns the observations."""
        obs, _ = self.venv.reset(seed=seed)
        self.obs = obs_to_tensor(obs, self.device)
        self.episode_starts = torch.ones(self.n_envs, dtype=torch.bool, device=self.device)
        self.ep_returns[:] = 0
        self.ep_lengths[:] = 0
        return self.obs

    def step(self, actions: Tensor) -> StepResult:
        """Step with ``actions`` (B,) (a tensor anywhere); the one host round trip per step."""
        obs, rewards, terminated, truncated, info = self.venv.step(actions.cpu().numpy())
        done = np.logical_or(terminated, truncated)
        self.ep_returns += rewards
        self.ep_lengths += 1
        episodes = []
        final_info = info.get("final_info", {})
        for i in np.flatnonzero(done):
            ep = {"return": float(self.ep_returns[i]), "length": float(self.ep_lengths[i])}
            if "success" in final_info and final_info.get("_success", done)[i]:
                ep["success"] = float(final_info["success"][i])
            episodes.append(ep)
            self.ep_returns[i] = 0.0
            self.ep_lengths[i] = 0
        final_obs = truncated_idx = None
        if truncated.any():
            idx = np.flatnonzero(truncated)
            finals = [info["final_obs"][i] for i in idx]
            final_obs = obs_to_tensor(_stack(finals), self.device)
            truncated_idx = torch.as_tensor(idx, device=self.device)
        self.obs = obs_to_tensor(obs, self.device)
        result = StepResult(
            self.obs,
            torch.as_tensor(rewards, dtype=torch.float32, device=self.device),
            torch.as_tensor(terminated, device=self.device),
            torch.as_tensor(truncated, device=self.device),
            final_obs,
            truncated_idx,
            episodes,
        )
        self.episode_starts = torch.as_tensor(done, device=self.device)
        return result

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue exactly: observations, starts, episode stats, and
        the envs themselves when they live in this process (pickled)."""
        import pickle

        envs_blob = None
        if isinstance(self.venv, SyncVectorEnv):
            try:
                envs_blob = pickle.dumps(self.venv.envs)
            except Exception:  # an env that cannot be pickled resumes from a fresh reset
                envs_blob = None
        return {
            "obs": _cpu(self.obs),
            "episode_starts": self.episode_starts.cpu(),
            "ep_returns": self.ep_returns.copy(),
            "ep_lengths": self.ep_lengths.copy(),
            "envs": envs_blob,
        }

    def load_state_dict(self, sd: dict[str, Any]) -> bool:
        """Restore :meth:`state_dict`; returns whether the envs themselves were restored (else the
        caller must reset them)."""
        import pickle

        restored = False
        if sd.get("envs") is not None and isinstance(self.venv, SyncVectorEnv):
            envs = pickle.loads(sd["envs"])
            if len(envs) == self.n_envs:
                for e in self.venv.envs:
                    e.close()
                self.venv.envs = envs
                restored = True
        if restored:
            self.obs = obs_to_tensor(sd["obs"], self.device)
            self.episode_starts = sd["episode_starts"].to(self.device)
            self.ep_returns[:] = sd["ep_returns"]
            self.ep_lengths[:] = sd["ep_lengths"]
        return restored


def _stack(items: list[Any]) -> Any:
    if isinstance(items[0], dict):
        return {k: _stack([it[k] for it in items]) for k in items[0]}
    return np.stack(items)


def _cpu(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: _cpu(v) for k, v in obs.items()}
    return obs.cpu().numpy()
