"""Observation encoders: map a gymnasium observation to one feature vector per step.

``make_encoder(observation_space)`` picks the encoder: any ``Box`` (our ``(3, 3, V)`` binary
bag-of-words grids included; flattened, scaled if it is an image), ``Discrete`` (an embedding)
and ``Dict`` spaces (each key encoded and concatenated). Encoders take time-major batches
``(T, B, *obs_shape)`` or flat batches ``(N, *obs_shape)``: every leading dim is kept.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import Tensor, nn

__all__ = ["BoxEncoder", "DictEncoder", "make_encoder"]


class BoxEncoder(nn.Module):
    """Flattens a ``Box`` observation and applies a two-layer ReLU MLP.

    On our ``(3, 3, V)`` binary bag-of-words grids the first layer is one embedding per
    (cell, word), summed over the words present, so the encoder knows where a word is. Other
    ``uint8`` images (values up to 255) are scaled to [0, 1] first.
    """

    def __init__(self, space: gym.spaces.Box, *, features_dim: int = 64) -> None:
        super().__init__()
        self.obs_shape = tuple(space.shape)
        self.features_dim = features_dim
        self.scale = 255.0 if space.dtype == "uint8" and float(space.high.max()) > 1 else 1.0
        n_in = max(1, math.prod(self.obs_shape))
        self.net = nn.Sequential(
            nn.Linear(n_in, features_dim),
            nn.ReLU(),
            nn.Linear(features_dim, features_dim),
            nn.ReLU(),
        )

    def forward(self, obs: Tensor) -> Tensor:
        lead = obs.shape[: obs.dim() - len(self.obs_shape)]  # (T, B) or (N,)
        flat = obs.reshape(*lead, -1).float()
        return self.net(flat / self.scale if self.scale != 1.0 else flat)


class DictEncoder(nn.Module):
    """Encodes each key of a ``Dict`` observation and concatenates the features."""

    def __init__(self, space: gym.spaces.Dict, *, features_dim: int = 64) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(
            {k: make_encoder(s, features_dim=features_dim) for k, s in space.spaces.items()}
        )
        self.features_dim = features_dim * len(self.encoders)

    def forward(self, obs: dict[str, Tensor]) -> Tensor:
        return torch.cat([enc(obs[k]) for k, enc in self.encoders.items()], dim=-1)


def make_encoder(space: gym.Space, *, features_dim: int = 64) -> nn.Module:
    """The encoder for ``space``; the result has a ``features_dim`` attribute."""
    if features_dim < 1:
        raise ValueError(f"features_dim must be >= 1, got {features_dim}")
    if isinstance(space, gym.spaces.Box):
        return BoxEncoder(space, features_dim=features_dim)
    if isinstance(space, gym.spaces.Dict):
        return DictEncoder(space, features_dim=features_dim)
    if isinstance(space, gym.spaces.Discrete):
        return _DiscreteEncoder(space, features_dim=features_dim)
    raise ValueError(
        f"unsupported observation space {space!r}; supported: Box, Dict (of supported spaces), "
        "Discrete"
    )


class _DiscreteEncoder(nn.Module):
    def __init__(self, space: gym.spaces.Discrete, *, features_dim: int = 64) -> None:
        super().__init__()
        self.start = int(space.start)
        self.features_dim = features_dim
        self.embed = nn.Embedding(int(space.n), features_dim)

    def forward(self, obs: Tensor) -> Tensor:
        return torch.relu(self.embed(obs.long() - self.start))
