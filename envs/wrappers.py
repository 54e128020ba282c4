"""Wrappers the library applies to envs it did not write, so their observations fit the agents.

:class:`MissionWords`: minigrid's observation dict carries the mission as text
(``MissionSpace``), which cannot go into a tensor. A mission that never changes (minigrid's Memory
tasks: "go to the matching object at the end of the hallway") carries no information and is
dropped; one that varies becomes a bag of words over the mission space's vocabulary.

:class:`SuccessInfo`: minigrid reports no ``info["success"]``; by its convention an episode earns
a positive reward only when the mission is done, so the wrapper reports ``success`` (a positive
reward at termination) on each episode's last step, where the agents read it.

A minigrid env whose observation is its symbolic image alone (minigrid's ``ImgObsWrapper``, with
``FullyObsWrapper`` or not) has a ``Box(0, 255, (H, W, 3), uint8)`` space, the same as an RGB
image's, though its values are small category codes (object, colour, state). :class:`CodeImage`
declares their real bounds (:data:`MINIGRID_CODE_HIGH`), so that the agents' encoder reads them as
codes, not pixels (``policies.encoders.is_code_image``).

Each wrapper records its constructor arguments (``gymnasium.utils.RecordConstructorArgs``), so it
appears in the env's ``spec.additional_wrappers`` and ``gymnasium.make(env.spec)`` rebuilds it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import RecordConstructorArgs

__all__ = [
    "MAX_MISSIONS",
    "MINIGRID_CODE_HIGH",
    "CodeImage",
    "MissionWords",
    "SuccessInfo",
    "is_minigrid_env",
    "is_minigrid_code_image",
    "mission_vocabulary",
    "needs_mission_words",
]

#: the most missions a mission space may generate for its vocabulary to be enumerated
MAX_MISSIONS = 100_000

#: the largest code of each channel of minigrid's symbolic image: object (``agent``, 10), colour
#: (``grey``, 5), state (a door's ``locked``, 2; the agent's direction, 0-3, in a fully observed
#: grid)
MINIGRID_CODE_HIGH = (10, 5, 3)


def _is_mission_space(space: gym.Space) -> bool:
    # by duck type: minigrid's MissionSpace (and subclasses) without importing minigrid
    return hasattr(space, "mission_func") and hasattr(space, "ordered_placeholders")


def needs_mission_words(space: gym.Space) -> bool:
    """Whether ``space`` is a ``Dict`` with a minigrid ``MissionSpace`` under ``"mission"``."""
    return isinstance(space, gym.spaces.Dict) and _is_mission_space(
        space.spaces.get("mission", gym.spaces.Discrete(1)))


def _words(text: str) -> list[str]:
    return text.lower().replace(",", " ").replace(".", " ").split()


def mission_vocabulary(space: Any) -> list[str] | None:
    """The sorted words of every mission ``space`` can generate; ``[]`` when it generates one
    mission only (a constant mission), None when its missions cannot be enumerated (a subclass
    that accepts any text, as BabyAI's, or more than :data:`MAX_MISSIONS` missions)."""
    if type(space).__name__ != "MissionSpace":
        return None  # a subclass (BabyAI's accepts any text): its missions are not the table's
    lists: Sequence[Sequence[str]] = space.ordered_placeholders or []
    n = int(np.prod([len(v) for v in lists])) if lists else 1
    if n == 1:
        return []
    if n > MAX_MISSIONS:
        return None
    words = {w for values in itertools.product(*lists) for w in _words(space.mission_func(*values))}
    return sorted(words)


class MissionWords(gym.ObservationWrapper, RecordConstructorArgs):
    """Drops a constant ``"mission"`` from a minigrid observation dict, or replaces a varying
    one with its bag of words: ``Box(0, 1, (V,), float32)``, entry ``i`` 1 when the mission holds
    the ``i``-th word of :func:`mission_vocabulary` (words outside it are ignored).

    Raises:
        ValueError: the env's observation space has no ``MissionSpace`` under ``"mission"``, or
            its missions cannot be enumerated (free text, as BabyAI's levels).
    """

    def __init__(self, env: gym.Env) -> None:
        RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not needs_mission_words(space):
            raise ValueError(
                f"MissionWords wraps envs whose observation space is a Dict with a minigrid "
                f"MissionSpace under 'mission'; got {space}"
            )
        vocab = mission_vocabulary(space["mission"])
        if vocab is None:
            raise ValueError(
                f"the missions of {env.spec.id if env.spec else type(env.unwrapped).__name__} "
                f"cannot be enumerated ({type(space['mission']).__name__} accepts free text), so "
                "they have no vocabulary to encode: free-text missions are not supported; wrap "
                "the env yourself (e.g. minigrid.wrappers.ImgObsWrapper drops the mission) and "
                "pass it as env="
            )
        self.vocabulary = vocab
        self._index = {w: i for i, w in enumerate(vocab)}
        keys = {k: s for k, s in space.spaces.items() if k != "mission"}
        if vocab:
            keys["mission"] = gym.spaces.Box(0.0, 1.0, (len(vocab),), np.float32)
        self.observation_space = gym.spaces.Dict(keys)

    def observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in observation.items() if k != "mission"}
        if self.vocabulary:
            bag = np.zeros(len(self.vocabulary), np.float32)
            for w in _words(str(observation["mission"])):
                i = self._index.get(w)
                if i is not None:
                    bag[i] = 1.0
            out["mission"] = bag
        return out


def is_minigrid_env(env: gym.Env) -> bool:
    """Whether ``env`` is (a wrapper of) one of minigrid's envs (``MiniGridEnv``)."""
    import sys

    module = sys.modules.get("minigrid.minigrid_env")  # not imported: not a minigrid env
    return module is not None and isinstance(env.unwrapped, module.MiniGridEnv)


class SuccessInfo(gym.Wrapper, RecordConstructorArgs):
    """Adds ``info["success"]`` on each episode's last step (terminated or truncated): true when
    it terminated with a positive reward (minigrid's convention: a reward only for a mission
    done). An env that reports ``success`` itself keeps its own."""

    def __init__(self, env: gym.Env) -> None:
        RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if (terminated or truncated) and "success" not in info:
            info = {**info, "success": bool(terminated and float(reward) > 0)}
        return obs, reward, terminated, truncated, info


def is_minigrid_code_image(env: gym.Env) -> bool:
    """Whether ``env`` is a minigrid env whose observation is its symbolic image as a bare
    ``Box`` still declared as pixels (high 255): ``uint8`` ``(H, W, 3)`` with ``(H, W)`` the
    agent's view or the whole grid, and no RGB wrapper (``RGBImgObsWrapper``,
    ``RGBImgPartialObsWrapper``) in the way."""
    space = env.observation_space
    if not (is_minigrid_env(env) and isinstance(space, gym.spaces.Box)
            and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[2] == 3
            and float(space.high.max()) == 255):
        return False
    base = env.unwrapped
    view = getattr(base, "agent_view_size", None)
    if tuple(space.shape[:2]) not in {(view, view), (base.width, base.height)}:
        return False
    inner = env
    while isinstance(inner, gym.Wrapper):
        if type(inner).__name__.startswith("RGBImg"):
            return False
        inner = inner.env
    return True


class CodeImage(gym.ObservationWrapper, RecordConstructorArgs):
    """Declares the real bounds of a minigrid symbolic image observed alone
    (:func:`is_minigrid_code_image`): the space's ``high`` becomes
    :data:`MINIGRID_CODE_HIGH` per channel; the observations are unchanged.

    Raises:
        ValueError: ``env`` is not such an env.
    """

    def __init__(self, env: gym.Env) -> None:
        if not is_minigrid_code_image(env):
            raise ValueError(
                f"CodeImage wraps a minigrid env observed through its symbolic image alone (a "
                f"uint8 (H, W, 3) Box with high 255), got {env} with {env.observation_space}"
            )
        RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        shape = env.observation_space.shape
        high = np.broadcast_to(np.array(MINIGRID_CODE_HIGH, np.uint8), shape)
        self.observation_space = gym.spaces.Box(0, high, shape, np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation
