"""Coefficient schedules: what the step count changes during a run. Each is a function of the
config and ``num_timesteps`` (the steps of all ranks before the update's rollout), so a resumed
run, which restores ``num_timesteps``, continues every schedule where it stopped."""

from __future__ import annotations

import dataclasses

import torch

from .config import AgentConfig

__all__ = ["set_learning_rate", "update_config"]


def set_learning_rate(
    optimizer: torch.optim.Optimizer, cfg: AgentConfig, num_timesteps: int, total_timesteps: int
) -> None:
    """With ``anneal_lr``, the learning rate decays linearly from ``lr`` to zero over
    ``total_timesteps`` (a parameter group at ``lr_scale`` times it); without it the optimizer's
    rate is left as it is."""
    if not cfg.anneal_lr:
        return
    frac = max(0.0, 1.0 - num_timesteps / total_timesteps)
    for group in optimizer.param_groups:  # each group at its own multiple (lr_scale)
        group["lr"] = cfg.lr * frac * group.get("lr_scale", 1.0)


def update_config(cfg: AgentConfig, num_timesteps: int) -> AgentConfig:
    """The config of the update whose rollout started at ``num_timesteps``: the entropy bonus is
    off before ``ent_start_step`` and decays linearly to zero from there to ``ent_end_step``
    (when set), the memory auxiliary losses are off before ``aux_start_step``."""
    if num_timesteps < cfg.ent_start_step:
        cfg = dataclasses.replace(cfg, ent_coef=0.0)
    elif cfg.ent_end_step:
        span = cfg.ent_end_step - cfg.ent_start_step
        left = 0.0 if span <= 0 else max(0.0, 1.0 - (num_timesteps - cfg.ent_start_step) / span)
        cfg = dataclasses.replace(cfg, ent_coef=cfg.ent_coef * left)
    if num_timesteps < cfg.aux_start_step:
        cfg = dataclasses.replace(cfg, aux_coef=0.0)
    return cfg
