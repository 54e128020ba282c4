"""Observation encoders: map a gymnasium observation to one feature vector per step.

``make_encoder(observation_space)`` picks the encoder: any ``Box`` (our ``(3, 3, V)`` binary
bag-of-words grids included; flattened, scaled if it is an image), ``Discrete`` (an embedding),
minigrid's symbolic observations (:class:`SymbolicGridEncoder`: :func:`is_symbolic_grid`, a
``Dict`` of an ``image`` of category codes and a ``direction``, or :func:`is_code_image`, such an
image alone whose space declares the codes' bounds) and other ``Dict`` spaces (each key encoded
and concatenated). Encoders take time-major batches ``(T, B, *obs_shape)`` or flat
batches ``(N, *obs_shape)``: every leading dim is kept.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["BoxEncoder", "DictEncoder", "SymbolicGridEncoder", "is_code_image", "is_symbolic_grid",
           "make_encoder"]


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
    if is_symbolic_grid(space) or is_code_image(space):
        return SymbolicGridEncoder(space, features_dim=features_dim)
    if isinstance(space, gym.spaces.Box):
        return BoxEncoder(space, features_dim=features_dim)
    if isinstance(space, gym.spaces.Dict):
        return DictEncoder(space, features_dim=features_dim)
    if isinstance(space, gym.spaces.Discrete):
        return _DiscreteEncoder(space, features_dim=features_dim)
    hint = ""
    if _is_mission_space(space):
        hint = (" (minigrid's text mission: make the env from its id, or wrap it in "
                "envs.wrappers.MissionWords, which drops a constant mission and encodes a varying "
                "one as a bag of words)")
    raise ValueError(
        f"unsupported observation space {space!r}{hint}; supported: Box, Dict (of supported "
        "spaces), Discrete"
    )


class _DiscreteEncoder(nn.Module):
    def __init__(self, space: gym.spaces.Discrete, *, features_dim: int = 64) -> None:
        super().__init__()
        self.start = int(space.start)
        self.features_dim = features_dim
        self.embed = nn.Embedding(int(space.n), features_dim)

    def forward(self, obs: Tensor) -> Tensor:
        return torch.relu(self.embed(obs.long() - self.start))


# minigrid's symbolic observations


def _is_mission_space(space: gym.Space) -> bool:
    # minigrid's MissionSpace, by duck type (the encoders do not import minigrid)
    return hasattr(space, "mission_func") and hasattr(space, "ordered_placeholders")


def _mission_is_constant(space: gym.Space) -> bool:
    lists = getattr(space, "ordered_placeholders", None) or []
    return type(space).__name__ == "MissionSpace" and all(len(v) == 1 for v in lists)


def is_symbolic_grid(space: gym.Space) -> bool:
    """Whether ``space`` looks like minigrid's observation dict: an ``image`` ``Box`` of
    ``uint8`` category codes ``(H, W, C)`` with ``H, W >= 3``, non-negative, and a ``direction``
    ``Discrete`` (other keys, such as a mission, may come with them)."""
    if not isinstance(space, gym.spaces.Dict):
        return False
    image, direction = space.spaces.get("image"), space.spaces.get("direction")
    return (
        isinstance(image, gym.spaces.Box)
        and image.dtype == np.uint8
        and len(image.shape) == 3
        and min(image.shape[:2]) >= 3
        and float(image.low.min()) >= 0
        and isinstance(direction, gym.spaces.Discrete)
    )


def is_code_image(space: gym.Space) -> bool:
    """Whether ``space`` is an image of category codes alone: a ``uint8`` ``Box`` ``(H, W, C)``
    with ``H, W >= 3``, non-negative, whose ``high`` is above 1 and below 255 (a binary grid is
    not codes, an image up to 255 is pixels; ``envs.wrappers.CodeImage`` declares minigrid's
    codes so)."""
    if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8
            and len(space.shape) == 3 and min(space.shape[:2]) >= 3):
        return False
    return float(space.low.min()) >= 0 and 1 < float(space.high.max()) < 255


class SymbolicGridEncoder(nn.Module):
    """Minigrid's symbolic view as categorical codes, not pixels.

    Each cell of ``image`` holds ``C`` codes (minigrid: object, colour, state). Every channel has
    its own embedding table, with one row per value the space allows (``high + 1``); a cell is
    the concatenation of its channels' rows (a linear layer on the cell's one-hot codes), and a
    small CNN (two 2x2 convolutions, as suits 7x7 views) reads the grid of cells. The direction
    is embedded (a bare image, :func:`is_code_image`, has none); the other keys are encoded by
    :func:`make_encoder` (a mission as a bag of
    words, see ``envs.wrappers.MissionWords``), except a constant raw ``MissionSpace``, which
    carries nothing and is ignored. All are concatenated and mixed by one linear layer into
    ``features_dim`` features.

    Raises:
        ValueError: a raw ``MissionSpace`` whose mission varies (text cannot be encoded here:
            make the env from its id, or wrap it in ``envs.wrappers.MissionWords``).
    """

    def __init__(
        self,
        space: gym.spaces.Dict | gym.spaces.Box,
        *,
        features_dim: int = 64,
        code_dim: int = 8,
        channels: tuple[int, int] = (16, 32),
    ) -> None:
        super().__init__()
        self.bare = is_code_image(space)
        if not (self.bare or is_symbolic_grid(space)):
            raise ValueError(
                f"not a symbolic grid observation space (is_symbolic_grid, is_code_image): {space}"
            )
        image = space if self.bare else space["image"]
        h, w, c = image.shape
        self.features_dim = features_dim
        self.image_shape = (h, w, c)
        sizes = [int(image.high[..., k].max()) + 1 for k in range(c)]
        # one table for all channels: channel k's codes start at offsets[k]
        offsets = torch.tensor([sum(sizes[:k]) for k in range(c)], dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)
        self.codes = nn.Embedding(sum(sizes), code_dim)
        self.cnn = nn.Sequential(
            nn.Conv2d(c * code_dim, channels[0], 2),
            nn.ReLU(),
            nn.Conv2d(channels[0], channels[1], 2),
            nn.ReLU(),
        )
        n_cnn = channels[1] * (h - 2) * (w - 2)
        self.direction: nn.Embedding | None = None
        others: dict[str, nn.Module] = {}
        if not self.bare:
            self.direction_start = int(space["direction"].start)
            self.direction = nn.Embedding(int(space["direction"].n), code_dim)
        for key, sub in ({} if self.bare else space.spaces).items():
            if key in ("image", "direction"):
                continue
            if _is_mission_space(sub):
                if _mission_is_constant(sub):
                    continue  # one mission for every episode: nothing to encode
                raise ValueError(
                    f"observation key {key!r} is a minigrid mission that varies ({sub}); text "
                    "cannot be encoded here: make the env from its id, or wrap it in "
                    "envs.wrappers.MissionWords (a bag of words)"
                )
            others[key] = make_encoder(sub, features_dim=features_dim)
        self.others = nn.ModuleDict(others)
        n_in = n_cnn + (0 if self.bare else code_dim)
        n_in += sum(int(e.features_dim) for e in others.values())
        self.mix = nn.Sequential(nn.Linear(n_in, features_dim), nn.ReLU())

    def code_indices(self, image: Tensor) -> Tensor:
        """Rows of the embedding table for each cell's codes: ``(..., H, W, C)`` int64, channel
        ``k``'s code ``v`` at row ``offsets[k] + v``."""
        return image.long() + self.offsets

    def forward(self, obs: dict[str, Tensor] | Tensor) -> Tensor:
        image = obs if self.bare else obs["image"]
        lead = image.shape[:-3]  # (T, B) or (N,)
        h, w, c = self.image_shape
        cells = self.codes(self.code_indices(image.reshape(-1, h, w, c)))  # (N, H, W, C, E)
        cells = cells.flatten(-2).permute(0, 3, 1, 2)  # (N, C * E, H, W)
        parts = [self.cnn(cells).flatten(1).reshape(*lead, -1)]
        if self.direction is not None:
            # (a direction stored as (..., 1), as SB3's buffers do, reshaped to the lead)
            parts.append(self.direction(obs["direction"].long().reshape(lead)
                                        - self.direction_start))
        parts += [enc(obs[k]) for k, enc in self.others.items()]
        return self.mix(torch.cat(parts, dim=-1))
