"""Training configuration: one dataclass for the shared actor-critic trainer, with PPO and A2C
presets. Every field has a docstring (read by :func:`field_docs`, so the CLI's ``--help`` explains
itself)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
from dataclasses import dataclass, field
from typing import Any

__all__ = ["A2CConfig", "AgentConfig", "PPOConfig", "field_docs"]


@dataclass
class AgentConfig:
    """Hyperparameters of the actor-critic trainer (PPO and A2C are presets of it)."""

    n_envs: int = 16
    """Parallel environments (the batch dimension B of a rollout)."""

    rollout_len: int = 64
    """Steps collected per env between updates (the time dimension T of a rollout)."""

    bptt_len: int = 64
    """Length of a training sequence: the rollout is cut into sequences of this many steps, each
    starting from the memory state stored when it was collected (detached). Must divide
    rollout_len. The paper trains with 100."""

    mrbp: bool = False
    """Memory-replay back-propagation (Memformer algorithm 1): process each training sequence in
    chunks of mrbp_chunk_len, keeping only the chunk-boundary states, and back-propagate chunk by
    chunk in reverse; same gradients as full BPTT at the peak memory of one chunk."""

    mrbp_chunk_len: int = 16
    """Steps per MRBP chunk (only with mrbp). Must divide bptt_len."""

    gamma: float = 0.99
    """Discount factor."""

    gae_lambda: float = 0.95
    """GAE lambda (1.0: Monte-Carlo returns; 0.0: one-step TD)."""

    n_epochs: int = 8
    """Passes over each rollout per update."""

    n_minibatches: int = 4
    """Minibatches per epoch; a minibatch holds whole training sequences (env rows), so the number
    of sequences per rollout (n_envs * rollout_len / bptt_len) must be divisible by it."""

    clip_coef: float | None = 0.2
    """PPO's probability-ratio clip range; None disables clipping (A2C's plain policy gradient)."""

    clip_vloss: bool = False
    """Clip the value update to clip_coef around the rollout's values (PPO's value clipping)."""

    norm_adv: bool = True
    """Normalise advantages per minibatch (zero mean, unit std)."""

    adv_std_floor: float = 0.0
    """With norm_adv, divide by max(std, adv_std_floor) instead of the std: a rollout in which no
    episode got a reward has advantages that are only value-estimate noise (std ~0.03 on the
    corridor), and scaling that to unit std gives the policy large random updates (on the full
    corridor such updates drove the entropy from 1.39 to 0.23 with no reward ever seen; on the
    10-cell corridor some seeds collapsed to never reaching a door). Rollouts with a real reward
    signal (std above the floor) are normalised as usual. In units of reward; 0 (the default) is
    plain normalisation: 0.1 did not make the 10-cell corridor reliable (measured over seeds), so
    it is offered for sparse-reward tasks, not imposed."""

    vf_coef: float = 0.5
    """Weight of the value loss."""

    ent_coef: float = 0.001
    """Weight of the entropy bonus."""

    ent_start_step: int = 0
    """Steps (counted from the run's start) before which the entropy bonus is off: an update whose
    rollout was collected from step ``num_timesteps < ent_start_step`` uses no entropy bonus. On
    sparse tasks such as the full corridor a large bonus from the start keeps the policy from
    walking to the far reward (0.003 did), while without one the door choice can become
    deterministic before the colour is used; switching the bonus on once the walk is learned
    avoids both (0: always on)."""

    update_train_mode: bool = False
    """Run the update's forward passes in train mode (dropout, Expire-Span's random memory
    shortening). Off by default: the rollout is collected in eval mode, and PPO's ratio
    pi_new / pi_old, the KL and the value targets are only meaningful when the update evaluates
    the same function that acted; in train mode random shortening hides memories from the update
    that the acting policy saw (on the full corridor, the ball for about half of the long
    corridors), so the update trains a different, memory-starved policy."""

    aux_coef: float = 1.0
    """Weight of every memory auxiliary loss (aux["loss_*"] and Memory.auxiliary_losses)."""

    aux_start_step: int = 0
    """Steps (counted from the run's start) before which the memory auxiliary losses are off, as
    ent_start_step for the entropy bonus: e.g. Expire-Span's span penalty, which before the first
    rewards is the only consistent gradient on the spans and shrinks them all (0: always on)."""

    max_grad_norm: float = 0.5
    """Gradient norm clip (0 disables clipping)."""

    lr: float = 5e-4
    """Learning rate."""

    optimizer: str = "adam"
    """Optimizer: adam or rmsprop."""

    anneal_lr: bool = False
    """Decay the learning rate linearly to zero over total_timesteps."""

    target_kl: float | None = None
    """Stop an update's epochs early when the approximate KL exceeds this (None: never)."""

    seed: int = 0
    """Seed of torch, numpy, python and the envs."""

    device: str = "auto"
    """Device: auto (cuda when available), cpu, cuda or cuda:N."""

    async_envs: bool = False
    """Step the envs in subprocesses (gymnasium AsyncVectorEnv) instead of in this process (the
    same as vec=async)."""

    vec: str = "auto"
    """Vector env: batched (the task's native vector implementation: all envs stepped at once as
    arrays, on the training device when it is a GPU), sync (SyncVectorEnv of the single env),
    async (AsyncVectorEnv, subprocesses), or auto (batched for our tasks, which have one, else
    sync). Batched and sync give the same episodes for the same seed."""

    checkpoint_every: int = 50
    """Write a checkpoint every this many updates (and at the end); 0 writes only at the end."""

    max_nonfinite: int = 5
    """Stop after this many updates in a row with a non-finite loss or gradient."""

    log_every: int = 10
    """Updates between plain progress lines when stderr is not a terminal."""

    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """Policy hyperparameters: features_dim, head_hidden, head_layers and the memory's own."""

    def validate(self) -> AgentConfig:
        """Refuse values outside their range with a ValueError naming the field; returns self."""

        def need(cond: bool, name: str, allowed: str) -> None:
            if not cond:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")

        for name in ("n_envs", "rollout_len", "bptt_len", "mrbp_chunk_len", "n_epochs",
                     "n_minibatches", "max_nonfinite", "log_every"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, name, ">= 1")
        for name in ("ent_start_step", "aux_start_step"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 0, name,
                 "an integer >= 0")
        need(0.0 <= self.gamma <= 1.0, "gamma", "in [0, 1]")
        need(0.0 <= self.gae_lambda <= 1.0, "gae_lambda", "in [0, 1]")
        need(self.clip_coef is None or self.clip_coef > 0, "clip_coef", "> 0 or None")
        for name in ("vf_coef", "ent_coef", "aux_coef", "max_grad_norm", "adv_std_floor"):
            need(getattr(self, name) >= 0, name, ">= 0")
        need(self.lr > 0, "lr", "> 0")
        need(self.optimizer in ("adam", "rmsprop"), "optimizer", "one of: adam, rmsprop")
        need(self.target_kl is None or self.target_kl > 0, "target_kl", "> 0 or None")
        need(self.checkpoint_every >= 0, "checkpoint_every", ">= 0")
        need(self.vec in ("auto", "batched", "sync", "async"), "vec",
             "one of: auto, batched, sync, async")
        need(not self.async_envs or self.vec in ("auto", "async"), "async_envs",
             f"False when vec is {self.vec!r}")
        need(self.rollout_len % self.bptt_len == 0, "bptt_len",
             f"a divisor of rollout_len ({self.rollout_len})")
        if self.mrbp:
            need(self.bptt_len % self.mrbp_chunk_len == 0, "mrbp_chunk_len",
                 f"a divisor of bptt_len ({self.bptt_len})")
        n_seq = self.n_envs * (self.rollout_len // self.bptt_len)
        need(n_seq % self.n_minibatches == 0, "n_minibatches",
             f"a divisor of the number of training sequences per rollout ({n_seq})")
        dev = self.device
        need(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
             "device", "auto, cpu, cuda or cuda:N")
        return self


@dataclass
class PPOConfig(AgentConfig):
    """PPO: clipped objective, several epochs over minibatches of whole sequences.

    Defaults chosen to learn the corridor reliably (measured on ``MemoRL/Corridor-L10-v0`` with
    ``scripts/learning_seeds.py``, 98,304 steps a seed, README "Learning"): 7 of seeds 0-7 reach
    1.00 deterministic success (seed 3: 0.73), against 2 of seeds 0-3 with 16
    envs, 4 minibatches, normalised advantages and entropy 0.001.

    * 32 envs x 64-step rollouts in 8 minibatches of 4 sequences, 8 epochs: each update sees
      about 80 door decisions and uses them hard (with 4 epochs every memory sat at the
      memoryless 50% for 200k+ steps); gradient through the whole rollout (bptt_len =
      rollout_len: the colour seen at an episode's start is credited from its door).
    * Advantages are not normalised (norm_adv=False): with 0/1 rewards they are already on the
      reward's scale, while normalising a rollout without rewards (all its advantages value
      noise) or one where every episode succeeds (advantages near zero) blows noise up to unit
      size; with normalisation, policies that had reached 100% fell back to 75-80% and stayed.
    * Entropy 0.003: a policy on the 50% plateau picks the same door whatever the colour, and
      once that choice is near-deterministic its gradient vanishes; the bonus keeps the door
      choice open until the colour-door link is found (0.01 outweighed the task's single reward
      and the agent stopped walking to the doors; 0.001 left half the seeds on the plateau).
    * Adam at 5e-4, decayed linearly to zero (anneal_lr): at a constant rate, policies at 100%
      fell back within 10k steps; with 16 envs, 1e-3 left 2 of 3 seeds on the plateau.

    Pairs with the policies' two-layer heads (picking the door is an XOR of the remembered colour
    and the seen door order).
    """

    n_envs: int = 32
    """Parallel environments (the batch dimension B of a rollout)."""

    n_minibatches: int = 8
    """Minibatches per epoch; a minibatch holds whole training sequences (env rows), so the number
    of sequences per rollout (n_envs * rollout_len / bptt_len) must be divisible by it."""

    norm_adv: bool = False
    """Normalise advantages per minibatch (zero mean, unit std); off for PPO (see the class)."""

    ent_coef: float = 0.003
    """Weight of the entropy bonus."""

    anneal_lr: bool = True
    """Decay the learning rate linearly to zero over total_timesteps."""


@dataclass
class A2CConfig(AgentConfig):
    """A2C, the paper's actor-critic: one pass, the whole rollout as one batch, no clipping,
    RMSprop, entropy 0.0005 and BPTT length 100 as in the paper's RL settings."""

    n_envs: int = 16
    """Parallel environments (the batch dimension B of a rollout)."""

    rollout_len: int = 100
    """Steps collected per env between updates (the time dimension T of a rollout)."""

    bptt_len: int = 100
    """Length of a training sequence (the paper trains with 100); must divide rollout_len."""

    n_epochs: int = 1
    """Passes over each rollout per update (A2C: one)."""

    n_minibatches: int = 1
    """Minibatches per epoch (A2C: the whole rollout is one batch)."""

    clip_coef: float | None = None
    """PPO's ratio clip range; None (A2C) is the plain policy gradient."""

    norm_adv: bool = False
    """Normalise advantages per minibatch."""

    ent_coef: float = 0.0005
    """Weight of the entropy bonus (the paper's 0.0005)."""

    lr: float = 7e-4
    """Learning rate."""

    optimizer: str = "rmsprop"
    """Optimizer: adam or rmsprop (the paper's actor-critic uses RMSprop)."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field of ``cls`` and its bases (nearest class wins)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs
