"""The actor-critic trainer shared by PPO and A2C (which are configurations of it), with the
user-facing API in stable-baselines3's shape: ``learn``, ``predict``, ``save``, ``load``.

One update, top to bottom: collect ``rollout_len`` steps of ``n_envs`` envs into the
:class:`~agents.buffer.RolloutBuffer` (acting one step at a time, memory state carried along, the
state at each training-sequence start stored), GAE, then ``n_epochs`` passes over minibatches of
whole sequences, each back-propagated by truncated BPTT or MRBP (:mod:`agents.mrbp`).

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

import dataclasses
import math
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv

from policies.actor_critic import ActorCritic, make_policy
from policies.memory import State, index_state

from .buffer import RolloutBuffer, obs_to_tensor
from .checkpoint import (
    CheckpointError,
    get_rng_states,
    load_checkpoint,
    save_checkpoint,
    set_rng_states,
)
from .config import AgentConfig
from .distributed import Distributed, average_dicts, setup
from .logger import RunLogger, run_name
from .loss import make_loss_fn
from .mrbp import bptt_backward, mrbp_backward
from .vec import EnvStepper, env_id_of, make_vec_env

__all__ = ["ActorCriticTrainer", "NonFiniteLossError", "resolve_device"]


class NonFiniteLossError(RuntimeError):
    """Raised after ``max_nonfinite`` updates in a row with a non-finite loss or gradient."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda:N`` must exist."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {str(device)!r}: index must be < {torch.cuda.device_count()} "
                "(the number of CUDA devices)"
            )
    elif dev.type != "cpu":
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {str(device)!r}")
    return dev


#: rank ``r > 0`` reseeds torch, numpy and python with ``seed + RANK_SEED_STRIDE * r`` after the
#: parameters are built (and broadcast), so the ranks sample different actions and minibatches
#: while rank 0 draws exactly what a single process would
RANK_SEED_STRIDE = 100_003


def _agent_device(device: str, ctx: Distributed) -> torch.device:
    """The device of this process: the rank's device under several ranks, else ``device``."""
    return resolve_device(ctx.device if ctx.enabled and ctx.device is not None else device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ActorCriticTrainer:
    """Actor-critic agent with a memory policy (PPO and A2C subclass it with their presets).

    Args:
        policy: a policy name (see ``policies.available_policies()``) or an
            :class:`~policies.ActorCritic`.
        env: an env id or short name (``"corridor"``), a ``gymnasium.Env``, a ``SAME_STEP``
            ``VectorEnv``, or None (an agent that can only ``predict``; pass the spaces).
        config: the hyperparameters (default: ``config_class()``); keyword ``overrides`` replace
            single fields (``PPO("lstm", "corridor", n_envs=8)``).
        env_kwargs: arguments of ``gymnasium.make`` when ``env`` is an id.
        tensorboard_log: root of the run directories (``<root>/<env>__<policy>__<seed>__<time>``);
            None writes no logs.
        checkpoint_path: where checkpoints go (default ``<run dir>/checkpoint.pt``; None with no
            ``tensorboard_log`` writes none).
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
        tensorboard_log: str | Path | None = "runs",
        checkpoint_path: str | Path | None = None,
        observation_space: gym.Space | None = None,
        action_space: gym.Space | None = None,
        distributed: bool | None = None,
        **overrides: Any,
    ) -> None:
        cfg = config if config is not None else self.config_class()
        fields = {f.name for f in dataclasses.fields(cfg)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; allowed: {', '.join(sorted(fields))}")
        cfg = dataclasses.replace(cfg, **overrides)
        if isinstance(env, VectorEnv):
            cfg = dataclasses.replace(cfg, n_envs=env.num_envs)
        self.config = cfg.validate()
        self.dist = setup(cfg.device, enabled=distributed)
        self.device = _agent_device(cfg.device, self.dist)
        _seed_everything(cfg.seed)

        self.env_kwargs = dict(env_kwargs or {})
        self.env: VectorEnv | None = None
        self.env_id = env if isinstance(env, str) else (env_id_of(env) if env is not None else "")
        if env is not None:
            self.env = make_vec_env(
                env, cfg.n_envs, vec=cfg.vec, async_envs=cfg.async_envs,
                env_kwargs=self.env_kwargs, device=self.device,
            )
            self.env_id = env_id_of(self.env) if not isinstance(env, str) else env
            observation_space = self.env.single_observation_space
            action_space = self.env.single_action_space
        if observation_space is None or action_space is None:
            raise ValueError("without an env, pass observation_space and action_space")
        self.observation_space, self.action_space = observation_space, action_space

        if isinstance(policy, ActorCritic):
            self.policy_name = policy.memory.name or type(policy.memory).__name__
            self.policy = policy
            self._policy_by_name = False
        else:
            self.policy_name = policy
            self.policy = make_policy(
                policy, observation_space, action_space, **dict(cfg.policy_kwargs)
            )
            self._policy_by_name = True
        self.policy.to(self.device)
        self.dist.broadcast_module(self.policy)
        if self.dist.rank > 0:
            _seed_everything(cfg.seed + RANK_SEED_STRIDE * self.dist.rank)
        params = [
            dict(g, lr=cfg.lr * g["lr_scale"]) for g in self.policy.param_groups() if g["params"]
        ]
        if cfg.optimizer == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=cfg.lr, eps=1e-5)
        else:
            self.optimizer = torch.optim.RMSprop(params, lr=cfg.lr, alpha=0.99, eps=1e-5)

        self.num_timesteps = 0
        self.n_updates = 0
        self.nonfinite_in_a_row = 0
        self.stepper = EnvStepper(self.env, self.device) if self.env is not None else None
        self.memory_state: State | None = None
        self.tensorboard_log = tensorboard_log
        self.log_dir: Path | None = None
        if tensorboard_log is not None:
            # rank 0's name on every rank (the time stamp may differ)
            name = run_name(str(self.env_id), self.policy_name, cfg.seed)
            self.log_dir = Path(tensorboard_log) / self.dist.broadcast_object(name)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else (
            self.log_dir / "checkpoint.pt" if self.log_dir is not None else None
        )
        self.last_stats: dict[str, float] = {}
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
        batched = _is_batched(obs, self.observation_space)
        t_obs = obs_to_tensor(obs, self.device)
        if not batched:
            t_obs = _unsqueeze(t_obs)
        n = _batch_size(t_obs)
        if state is None:
            state = self.policy.initial_state(n, self.device)
            starts = torch.ones(n, dtype=torch.bool, device=self.device)
        elif episode_start is None:
            starts = torch.zeros(n, dtype=torch.bool, device=self.device)
        else:
            starts = torch.as_tensor(np.asarray(episode_start), device=self.device).bool()
            starts = starts.reshape(n)
        out = self.policy.act(t_obs, state, starts, deterministic=deterministic)
        actions = self.policy.to_env_actions(out.actions).cpu().numpy()
        return (actions if batched else actions[0]), out.state

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
        """
        if self.env is None or self.stepper is None:
            raise ValueError("this agent has no env: pass env= to the constructor or to load()")
        if total_timesteps < 1:
            raise ValueError(f"total_timesteps must be >= 1, got {total_timesteps}")
        cfg = self.config
        if reset_num_timesteps or self.stepper.obs is None:
            if reset_num_timesteps:
                self.num_timesteps, self.n_updates = 0, 0
            self.stepper.reset(seed=cfg.seed + self.num_timesteps + self.dist.rank * cfg.n_envs)
            self.memory_state = self.policy.initial_state(cfg.n_envs, self.device)
        buffer = RolloutBuffer(
            cfg.rollout_len, cfg.n_envs, self.observation_space, cfg.bptt_len, self.device
        )
        main = self.dist.is_main
        logger = RunLogger(
            self.log_dir if main else None, total_timesteps, self.num_timesteps,
            progress_bar=progress_bar and main, log_every=cfg.log_every if main else 0,
        )
        steps_per_update = cfg.rollout_len * cfg.n_envs * self.dist.world_size
        try:
            while self.num_timesteps < total_timesteps:
                if cfg.anneal_lr:
                    frac = max(0.0, 1.0 - self.num_timesteps / total_timesteps)
                    for g in self.optimizer.param_groups:
                        g["lr"] = cfg.lr * frac * g.get("lr_scale", 1.0)
                t0 = time.perf_counter()
                episodes, rollout_aux = self._collect(buffer)
                t1 = time.perf_counter()
                stats = self._update(buffer)
                self.num_timesteps += steps_per_update
                self.n_updates += 1
                if stats is None:  # agreed by all ranks (their averaged gradient is non-finite)
                    self.nonfinite_in_a_row += 1
                    if main:
                        logger.message(
                            f"update {self.n_updates}: non-finite loss or gradient, update "
                            f"skipped ({self.nonfinite_in_a_row} in a row)"
                        )
                    logger.scalars({"losses/nonfinite_skipped": 1.0}, self.num_timesteps)
                    if self.nonfinite_in_a_row >= cfg.max_nonfinite:
                        where = (
                            f"; the last good checkpoint is {self.checkpoint_path}"
                            if self.checkpoint_path and self.checkpoint_path.exists() else ""
                        )
                        raise NonFiniteLossError(
                            f"{self.nonfinite_in_a_row} updates in a row had a non-finite loss "
                            f"or gradient (max_nonfinite={cfg.max_nonfinite}); stopping{where}. "
                            "Try a lower lr or max_grad_norm."
                        )
                    stats = {}
                else:
                    self.nonfinite_in_a_row = 0
                scalars = dict(stats)
                scalars.update(rollout_aux)
                if self.dist.enabled:  # every rank's episodes; losses and memory stats averaged
                    gathered = self.dist.all_gather_object((episodes, scalars))
                    episodes = [e for eps, _ in gathered for e in eps]
                    scalars = average_dicts([sc for _, sc in gathered])
                # coefficients the memory adapts (a memory budget), from the all-rank means
                diagnostics = {k[len("memory/"):]: v for k, v in scalars.items()
                               if k.startswith("memory/")}
                adapted = self.policy.memory.after_rollout(diagnostics)
                scalars.update({f"memory/{k}": v for k, v in adapted.items()})
                scalars.update(_episode_scalars(episodes))
                scalars["time/fps"] = logger.fps(self.num_timesteps)
                scalars["time/rollout_s"] = t1 - t0
                scalars["time/update_s"] = time.perf_counter() - t1
                scalars["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
                logger.scalars(scalars, self.num_timesteps)
                logger.progress(self.num_timesteps, self.n_updates, scalars)
                self.last_stats = scalars
                if "charts/success_rate" in scalars:
                    self.last_success_rate = scalars["charts/success_rate"]
                if (
                    cfg.checkpoint_every
                    and self.n_updates % cfg.checkpoint_every == 0
                    and self.nonfinite_in_a_row == 0
                    and self.checkpoint_path is not None
                ):
                    self._write_checkpoint(self.checkpoint_path)
                stop = callback is not None and callback(self) is False
                if self.dist.any(stop):
                    break
            if self.checkpoint_path is not None and self.nonfinite_in_a_row == 0:
                self._write_checkpoint(self.checkpoint_path)
        finally:
            logger.close()
        return self

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
                fin = policy.act(res.final_obs, sub, no_start)
                buffer.final_values[t, res.truncated_idx] = fin.values
            state = out.state
            episodes.extend(res.episodes)
            for k, v in out.aux.items():
                if not k.startswith("loss_") and v.numel() > 0:
                    aux_sums[k] = aux_sums.get(k, 0) + v.float().mean()
        self.memory_state = state
        x = _unsqueeze(stepper.obs)
        _, last_values, _, _ = policy(x, state, stepper.episode_starts.view(1, -1))
        buffer.compute_returns(last_values[0], cfg.gamma, cfg.gae_lambda)
        aux = {f"memory/{k}": float(v) / cfg.rollout_len for k, v in aux_sums.items()}
        return episodes, aux

    def _update(self, buffer: RolloutBuffer) -> dict[str, float] | None:
        """The epochs over minibatches; None when a gradient was non-finite (update skipped)."""
        cfg, policy = self.config, self.policy
        # the same function that acted (eval mode) unless train-mode updates are asked for
        policy.train(cfg.update_train_mode)
        if self.num_timesteps < cfg.ent_start_step:  # the entropy bonus is not on yet
            cfg = dataclasses.replace(cfg, ent_coef=0.0)
        if self.num_timesteps < cfg.aux_start_step:  # nor the memory auxiliary losses
            cfg = dataclasses.replace(cfg, aux_coef=0.0)
        loss_fn = make_loss_fn(policy, cfg)
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
        totals: dict[str, torch.Tensor] = {}
        n_steps = 0
        snapshot = None
        for _ in range(cfg.n_epochs):
            epoch_kl = []
            for mb in buffer.minibatches(cfg.n_minibatches):
                if cfg.norm_adv and mb.advantages.numel() * self.dist.world_size > 1:
                    # over the global minibatch: this rank's and the other ranks' sequences
                    adv = self.dist.normalize_advantages(mb.advantages, cfg.adv_std_floor)
                    mb = mb._replace(advantages=adv)
                self.optimizer.zero_grad(set_to_none=True)
                if cfg.mrbp:
                    stats = mrbp_backward(policy, mb, loss_fn, cfg.mrbp_chunk_len)
                else:
                    stats = bptt_backward(policy, mb, loss_fn)
                self.dist.average_gradients(policy.parameters())
                norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_norm)
                if not bool(torch.isfinite(norm)):  # one host read per minibatch
                    self.optimizer.zero_grad(set_to_none=True)
                    if snapshot is not None:  # undo this update's earlier minibatches
                        policy.load_state_dict(snapshot[0])
                        self.optimizer.load_state_dict(snapshot[1])
                    return None
                if snapshot is None:
                    snapshot = (_clone(policy.state_dict()), _clone(self.optimizer.state_dict()))
                self.optimizer.step()
                stats["losses/grad_norm"] = norm.detach()
                for k, v in stats.items():
                    totals[k] = totals.get(k, 0) + v
                n_steps += 1
                epoch_kl.append(stats["losses/approx_kl"])
            if cfg.target_kl is not None:
                kl = self.dist.mean(torch.stack(epoch_kl).mean())  # the same on every rank
                if float(kl) > cfg.target_kl:
                    break
        keys = list(totals)
        values = torch.stack([totals[k].float() for k in keys]).div(n_steps).tolist()
        return dict(zip(keys, values, strict=True))

    # checkpoints

    def checkpoint_payload(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly."""
        payload: dict[str, Any] = {
            "algo": self.algo_name,
            "config": dataclasses.asdict(self.config),
            "policy": {
                "name": self.policy_name,
                "module": None if self._policy_by_name else self.policy,
            },
            "spaces": {"observation": self.observation_space, "action": self.action_space},
            "model": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "counters": {
                "num_timesteps": self.num_timesteps,
                "n_updates": self.n_updates,
                "nonfinite_in_a_row": self.nonfinite_in_a_row,
            },
            "rng": get_rng_states(),
            "run": {
                "log_dir": str(self.log_dir) if self.log_dir else None,
                "checkpoint_path": str(self.checkpoint_path) if self.checkpoint_path else None,
            },
            "env": {"id": str(self.env_id), "kwargs": self.env_kwargs, "stepper": None,
                    "memory_state": None},
        }
        if self.stepper is not None and self.stepper.obs is not None:
            payload["env"]["stepper"] = self.stepper.state_dict()
            payload["env"]["memory_state"] = {
                k: v.detach().cpu() for k, v in (self.memory_state or {}).items()
            }
        return payload

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint (atomically) to ``path``: this process's view, no communication
        (under several ranks call it on rank 0; ``learn``'s own checkpoints hold every rank)."""
        return save_checkpoint(path, self.checkpoint_payload())

    def _write_checkpoint(self, path: Path) -> None:
        """``learn``'s checkpoint. Under several ranks a collective: every rank's env state,
        memory state and RNG states are gathered into rank 0's file (under ``distributed``), which
        rank 0 writes while the others wait, so no rank runs ahead of a checkpoint on disk."""
        if not self.dist.enabled:
            self.save(path)
            return
        payload = self.checkpoint_payload() if self.dist.is_main else None
        mine = {
            "stepper": self.stepper.state_dict() if self.stepper and self.stepper.obs is not None
            else None,
            "memory_state": {k: v.detach().cpu() for k, v in (self.memory_state or {}).items()},
            "rng": get_rng_states(),
        }
        ranks = self.dist.gather_object(mine)
        if payload is not None:
            payload["distributed"] = {"world_size": self.dist.world_size, "ranks": ranks}
            save_checkpoint(path, payload)
        self.dist.barrier()

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

        Under several ranks (``distributed``, as in the constructor) every rank loads the same
        file; a checkpoint of the same world size gives each rank its own envs, memory state and
        RNG states back, so the run continues exactly. With another world size (a single process
        included) the model, optimizer and counters are restored and the envs start afresh (a
        warning says so).
        """
        data = load_checkpoint(path)
        where = f"checkpoint {str(path)!r}"
        if data["algo"] != cls.algo_name:
            raise CheckpointError(
                f"{where} was written by {data['algo']}, not {cls.algo_name}; "
                f"use {data['algo']}.load"
            )
        try:
            cfg = cls.config_class(**data["config"])
        except TypeError as err:
            raise CheckpointError(f"{where} has an incompatible config: {err}") from None
        cfg = dataclasses.replace(cfg, device=device, **overrides)
        run = data.get("run", {})
        env_data = data.get("env", {})
        ctx = setup(cfg.device, enabled=distributed)
        rebuilt = False
        if env is None and env_data.get("id"):
            try:
                env = make_vec_env(
                    env_data["id"], cfg.n_envs, vec=cfg.vec, async_envs=cfg.async_envs,
                    env_kwargs=env_data.get("kwargs"), device=_agent_device(cfg.device, ctx),
                )
                rebuilt = True
            except (ValueError, gym.error.Error):
                env = None
        spaces = data.get("spaces", {})
        module = data["policy"].get("module")
        policy = module if module is not None else data["policy"]["name"]
        try:
            agent = cls(
                policy, env, cfg, env_kwargs=env_data.get("kwargs"),
                tensorboard_log=None, checkpoint_path=run.get("checkpoint_path"),
                observation_space=spaces.get("observation"), action_space=spaces.get("action"),
                distributed=distributed,
            )
        except ValueError as err:
            raise CheckpointError(f"{where} cannot be rebuilt: {err}") from None
        if run.get("log_dir"):
            agent.log_dir = Path(run["log_dir"])
        try:
            agent.policy.load_state_dict(data["model"])
            agent.optimizer.load_state_dict(data["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{where} does not match the policy it names: {err}") from None
        agent.env_id = env_data.get("id", agent.env_id)
        counters = data["counters"]
        agent.num_timesteps = int(counters["num_timesteps"])
        agent.n_updates = int(counters["n_updates"])
        agent.nonfinite_in_a_row = int(counters.get("nonfinite_in_a_row", 0))
        saved = data.get("distributed") or {"world_size": 1, "ranks": None}
        if saved["world_size"] == agent.dist.world_size:
            mine = saved["ranks"][agent.dist.rank] if saved["ranks"] else {
                "stepper": env_data.get("stepper"),
                "memory_state": env_data.get("memory_state"),
                "rng": data.get("rng"),
            }
        else:
            mine = {"stepper": None, "memory_state": None, "rng": None}
            if rebuilt and agent.dist.is_main:
                warnings.warn(
                    f"{where} was written by {saved['world_size']} rank(s), this run has "
                    f"{agent.dist.world_size}: model, optimizer and counters restored; the envs, "
                    "memory states and RNG states are not (the envs start from a fresh reset)",
                    stacklevel=2,
                )
        stepper_sd = mine["stepper"]
        if rebuilt and agent.stepper is not None and stepper_sd is not None:
            if agent.stepper.load_state_dict(stepper_sd):
                agent.memory_state = {
                    k: v.to(agent.device) for k, v in mine["memory_state"].items()
                }
        if mine["rng"] is not None:
            set_rng_states(mine["rng"])
        return agent


# helpers


def _episode_scalars(episodes: list[dict[str, float]]) -> dict[str, float]:
    if not episodes:
        return {}
    out = {
        "charts/episodic_return": float(np.mean([e["return"] for e in episodes])),
        "charts/episode_length": float(np.mean([e["length"] for e in episodes])),
        "charts/episodes": float(len(episodes)),
    }
    succ = [e["success"] for e in episodes if "success" in e]
    if succ:
        out["charts/success_rate"] = float(np.mean(succ))
    return out


def _clone(sd: Any) -> Any:
    if isinstance(sd, torch.Tensor):
        return sd.detach().clone()
    if isinstance(sd, dict):
        return {k: _clone(v) for k, v in sd.items()}
    if isinstance(sd, list):
        return [_clone(v) for v in sd]
    return sd


def _is_batched(obs: Any, space: gym.Space) -> bool:
    if isinstance(space, gym.spaces.Dict):
        k = next(iter(space.spaces))
        return _is_batched(obs[k], space.spaces[k])
    return np.asarray(obs).ndim > len(space.shape)


def _unsqueeze(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: _unsqueeze(v) for k, v in obs.items()}
    return obs.unsqueeze(0)


def _batch_size(obs: Any) -> int:
    if isinstance(obs, dict):
        return _batch_size(next(iter(obs.values())))
    return int(obs.shape[0])
