"""Actor-critic agents (PPO, A2C) for memory policies: rollout buffer, GAE, truncated BPTT and
memory-replay back-propagation, logging and checkpoints."""

from .algorithms import A2C, ALGORITHMS, PPO
from .buffer import RolloutBuffer, SequenceBatch
from .checkpoint import CheckpointError
from .config import A2CConfig, AgentConfig, PPOConfig, field_docs
from .env_ids import make_env, resolve_env
from .gae import compute_gae
from .mrbp import bptt_backward, mrbp_backward
from .presets import PRESETS, apply_preset
from .run import NonFiniteLossError, TrainingInterrupted
from .rundir import RunLockedError
from .trainer import ActorCriticTrainer
from .vec import make_vec_env

__all__ = [
    "A2C",
    "A2CConfig",
    "ALGORITHMS",
    "ActorCriticTrainer",
    "AgentConfig",
    "CheckpointError",
    "NonFiniteLossError",
    "PPO",
    "PRESETS",
    "PPOConfig",
    "RolloutBuffer",
    "RunLockedError",
    "SequenceBatch",
    "TrainingInterrupted",
    "apply_preset",
    "bptt_backward",
    "compute_gae",
    "field_docs",
    "make_env",
    "make_vec_env",
    "mrbp_backward",
    "resolve_env",
]
