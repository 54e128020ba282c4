"""PPO and A2C: the shared actor-critic trainer with their configuration presets.

Usage (stable-baselines3's shape)::

    from agents import PPO
    model = PPO("lstm", "corridor").learn(200_000)
    actions, state = model.predict(obs, state, episode_start)
    model.save("ppo.pt"); model = PPO.load("ppo.pt")
"""

from __future__ import annotations

from .config import A2CConfig, PPOConfig
from .trainer import ActorCriticTrainer

__all__ = ["A2C", "ALGORITHMS", "PPO"]


class PPO(ActorCriticTrainer):
    """Proximal policy optimisation (Schulman et al. 2017): clipped surrogate, several epochs of
    minibatches of whole sequences, optional advantage normalisation (``norm_adv``, off by
    default) and value clipping. Hyperparameters: :class:`~agents.config.PPOConfig`."""

    config_class = PPOConfig
    algo_name = "PPO"


class A2C(ActorCriticTrainer):
    """Advantage actor-critic, the paper's algorithm: one pass over the whole rollout as one batch,
    no clipping, RMSprop. Hyperparameters: :class:`~agents.config.A2CConfig`."""

    config_class = A2CConfig
    algo_name = "A2C"


#: One place that maps an algorithm name (the CLI's ``--algo``) to its class.
ALGORITHMS: dict[str, type[ActorCriticTrainer]] = {"ppo": PPO, "a2c": A2C}
