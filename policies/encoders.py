"""Observation encoders: map a gymnasium observation to one feature vector per step.

``make_encoder(observation_space)`` picks the encoder: our ``(3, 3, V)`` binary bag-of-words grid
observations, any other ``Box`` (flattened, scaled if it is an image), and ``Dict`` spaces
(each key encoded and concatenated). Encoders take time-major batches ``(T, B, *obs_shape)`` or
flat batches ``(N, *obs_shape)``: every leading dim is kept.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import Tensor, nn

__all__ = ["BagOfWordsEncoder", "BoxEncoder", "DictEncoder", "make_encoder"]


def _lead(x: Tensor, n_obs_dims: int) -> tuple[int, ...]:
    return tuple(x.shape[: x.dim() - n_obs_dims])


class BagOfWordsEncoder(nn.Module):
    """Encodes a ``(H, W, V)`` binary grid of word bags: one embedding per (cell, word), summed.

    This is a linear layer over the flattened grid (each cell position has its own word
    embeddings, so the encoder knows where a word is), followed by a ReLU layer.
    """

    def __init__(self, shape: tuple[int, int, int], *, features_dim: int = 64) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.features_dim = features_dim
        n_in = math.prod(self.shape)
        self.net = nn.Sequential(
            nn.Linear(n_in, features_dim),
            nn.ReLU(),
            nn.Linear(features_dim, features_dim),
            nn.ReLU(),
        )

    def forward(self, obs: Tensor) -> Tensor:
        lead = _lead(obs, 3)
        return self.net(obs.reshape(*lead, -1).float())


class BoxEncoder(nn.Module):
    """Flattens any ``Box`` observation (images scaled to [0, 1]) and applies a 2-layer MLP."""

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
        lead = _lead(obs, len(self.obs_shape))
        return self.net(obs.reshape(*lead, -1).float() / self.scale)


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


def _is_bag_of_words(space: gym.Space) -> bool:
    return (
        isinstance(space, gym.spaces.Box)
        and len(space.shape) == 3
        and space.dtype == "uint8"
        and float(space.high.max()) <= 1
    )


def make_encoder(space: gym.Space, *, features_dim: int = 64) -> nn.Module:
    """The encoder for ``space``; the result has a ``features_dim`` attribute."""
    if features_dim < 1:
        raise ValueError(f"features_dim must be >= 1, got {features_dim}")
    if _is_bag_of_words(space):
        return BagOfWordsEncoder(space.shape, features_dim=features_dim)
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
