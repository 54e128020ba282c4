"""The actor-critic policy: observation encoder -> memory -> policy head and value head.

``ActorCritic`` is composed, not subclassed: any encoder from :mod:`policies.encoders` and any
memory behind the contract of :mod:`policies.memory.base`. Training runs whole time-major
sequences through :meth:`ActorCritic.forward`; acting runs one step through :meth:`ActorCritic.act`,
which is the same code path with ``T = 1`` (so what the agent trains on is what it acted with).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import torch
import torch.utils._pytree as pytree
from torch import Tensor, nn
from torch.distributions import Categorical

from .encoders import make_encoder
from .memory import (
    Memory,
    State,
    UnknownHyperparameterError,
    available_memories,
    make_memory,
)

__all__ = ["ActOutput", "ActorCritic", "available_policies", "default_policy", "make_policy"]

#: Keys of ``make_policy``'s config that configure the encoder and the heads (the rest go to the
#: memory).
POLICY_KEYS = ("features_dim", "head_hidden", "head_layers")


class ActOutput(NamedTuple):
    """One acting step for ``B`` envs."""

    actions: Tensor  # (B,) int64
    log_probs: Tensor  # (B,)
    values: Tensor  # (B,)
    state: State  # the memory state after the step
    aux: dict[str, Tensor]  # the memory's diagnostics for the step


# helpers


def _mlp(d_in: int, hidden: int, layers: int, d_out: int, out_gain: float) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        lin = nn.Linear(d, hidden)
        nn.init.orthogonal_(lin.weight, gain=2**0.5)
        nn.init.zeros_(lin.bias)
        mods += [lin, nn.Tanh()]
        d = hidden
    out = nn.Linear(d, d_out)
    # small policy logits / unit value scale at init (the usual PPO initialisation)
    nn.init.orthogonal_(out.weight, gain=out_gain)
    nn.init.zeros_(out.bias)
    mods.append(out)
    return nn.Sequential(*mods)


class ActorCritic(nn.Module):
    """Encoder -> memory -> (policy head, value head), for ``Discrete`` action spaces.

    Args:
        encoder: maps observations ``(T, B, *obs_shape)`` to features ``(T, B, features_dim)``;
            must have a ``features_dim`` attribute.
        memory: a :class:`~policies.memory.Memory` with ``input_dim == encoder.features_dim``.
        action_space: a ``gymnasium.spaces.Discrete`` space (other spaces are refused).
        head_hidden: hidden units of the policy and value heads.
        head_layers: hidden layers of each head (0 makes each head a linear layer). Two by
            default: in the memory tasks the right action is often an XOR of something
            remembered and something seen (the corridor's door: the remembered ball colour
            against the seen door order), which a two-layer head learns several times faster.
    """

    def __init__(
        self,
        encoder: nn.Module,
        memory: Memory,
        action_space: gym.Space,
        *,
        head_hidden: int = 128,
        head_layers: int = 2,
    ) -> None:
        super().__init__()
        if not isinstance(action_space, gym.spaces.Discrete):
            raise ValueError(
                f"action_space must be gymnasium.spaces.Discrete, got {action_space!r} "
                "(only discrete actions are supported)"
            )
        if head_hidden < 1:
            raise ValueError(f"head_hidden must be >= 1, got {head_hidden}")
        if head_layers < 0:
            raise ValueError(f"head_layers must be >= 0, got {head_layers}")
        features_dim = getattr(encoder, "features_dim", None)
        if features_dim != memory.input_dim:
            raise ValueError(
                f"encoder.features_dim ({features_dim}) must equal memory.input_dim "
                f"({memory.input_dim})"
            )
        self.encoder = encoder
        self.memory = memory
        self.action_space = action_space
        self.n_actions = int(action_space.n)
        self.action_start = int(action_space.start)
        self.policy_head = _mlp(memory.output_dim, head_hidden, head_layers, self.n_actions, 0.01)
        self.value_head = _mlp(memory.output_dim, head_hidden, head_layers, 1, 1.0)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups, each with an ``lr_scale`` (a multiple of the optimizer's
        learning rate): one group of everything else, then the memory's own
        (``memory.param_groups()``)."""
        groups = self.memory.param_groups()
        ids = {id(p) for g in groups for p in g["params"]}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest, "lr_scale": 1.0}, *[g for g in groups if g["params"]]]

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The memory state of ``batch_size`` fresh episodes."""
        return self.memory.initial_state(batch_size, self.device if device is None else device)

    def features(self, obs: Tensor | dict[str, Tensor]) -> Tensor:
        """Encoder features ``(T, B, features_dim)`` of time-major observations."""
        return self.encoder(obs)

    def forward(
        self, obs: Tensor | dict[str, Tensor], state: State, episode_starts: Tensor
    ) -> tuple[Categorical, Tensor, State, dict[str, Tensor]]:
        """Run ``T`` steps for ``B`` envs.

        Args:
            obs: time-major observations ``(T, B, *obs_shape)`` (or a dict of such tensors).
            state: the memory state before the first step.
            episode_starts: ``(T, B)`` bool, true where a step is the first of an episode.

        Returns:
            the action distribution (batch shape ``(T, B)``), values ``(T, B)``, the memory state
            after the last step, and the memory's ``aux`` dict.
        """
        x = self.features(obs)
        return self.heads(x, state, episode_starts)

    def heads(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Categorical, Tensor, State, dict[str, Tensor]]:
        """Memory and heads on encoder features ``x`` ``(T, B, features_dim)``."""
        y, state, aux = self.memory(x, state, episode_starts.bool())
        # no argument validation: the logits come from the head (finite unless training has
        # diverged, which the trainer's non-finite check catches), and the checks read values
        # back to the host on every call (a sync per step on an accelerator)
        dist = Categorical(logits=self.policy_head(y), validate_args=False)
        values = self.value_head(y).squeeze(-1)
        return dist, values, state, aux

    @torch.no_grad()
    def act(
        self,
        obs: Tensor | dict[str, Tensor],
        state: State,
        episode_starts: Tensor,
        deterministic: bool = False,
    ) -> ActOutput:
        """One step for ``B`` envs: ``obs`` ``(B, *obs_shape)``, ``episode_starts`` ``(B,)``.

        Actions are indices ``0..n-1`` (add ``action_start`` for the env when the space's start is
        not zero; :meth:`to_env_actions` does it).
        """
        obs_t = pytree.tree_map(lambda t: t.unsqueeze(0), obs)  # (1, B, ...)
        dist, values, state, aux = self(obs_t, state, episode_starts.view(1, -1))
        # the most likely action from the logits (no softmax needed for an argmax)
        actions = dist.logits.argmax(-1) if deterministic else dist.sample()
        return ActOutput(actions[0], dist.log_prob(actions)[0], values[0], state, aux)

    def to_env_actions(self, actions: Tensor) -> Tensor:
        """Action indices -> the env's action values (offset by the space's ``start``)."""
        return actions + self.action_start if self.action_start else actions


# registry (one name per memory)


def available_policies() -> list[str]:
    """The policy names: one per registered memory."""
    return available_memories()


def default_policy() -> str:
    """The default policy name: ``expire_span`` when registered, else ``lstm``."""
    return "expire_span" if "expire_span" in available_memories() else "lstm"


def make_policy(
    name: str, observation_space: gym.Space, action_space: gym.Space, **config: Any
) -> ActorCritic:
    """Build the actor-critic whose memory is registered under ``name``.

    ``config`` is routed: ``features_dim`` (encoder output size, default 64) to the encoder,
    ``head_hidden`` / ``head_layers`` (default 128 / 2) to the heads, every other key to the
    memory (unknown keys are refused with the list of accepted ones).
    """
    if name not in available_memories():
        raise ValueError(
            f"unknown policy {name!r}; choose one of: {', '.join(available_policies())}"
        )
    features_dim = int(config.pop("features_dim", 64))
    head = {k: int(config.pop(k)) for k in ("head_hidden", "head_layers") if k in config}
    encoder = make_encoder(observation_space, features_dim=features_dim)
    try:
        memory = make_memory(name, int(encoder.features_dim), **config)
    except UnknownHyperparameterError as err:
        raise ValueError(f"{err}; policy-level keys: {', '.join(POLICY_KEYS)}") from None
    return ActorCritic(encoder, memory, action_space, **head)
