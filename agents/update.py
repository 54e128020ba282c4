"""The gradient step of one rollout, shared by PPO and A2C: ``n_epochs`` passes over minibatches
of whole sequences, each back-propagated by truncated BPTT or MRBP (:mod:`agents.mrbp`), its
gradients averaged over the ranks and clipped before the optimizer step. A non-finite gradient
(on any rank: the average is then non-finite on every rank) skips the whole update, restoring the
parameters and optimizer state of before it."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from policies.actor_critic import ActorCritic

from .buffer import RolloutBuffer, SequenceBatch
from .config import AgentConfig
from .distributed import Distributed
from .loss import make_loss_fn
from .mrbp import LossFn, bptt_backward, mrbp_backward

__all__ = ["update_policy"]


def update_policy(
    policy: ActorCritic,
    optimizer: torch.optim.Optimizer,
    dist: Distributed,
    buffer: RolloutBuffer,
    cfg: AgentConfig,
) -> dict[str, float] | None:
    """Train ``policy`` on the rollout in ``buffer``; the mean loss statistics of its gradient
    steps, or None when a gradient was non-finite (update skipped)."""
    # the same function that acted (eval mode) unless train-mode updates are asked for
    policy.train(cfg.update_train_mode)
    loss_fn = make_loss_fn(policy, cfg)
    totals: dict[str, torch.Tensor] = {}
    n_steps = 0
    snapshot = None
    for _ in range(cfg.n_epochs):
        epoch_kl = []
        for mb in buffer.minibatches(cfg.n_minibatches):
            stats = _backward(policy, optimizer, dist, mb, loss_fn, cfg)
            if not bool(torch.isfinite(stats["losses/grad_norm"])):  # one host read
                optimizer.zero_grad(set_to_none=True)
                if snapshot is not None:  # undo this update's earlier minibatches
                    policy.load_state_dict(snapshot[0])
                    optimizer.load_state_dict(snapshot[1])
                return None
            if snapshot is None:
                snapshot = (_clone(policy.state_dict()), _clone(optimizer.state_dict()))
            optimizer.step()
            for k, v in stats.items():
                totals[k] = totals.get(k, 0) + v
            n_steps += 1
            epoch_kl.append(stats["losses/approx_kl"])
        if cfg.target_kl is not None:
            kl = dist.mean(torch.stack(epoch_kl).mean())  # the same on every rank
            if float(kl) > cfg.target_kl:
                break
    keys = list(totals)
    values = torch.stack([totals[k].float() for k in keys]).div(n_steps).tolist()
    return dict(zip(keys, values, strict=True))


def _backward(
    policy: ActorCritic,
    optimizer: torch.optim.Optimizer,
    dist: Distributed,
    mb: SequenceBatch,
    loss_fn: LossFn,
    cfg: AgentConfig,
) -> dict[str, Tensor]:
    """Gradients of one minibatch, averaged over the ranks and clipped; its loss statistics
    with ``losses/grad_norm``, the norm before clipping (non-finite: skip the update)."""
    if cfg.norm_adv and mb.advantages.numel() * dist.world_size > 1:
        # over the global minibatch: this rank's and the other ranks' sequences
        mb = mb._replace(advantages=dist.normalize_advantages(mb.advantages, cfg.adv_std_floor))
    optimizer.zero_grad(set_to_none=True)
    if cfg.mrbp:
        stats = mrbp_backward(policy, mb, loss_fn, cfg.mrbp_chunk_len)
    else:
        stats = bptt_backward(policy, mb, loss_fn)
    dist.average_gradients(policy.parameters())
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), max_norm)
    stats["losses/grad_norm"] = norm.detach()
    return stats


def _clone(tree: Any) -> Any:
    """A copy of a state dict's tensors (other leaves shared)."""
    return tree_map(lambda x: x.detach().clone() if isinstance(x, Tensor) else x, tree)
