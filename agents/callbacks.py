"""Callbacks for ``learn(callback=...)``: periodic evaluation on fresh episodes, and a stop when
the policy is good enough (stable-baselines3's ``EvalCallback`` with
``StopTrainingOnRewardThreshold``, for success rates).

    model = PPO("expire_span", "MemoRL/Corridor-v0")
    model.learn(3_000_000, callback=EvalCallback(every_steps=196_608, episodes=1000,
                                                 stop_at_success=0.95))

Each evaluation is logged under ``eval/`` (TensorBoard, at the training step) and kept in
:attr:`EvalCallback.history` with the training wall time spent so far, evaluations excluded: the
time a run needs to reach a success level.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .evaluation import evaluate
from .validation import check_int

if TYPE_CHECKING:
    from .trainer import ActorCriticTrainer

__all__ = ["EvalCallback"]


@dataclass
class EvalCallback:
    """Evaluates the policy every ``every_steps`` env steps on ``episodes`` fresh episodes.

    The episodes are those of :func:`~agents.evaluation.evaluate` (envs seeded from ``seed``, by
    default unseen in training), acting deterministically unless ``deterministic=False``; the
    env is the training env's id and kwargs unless ``env_id`` is given. Training's random state
    and the policy's train/eval mode are restored after each evaluation, so a run with this
    callback trains as it would without it. With ``stop_at_success``, training stops after the
    first evaluation whose success rate reaches it (``learn`` returns; the final checkpoint is
    written as at any end).
    """

    every_steps: int
    episodes: int = 200
    stop_at_success: float | None = None
    deterministic: bool = True
    seed: int = 10_000
    n_envs: int = 50
    env_id: str | None = None
    verbose: bool = True
    history: list[dict[str, Any]] = field(default_factory=list)
    """One entry per evaluation: ``step``, ``success``, ``return``, ``length``, ``memory_size``
    (means), ``train_wall_s`` (seconds since the callback's first call, evaluations
    excluded) and ``eval_s``."""

    def __post_init__(self) -> None:
        check_int("every_steps", self.every_steps, ge=1)
        check_int("episodes", self.episodes, ge=1)
        if self.stop_at_success is not None and not 0.0 <= self.stop_at_success <= 1.0:
            raise ValueError(f"stop_at_success must lie in [0, 1], got {self.stop_at_success!r}")
        self._next: int | None = None
        self._t0: float | None = None
        self.eval_s = 0.0
        """Seconds spent evaluating so far."""

    @property
    def solved_at(self) -> dict[str, Any] | None:
        """The first evaluation that reached ``stop_at_success`` (None: none did)."""
        if self.stop_at_success is None:
            return None
        return next((h for h in self.history if h["success"] >= self.stop_at_success), None)

    def __call__(self, agent: ActorCriticTrainer) -> bool:
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now - agent.last_stats.get("time/rollout_s", 0.0) - agent.last_stats.get(
                "time/update_s", 0.0)
            self._next = (agent.num_timesteps // self.every_steps + 1) * self.every_steps
            if agent.num_timesteps < self.every_steps:
                self._next = self.every_steps
        assert self._next is not None
        if agent.num_timesteps < self._next:
            return True
        self._next = (agent.num_timesteps // self.every_steps + 1) * self.every_steps
        entry = self._evaluate(agent, now)
        self.history.append(entry)
        logger = getattr(agent, "run_logger", None)
        if logger is not None:
            logger.scalars({f"eval/{k}": float(entry[k])
                            for k in ("success", "return", "length", "memory_size")},
                           agent.num_timesteps)
            if self.verbose and agent.dist.is_main:
                logger.message(
                    f"eval at {agent.num_timesteps:,} steps: success {entry['success']:.3f} over "
                    f"{self.episodes} episodes, return {entry['return']:.3f} "
                    f"({entry['train_wall_s']:.0f} s of training)")
        done = self.stop_at_success is not None and entry["success"] >= self.stop_at_success
        return not done

    def _evaluate(self, agent: ActorCriticTrainer, now: float) -> dict[str, Any]:
        assert self._t0 is not None
        train_wall = now - self._t0 - self.eval_s
        t0 = time.perf_counter()
        was_training = agent.policy.training
        env_id = self.env_id or agent.env_id
        kwargs = None if self.env_id is not None else getattr(agent, "env_kwargs", None)
        devices = [agent.device] if agent.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            ev = evaluate(agent, env_id, self.episodes, n_envs=self.n_envs, seed=self.seed,
                          deterministic=self.deterministic, env_kwargs=kwargs)
        agent.policy.train(was_training)
        spent = time.perf_counter() - t0
        self.eval_s += spent
        return {
            "step": agent.num_timesteps,
            "success": float(ev["success"].mean()),
            "return": float(ev["return"].mean()),
            "length": float(ev["length"].mean()),
            "memory_size": float(ev["memory_size"].mean()) if ev["memory_size"].size else 0.0,
            "train_wall_s": train_wall,
            "eval_s": spent,
        }
