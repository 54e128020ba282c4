"""The actor-critic trainer shared by PPO and A2C (which are configurations of it), with the
user-facing API in stable-baselines3's shape: ``learn``, ``predict``, ``save``, ``load``.

One update, top to bottom (``learn``): collect ``rollout_len`` steps of ``n_envs`` envs into the
:class:`~agents.buffer.RolloutBuffer` (acting one step at a time, memory state carried along, the
state at each training-sequence start stored), GAE, then the update (:mod:`agents.update`):
``n_epochs`` passes over minibatches of whole sequences, each back-propagated by truncated BPTT or
MRBP (:mod:`agents.mrbp`); then logging and checkpoints (:mod:`agents.run`). The coefficients
that change with the step count are in :mod:`agents.schedules`, the presets that a config starts
from in :mod:`agents.presets`.

Data-parallel (launched by ``torchrun --nproc-per-node N``; :mod:`agents.distributed`): every rank
steps its own ``n_envs`` envs (rank ``r``'s env ``i`` is seeded ``seed + r * n_envs + i``, so the
ranks see different episodes) and collects its own rollout; the ranks start from rank 0's
parameters, average their gradients before clipping and the optimizer step, and normalise
advantages over the global minibatch, so they stay identical. ``num_timesteps`` counts the steps
of all ranks. Rank 0 logs (episode statistics of all ranks) and writes the checkpoint, which also
holds every rank's env state, memory state and RNG states so that a resume under the same world
size continues exactly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv
from torch.utils._pytree import tree_map

from policies.actor_critic import ActorCritic, make_policy
from policies.memory import State, index_state

from .buffer import RolloutBuffer
from .checkpoint import checkpoint_payload, load_agent, save_checkpoint
from .config import AgentConfig, make_optimizer
from .distributed import process_device, setup
from .env_ids import built_with
from .inputs import predict_inputs
from .logger import RunLogger
from .presets import configure
from .run import NonFiniteLossError, TrainingRun
from .schedules import set_learning_rate, update_config
from .update import update_policy
from .validation import check_int
from .vec import EnvStepper, env_id_of, make_agent_env, resolve_env

__all__ = ["ActorCriticTrainer", "NonFiniteLossError"]


#: rank ``r > 0`` reseeds torch, numpy and python with ``seed + RANK_SEED_STRIDE * r`` after the
#: parameters are built (and broadcast), so the ranks sample different actions and minibatches
#: while rank 0 draws exactly what a single process would
RANK_SEED_STRIDE = 100_003


class ActorCriticTrainer:
    """Actor-critic agent with a memory policy (PPO and A2C subclass it with their presets).

    Args:
        policy: a policy name (see ``policies.available_policies()``) or an
            :class:`~policies.ActorCritic`.
        env: an env id or short name (``"corridor"``), a ``gymnasium.Env``, a ``SAME_STEP``
            ``VectorEnv``, or None (an agent that can only ``predict``; pass the spaces).
        config: the hyperparameters, used as given; without it, ``config_class()`` with the env's
            preset (:mod:`agents.presets`) and then the keyword ``overrides``, which replace
            single fields and win over the preset (``PPO("lstm", "corridor", n_envs=8)``).
        env_kwargs: arguments of ``gymnasium.make`` when ``env`` is an id.
        env_wrappers: wrappers put around each env made from ``env`` (records of
            :class:`~agents.env_ids.EnvRecipe`; a checkpoint's); None: the ones the library
            applies (:func:`~agents.env_ids.library_wrappers`, e.g. for minigrid's missions).
            How the env was built (id, arguments, wrappers) is kept in checkpoints, so that
            ``load`` can rebuild it.
        tensorboard_log: root of the run directories (``<root>/<env>__<policy>__<seed>__<time>``,
            with a ``-2``, ``-3``, ... suffix if taken), claimed by ``learn``; None writes no
            logs.
        checkpoint_path: where checkpoints go (default ``<run dir>/checkpoint.pt``; None with no
            ``tensorboard_log`` writes none). ``learn`` locks the run directory and checkpoint:
            a second process writing either is refused (:class:`~agents.rundir.RunLockedError`).
        observation_space, action_space: the spaces when ``env`` is None.
        distributed: data-parallel over the ranks of a ``torchrun`` launch (None: when launched
            with ``WORLD_SIZE`` > 1 or a process group is initialised; False: this process
            alone). ``n_envs`` is per rank; logs and checkpoints are rank 0's.
    """

    config_class: type[AgentConfig] = AgentConfig
    algo_name = "ActorCritic"

    def __init__(
        self,
        policy: str | ActorCritic,
        env: str | gym.Env | VectorEnv | None,
        config: AgentConfig | None = None,
        *,
        env_kwargs: dict[str, Any] | None = None,
        env_wrappers: tuple[dict[str, Any], ...] | None = None,
        tensorboard_log: str | Path | None = "runs",
        checkpoint_path: str | Path | None = None,
        observation_space: gym.Space | None = None,
        action_space: gym.Space | None = None,
        distributed: bool | None = None,
        **overrides: Any,
    ) -> None:
        env_id = resolve_env(env) if isinstance(env, str) else (
            env_id_of(env) if env is not None else "")
        n_envs = env.num_envs if isinstance(env, VectorEnv) else None
        self.config = cfg = configure(self.config_class, config, overrides, env_id,
                                      self.algo_name.lower(), _policy_name(policy), n_envs)
        self.dist = setup(cfg.device, enabled=distributed)
        self.device = process_device(cfg.device, self.dist)
        _seed_everything(cfg.seed)

        if env_kwargs is not None and not isinstance(env_kwargs, dict):
            raise ValueError(f"env_kwargs must be a dict, got {env_kwargs!r}")
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})
        self.env, self.observation_space, self.action_space = make_agent_env(
            env, cfg.n_envs, cfg.vec, self.env_kwargs, self.device, observation_space,
            action_space, wrappers=env_wrappers)
        # how the env was built, for a checkpoint to rebuild it (agents.env_ids)
        self.env_wrappers: tuple[dict[str, Any], ...] = ()
        self.env_rebuild_error: str | None = None
        if env is not None and self.env is not None:
            build = built_with(env, self.env, env_id, self.env_kwargs)
            if isinstance(build, str):
                self.env_rebuild_error = build
            else:
                self.env_id, self.env_kwargs, self.env_wrappers = (
                    build.id, build.kwargs, build.wrappers)

        self._policy_by_name = not isinstance(policy, ActorCritic)
        self.policy_name = _policy_name(policy)
        self.policy = policy if isinstance(policy, ActorCritic) else make_policy(
            policy, self.observation_space, self.action_space, **dict(cfg.policy_kwargs)
        )
        self.policy.to(self.device)
        self.dist.broadcast_module(self.policy)
        if self.dist.rank > 0:
            _seed_everything(cfg.seed + RANK_SEED_STRIDE * self.dist.rank)
        # parameter groups with their own learning-rate multiples (lr_scale) and options
        groups = [dict(g, lr=cfg.lr * g["lr_scale"]) for g in self.policy.param_groups()]
        self.optimizer = make_optimizer(cfg.optimizer, groups, cfg.lr, eps=cfg.optimizer_eps)

        self.num_timesteps = self.n_updates = self.nonfinite_in_a_row = 0
        self.total_timesteps: int | None = None  # of the last learn() (kept in checkpoints)
        self.stepper = EnvStepper(self.env, self.device) if self.env is not None else None
        self.memory_state: State | None = None
        # the run directory is claimed by learn() (rank 0's, on every rank), checkpoints go to
        # checkpoint_path or <run directory>/checkpoint.pt
        self.tensorboard_log = tensorboard_log
        self.log_dir: Path | None = None
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self._checkpoint_given = checkpoint_path is not None
        self._claimed_log_dir = False
        self.last_stats: dict[str, float] = {}
        self.run_logger: RunLogger | None = None
        """The logger of the ``learn`` call in progress (None outside one): callbacks log
        through it."""
        self.last_success_rate: float | None = None

    # acting

    def predict(
        self,
        obs: Any,
        state: State | None = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, State]:
        """Actions for a batch of observations (or one), and the memory state after them.

        Args:
            obs: observations ``(B, *obs_shape)`` or one ``obs_shape`` observation.
            state: the state returned by the previous call (None: fresh episodes).
            episode_start: ``(B,)`` bool, true where ``obs`` starts an episode (default: true
                when ``state`` is None, else false).
            deterministic: the most likely action instead of a sample.
        """
        self.policy.eval()
        inp = predict_inputs(self.policy, self.observation_space, obs, state, episode_start,
                             self.device)
        out = self.policy.act(inp.obs, inp.state, inp.episode_starts, deterministic=deterministic)
        actions = self.policy.to_env_actions(out.actions).cpu().numpy()
        return (actions if inp.batched else actions[0]), out.state

    # training

    def learn(
        self,
        total_timesteps: int,
        progress_bar: bool = True,
        callback: Callable[[ActorCriticTrainer], bool | None] | None = None,
        reset_num_timesteps: bool = True,
    ) -> ActorCriticTrainer:
        """Train until ``num_timesteps >= total_timesteps``.

        ``total_timesteps`` counts from the start of the run: a loaded checkpoint continues with
        ``reset_num_timesteps=False`` and stops where the uninterrupted run would.
        ``callback(self)`` runs after every update (and its checkpoint); returning False stops
        training (under several ranks: on every rank, when it returns False on any).

        SIGINT (Ctrl-C) or SIGTERM lets the current update finish, writes the checkpoint and
        raises :class:`~agents.run.TrainingInterrupted` (its message names the step and the
        checkpoint); a second Ctrl-C stops at once (``KeyboardInterrupt``), without one. Raises
        :class:`~agents.run.NonFiniteLossError` after ``max_nonfinite`` skipped updates in a row,
        and :class:`~agents.checkpoint.CheckpointError` when a checkpoint cannot be written.
        """
        if self.env is None or self.stepper is None:
            raise ValueError("this agent has no env: pass env= to the constructor or to load()")
        check_int("total_timesteps", total_timesteps, ge=1)
        cfg = self.config
        self._start(reset_num_timesteps)
        buffer = RolloutBuffer(
            cfg.rollout_len, cfg.n_envs, self.observation_space, cfg.bptt_len, self.device
        )
        with TrainingRun(self, total_timesteps, progress_bar, reset_num_timesteps) as run:
            while self.num_timesteps < total_timesteps:
                set_learning_rate(self.optimizer, cfg, self.num_timesteps, total_timesteps)
                t_rollout = time.perf_counter()
                episodes, rollout_aux = self._collect(buffer)
                t_update = time.perf_counter()
                stats = self._update(buffer)
                self.num_timesteps += cfg.rollout_len * cfg.n_envs * self.dist.world_size
                self.n_updates += 1
                run.record(stats, rollout_aux, episodes, t_rollout, t_update)
                if run.end_update(callback):
                    break
            run.checkpoint()
        return self

    def _start(self, reset_num_timesteps: bool) -> None:
        """Reset the counters (a new run) and the envs and memory (a new run, or envs that were
        not restored from a checkpoint); rank ``r``'s env ``i`` is seeded
        ``seed + num_timesteps + r * n_envs + i``."""
        assert self.stepper is not None
        if reset_num_timesteps or self.stepper.obs is None:
            if reset_num_timesteps:
                self.num_timesteps, self.n_updates = 0, 0
            cfg = self.config
            self.stepper.reset(seed=cfg.seed + self.num_timesteps + self.dist.rank * cfg.n_envs)
            self.memory_state = self.policy.initial_state(cfg.n_envs, self.device)

    @torch.no_grad()
    def _collect(self, buffer: RolloutBuffer) -> tuple[list[dict[str, float]], dict[str, float]]:
        """Fill ``buffer`` with one rollout; returns the ended episodes and memory diagnostics."""
        cfg, policy, stepper = self.config, self.policy, self.stepper
        assert stepper is not None and self.memory_state is not None
        policy.eval()  # act as deployed (no dropout, no random memory shortening)
        buffer.reset()
        state = self.memory_state
        episodes: list[dict[str, float]] = []
        aux_sums: dict[str, torch.Tensor] = {}
        for t in range(cfg.rollout_len):
            obs, starts = stepper.obs, stepper.episode_starts
            out = policy.act(obs, state, starts)
            buffer.add(t, obs, starts, state, out.actions, out.log_probs, out.values)
            res = stepper.step(policy.to_env_actions(out.actions))
            buffer.add_outcome(t, res.rewards, res.terminated, res.truncated)
            if res.final_obs is not None:
                # time-limit bootstrap: value of the final observation, from the memory that saw
                # the truncated episode (SAME_STEP autoreset: the next obs is already a reset)
                sub = index_state(out.state, res.truncated_idx)
                n = res.truncated_idx.shape[0]
                no_start = torch.zeros(n, dtype=torch.bool, device=self.device)
                buffer.final_values[t, res.truncated_idx] = policy.act(
                    res.final_obs, sub, no_start).values
            state = out.state
            episodes.extend(res.episodes)
            for k, v in out.aux.items():
                if not k.startswith("loss_") and v.numel() > 0:
                    aux_sums[k] = aux_sums.get(k, 0) + v.float().mean()
        self.memory_state = state
        x = tree_map(lambda v: v.unsqueeze(0), stepper.obs)
        _, last_values, _, _ = policy(x, state, stepper.episode_starts.view(1, -1))
        buffer.compute_returns(last_values[0], cfg.gamma, cfg.gae_lambda)
        aux = {f"memory/{k}": float(v) / cfg.rollout_len for k, v in aux_sums.items()}
        aux["charts/return_scale"] = float(buffer.returns.abs().max())  # the divergence guard's
        return episodes, aux

    def _update(self, buffer: RolloutBuffer) -> dict[str, float] | None:
        """The update on ``buffer`` with this step's coefficients (:func:`update_policy`); None
        when it was skipped for a non-finite gradient."""
        cfg = update_config(self.config, self.num_timesteps)
        return update_policy(self.policy, self.optimizer, self.dist, buffer, cfg)

    # checkpoints

    def checkpoint_payload(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly (:mod:`agents.checkpoint`)."""
        return checkpoint_payload(self)

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint (atomically) to ``path``: this process's view, no communication
        (under several ranks call it on rank 0; ``learn``'s own checkpoints hold every rank)."""
        return save_checkpoint(path, checkpoint_payload(self))

    @classmethod
    def load(
        cls,
        path: str | Path,
        env: str | gym.Env | VectorEnv | None = None,
        device: str = "auto",
        distributed: bool | None = None,
        **overrides: Any,
    ) -> ActorCriticTrainer:
        """An agent from a checkpoint, ready to ``predict`` or to continue ``learn``.

        With ``env=None`` the run's own envs are rebuilt (restored exactly when they were
        in-process and picklable, so ``learn(total, reset_num_timesteps=False)`` continues the run
        as if it had not stopped); if they cannot be rebuilt the agent can only predict.
        ``overrides`` replace config fields. Under several ranks (``distributed``, as in the
        constructor) every rank loads the same file, with the world-size rules of
        :mod:`agents.checkpoint`.
        """
        return load_agent(cls, path, env=env, device=device, distributed=distributed,
                          overrides=overrides)


# helpers


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _policy_name(policy: str | ActorCritic) -> str:
    if isinstance(policy, ActorCritic):
        return policy.memory.name or type(policy.memory).__name__
    return policy
