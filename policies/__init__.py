"""Policies: observation encoders, memories behind one contract, and the actor-critic."""

from .actor_critic import ActorCritic, available_policies, default_policy, make_policy

__all__ = ["ActorCritic", "available_policies", "default_policy", "make_policy"]
