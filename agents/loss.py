"""The actor-critic loss shared by PPO and A2C: ``loss_*`` terms plus detached diagnostics."""

from __future__ import annotations

import torch
from torch import Tensor

from policies.actor_critic import ActorCritic
from policies.memory import memory_losses

from .buffer import SequenceBatch
from .config import AgentConfig
from .mrbp import ChunkOutput, LossFn

__all__ = ["make_loss_fn"]


def make_loss_fn(policy: ActorCritic, cfg: AgentConfig, *, memory_hook: bool = True) -> LossFn:
    """The loss of :class:`AgentConfig` ``cfg`` as an MRBP/BPTT loss function.

    Per step: the policy-gradient term (PPO's clipped surrogate, or A2C's ``-A * ratio`` whose
    gradient at ratio 1 is ``-A * grad log pi``), ``vf_coef`` times the value loss
    (``0.5 (V - R)^2``, clipped around the rollout's values if ``clip_vloss``), minus ``ent_coef``
    times the entropy; plus ``aux_coef`` times every memory auxiliary loss
    (:func:`policies.memory.memory_losses` on the chunk, the returns as targets). Each term is a
    mean over the chunk's steps scaled by ``fraction``. ``memory_hook=False`` leaves out
    ``memory.auxiliary_losses`` (whose fragment sampling depends on how a sequence is cut, so only
    the rest is chunking-invariant).
    """

    def loss_fn(
        batch: SequenceBatch, out: ChunkOutput, fraction: float
    ) -> tuple[Tensor, dict[str, Tensor]]:
        new_logp = out.dist.log_prob(batch.actions)
        entropy = out.dist.entropy().mean()
        logratio = new_logp - batch.log_probs
        ratio = logratio.exp()
        adv = batch.advantages
        if cfg.clip_coef is None:
            pg_loss = -(adv * ratio).mean()
        else:
            clipped = ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)
            pg_loss = torch.max(-adv * ratio, -adv * clipped).mean()
        v_err = (out.values - batch.returns).pow(2)
        if cfg.clip_vloss and cfg.clip_coef is not None:
            v_clip = batch.values + (out.values - batch.values).clamp(-cfg.clip_coef, cfg.clip_coef)
            v_err = torch.max(v_err, (v_clip - batch.returns).pow(2))
        v_loss = 0.5 * v_err.mean()

        aux_losses = memory_losses(
            policy.memory, out.aux, out.features, batch.episode_starts, out.state_in,
            batch.returns, with_auxiliary_losses=memory_hook,
        )
        aux_total = sum(aux_losses.values(), torch.zeros((), device=adv.device))

        loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss + cfg.aux_coef * aux_total
        with torch.no_grad():
            stats = {
                "losses/policy_loss": pg_loss,
                "losses/value_loss": v_loss,
                "losses/entropy": entropy,
                "losses/approx_kl": ((ratio - 1) - logratio).mean(),
                "losses/clipfrac": ((ratio - 1).abs() > (cfg.clip_coef or 0.0)).float().mean()
                if cfg.clip_coef is not None
                else torch.zeros((), device=adv.device),
                "losses/loss": loss,
            }
            for k, v in aux_losses.items():
                stats[f"losses/{k}"] = v
            for k, v in out.aux.items():
                if not k.startswith("loss_") and v.numel() > 0:
                    stats[f"memory/{k}"] = v.float().mean()
            stats = {k: v.detach() * fraction for k, v in stats.items()}
        return loss * fraction, stats

    return loss_fn
