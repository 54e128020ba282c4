"""A task written once: its rules, the gymnasium single env that runs them, and their conventions.

Every task of this package observes the world the way the Expire-Span paper's gridworlds do
(appendix A.2.2): the agent sees the ``3 x 3`` cells around itself, itself in the centre, and every
object and property in a cell is a word. The observation is a binary ``uint8`` tensor of shape
``(3, 3, V)``: ``obs[row, col, w] == 1`` when word ``w`` is in the cell ``row - 1`` steps south and
``col - 1`` steps east of the agent (row 0 is north, column 0 is west). Facts that are not on the
map (a room number, a heard sentence) are words in the centre cell ``obs[1, 1]``.

A task is a subclass of :class:`TaskEnv` that validates its arguments in ``__init__`` and writes
its rules as five methods over a state ``s`` (see :mod:`envs.arrays`): :meth:`~TaskEnv.tables`
(constants), :meth:`~TaskEnv.start` (a new episode), :meth:`~TaskEnv.transition` (one step),
:meth:`~TaskEnv.observe` and :meth:`~TaskEnv.draw` (the minigrid map of one env, for pictures).
The class is the gymnasium single env (its state one :class:`~envs.arrays.One`), and
``envs.vector.TaskVectorEnv`` runs the same methods on a :class:`~envs.arrays.Batch` of envs.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from minigrid.core.constants import TILE_PIXELS
from minigrid.core.grid import Grid

from envs.arrays import MASK32, One, Scalar, mix

__all__ = ["MOVES", "TaskEnv", "check_int", "check_number", "decode_obs", "seed_key"]

#: ``(dx, dy)`` of the four moves, in action order: north, east, south, west (y grows southwards).
MOVES: tuple[tuple[int, int], ...] = ((0, -1), (1, 0), (0, 1), (-1, 0))
_MINIGRID_DIR = (3, 0, 1, 2)  # minigrid's drawing direction (0 east, 1 south, ...) of each move


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int, or a ``ValueError`` naming ``name`` and ``[low, high]``."""
    allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be in {allowed}, got {value}")
    return int(value)


def check_number(name: str, value: Any, low: float = 0.0, high: float = 1.0) -> float:
    """``value`` as a float in ``[low, high]``, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    if not low <= float(value) <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return float(value)


def seed_key(seed: int) -> int:
    """The 32-bit key of an env seeded ``seed`` (any non-negative int): its 32-bit limbs mixed.
    Env ``i`` of a batch seeded ``s`` gets ``seed_key(s + i)``, as ``SyncVectorEnv`` seeds."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    seed, key = int(seed), 0x9E3779B9
    while True:
        key = mix(key ^ (seed & MASK32))
        seed >>= 32
        if not seed:
            return key


def decode_obs(obs: np.ndarray, vocab: Sequence[str]) -> list[list[list[str]]]:
    """Turns a ``(3, 3, V)`` observation into a 3x3 nested list of the words in each cell."""
    obs = np.asarray(obs)
    if obs.ndim != 3 or obs.shape[:2] != (3, 3) or obs.shape[2] != len(vocab):
        raise ValueError(f"obs must have shape (3, 3, {len(vocab)}), got {obs.shape}")
    return [[[vocab[w] for w in np.flatnonzero(obs[r, c])] for c in range(3)] for r in range(3)]


def object_words(obj: Any) -> list[str]:
    """The words of a minigrid object on a drawn map: ``wall``, else its type and colour (or
    its own ``words``): what the agent sees in that cell."""
    words = getattr(obj, "words", None)
    if words is not None:
        return list(words)
    return ["wall"] if obj.type == "wall" else [obj.type, obj.color]


class TaskEnv(gym.Env, metaclass=abc.ABCMeta):
    """A word-grid memory task: the rules, written once, and the single env that runs them.

    Subclasses call ``super().__init__`` with the vocabulary and implement the rules (below).
    State fields every task has: ``key`` (the episode's random key), ``t`` (steps taken),
    ``action`` (this step's); :meth:`transition` sets ``reward`` (float), ``terminated`` and
    ``success`` (bools) and the fields named in the info tuples. What keeps the rules one code
    for one env and for batches (``envs/arrays.py``): :meth:`start` sets every field the other
    rules read (a batch's ended episode is overwritten, not cleared); floats go through
    ``xp.float`` (a torch bool times a Python float is float32); an index must be valid for
    every env, also those a masked sub-state leaves alone (accelerators compute them all).

    Args:
        vocab: every word the env can show; ``"agent"`` and ``"wall"`` come first.
        max_steps: step limit of an episode (truncation), unless :meth:`time_limit` says more.
        n_task_actions: number of actions after the four moves (0 for pure navigation).
        render_mode: ``None``, ``"rgb_array"`` (the whole map, 3x3 view highlighted) or ``"human"``.
        tile_size: pixels per cell of a rendered frame.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 10}
    step_info: ClassVar[tuple[str, ...]] = ()
    """Fields reported in ``info`` at every step and at reset."""
    reset_info: ClassVar[tuple[str, ...]] = ()
    """Fields reported in ``info`` at reset only (besides :attr:`step_info`)."""
    metrics: ClassVar[tuple[str, ...]] = ()
    """The task's own measures: numeric fields reported (with ``success``) at an episode's end."""

    def __init__(self, *, vocab: Sequence[str], max_steps: int, n_task_actions: int = 0,
                 render_mode: str | None = None, tile_size: int = TILE_PIXELS) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or "
                             f"None, got {render_mode!r}")
        self.render_mode = render_mode
        self.tile_size = check_int("tile_size", tile_size, 1, 512)
        self.max_steps = check_int("max_steps", max_steps, 1)
        self.vocab: list[str] = list(dict.fromkeys(["agent", "wall", *vocab]))
        self.word_index: dict[str, int] = {w: i for i, w in enumerate(self.vocab)}
        self.observation_space = spaces.Box(0, 1, (3, 3, len(self.vocab)), np.uint8)
        self.action_space = spaces.Discrete(len(MOVES) + n_task_actions)
        self._n_actions = len(MOVES) + n_task_actions
        self._xp = Scalar()
        self._fixed_limit = type(self).time_limit is TaskEnv.time_limit  # (max_steps)
        self._tables = self.tables(self._xp)
        self.state: One | None = None
        self._seed_key = self._episode = 0
        self._window: Any = None

    # the rules (a subclass writes them once; see envs.arrays)

    def tables(self, xp: Scalar) -> Any:
        """Constant tables of the rules in namespace ``xp`` (``s.T`` in the other methods)."""
        return None

    @abc.abstractmethod
    def start(self, s: Any) -> None:
        """Begins an episode: sets every field of the task from the draws of ``s.key``."""

    @abc.abstractmethod
    def transition(self, s: Any) -> None:
        """One step of ``s.action`` (``s.t`` already counts it)."""

    @abc.abstractmethod
    def observe(self, s: Any) -> Any:
        """The ``(3, 3, V)`` observation (``(N, 3, 3, V)`` for a batch)."""

    def time_limit(self, s: Any) -> Any:
        """Steps before truncation (a field, or :attr:`max_steps`)."""
        return self.max_steps

    @abc.abstractmethod
    def draw(self, s: One) -> tuple[Grid, tuple[int, int]]:
        """One env's map as a minigrid grid, and the agent's cell: what ``render`` shows."""

    # gymnasium API

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)  # np_random, for gymnasium's contract; the rules use keyed draws
        if seed is not None:
            self._seed_key, self._episode = seed_key(seed), 0
        elif self.state is None:
            self._seed_key, self._episode = int(self.np_random.integers(1 << 32)), 0
        else:
            self._episode += 1
        s = One(self._xp, self._tables)
        s.key, s.t = self._xp.hash(self._seed_key, self._episode), 0
        self.start(s)
        self.state = s
        if self.render_mode == "human":
            self.render()
        return self.observe(s), {k: _value(getattr(s, k)) for k in self.reset_keys}

    @property
    def reset_keys(self) -> tuple[str, ...]:
        """The keys of the reset's info."""
        return self.step_info + self.reset_info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        s = self.state
        if s is None:
            raise RuntimeError("call reset() before step()")
        s.action = self._check_action(action)
        s.t += 1
        self.transition(s)
        terminated = bool(s.terminated)
        truncated = not terminated and s.t >= (
            self.max_steps if self._fixed_limit else self.time_limit(s))
        info = {k: _value(getattr(s, k)) for k in self.step_info}
        if terminated or truncated:
            info.update((k, _value(getattr(s, k))) for k in self.metrics)
            info["success"] = info["is_success"] = bool(s.success)  # (SB3's Monitor key)
        if self.render_mode == "human":
            self.render()
        return self.observe(s), float(s.reward), terminated, bool(truncated), info

    def _check_action(self, action: Any) -> int:
        if type(action) is int and 0 <= action < self._n_actions:  # (the usual case)
            return action
        if isinstance(action, np.ndarray) and action.shape in ((), (1,)) \
                and np.issubdtype(action.dtype, np.integer):
            action = action.reshape(()).item()
        if isinstance(action, bool) or not isinstance(action, (int, np.integer)):
            raise ValueError(f"action must be an integer in [0, {self._n_actions - 1}], "
                             f"got {action!r}")
        if not 0 <= action < self._n_actions:
            raise ValueError(f"action must be in [0, {self._n_actions - 1}], got {action}")
        return int(action)

    def decode(self, obs: np.ndarray) -> list[list[list[str]]]:
        """The words in each of the 9 cells of ``obs``, as a 3x3 nested list (row 0 is north)."""
        return decode_obs(obs, self.vocab)

    # rendering

    def frame(self, s: One) -> np.ndarray:
        """The picture of state ``s``: the whole map, the agent's 3x3 view highlighted."""
        grid, (x, y) = self.draw(s)
        mask = np.zeros((grid.width, grid.height), dtype=bool)
        mask[max(x - 1, 0) : x + 2, max(y - 1, 0) : y + 2] = True
        action = getattr(s, "action", 1)
        direction = _MINIGRID_DIR[action] if action < len(MOVES) else 0
        return grid.render(self.tile_size, (x, y), direction, highlight_mask=mask)

    def render(self) -> np.ndarray | None:
        if self.render_mode is None or self.state is None:
            return None
        frame = self.frame(self.state)
        if self.render_mode == "rgb_array":
            return frame
        import pygame  # minigrid's window library

        if self._window is None:
            pygame.display.init()
            self._window = pygame.display.set_mode(frame.shape[1::-1])
        self._window.blit(pygame.surfarray.make_surface(frame.transpose(1, 0, 2)), (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        return None

    def close(self) -> None:
        if self._window is not None:
            import pygame

            pygame.display.quit()
            self._window = None


def _value(x: Any) -> Any:
    # info values as SyncVectorEnv batches them: Python bools (numpy's would become objects)
    return bool(x) if isinstance(x, (bool, np.bool_)) else x
