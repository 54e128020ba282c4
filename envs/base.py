"""Shared base of the word-grid memory tasks: minigrid maps seen as 3x3 bags of words.

Every task of this package observes the world the way the Expire-Span paper's gridworlds do
(appendix A.2.2): the agent sees the ``3 x 3`` cells around itself, itself in the centre, and every
object and property in a cell is a word. The observation is a binary ``uint8`` tensor of shape
``(3, 3, V)``: ``obs[row, col, w] == 1`` when word ``w`` is in the cell ``row - 1`` steps south and
``col - 1`` steps east of the agent (row 0 is north, column 0 is west). Facts that are not on the
map (a room number, a heard sentence) are words in the centre cell ``obs[1, 1]``.

The map itself is a minigrid :class:`~minigrid.core.grid.Grid` of minigrid objects, so the
renderer, colours and objects are minigrid's. Next to the grid the env keeps a ``(H, W, V)`` array
of the words of every cell, updated when a cell changes (:meth:`WordGridEnv.put`), so building an
observation is one ``3 x 3`` slice: no per-step scan of the map.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from minigrid.core.constants import TILE_PIXELS
from minigrid.core.grid import Grid
from minigrid.core.mission import MissionSpace
from minigrid.core.world_object import WorldObj
from minigrid.minigrid_env import MiniGridEnv

__all__ = ["MOVES", "MOVE_NAMES", "WordGridEnv", "check_int", "decode_obs"]

#: ``(dx, dy)`` of the four moves, in action order: north, east, south, west (y grows southwards).
MOVES: tuple[tuple[int, int], ...] = ((0, -1), (1, 0), (0, 1), (-1, 0))
MOVE_NAMES: tuple[str, ...] = ("north", "east", "south", "west")
# minigrid's drawing direction (0 east, 1 south, 2 west, 3 north) of each move, for the renderer.
_MOVE_TO_MINIGRID_DIR = (3, 0, 1, 2)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """Returns ``value`` as an int, or raises ``ValueError`` naming ``name`` and ``[low, high]``."""
    allowed = f"[{low}, {high}]" if high is not None else f">= {low}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be in {allowed}, got {value}")
    return int(value)


def _mission() -> str:
    # A module-level function (not a lambda) so that envs pickle.
    return "a memory task: see the env's docstring"


def decode_obs(obs: np.ndarray, vocab: Sequence[str]) -> list[list[list[str]]]:
    """Turns a ``(3, 3, V)`` observation into a 3x3 nested list of the words in each cell."""
    obs = np.asarray(obs)
    if obs.ndim != 3 or obs.shape[:2] != (3, 3) or obs.shape[2] != len(vocab):
        raise ValueError(f"obs must have shape (3, 3, {len(vocab)}), got {obs.shape}")
    return [[[vocab[w] for w in np.flatnonzero(obs[r, c])] for c in range(3)] for r in range(3)]


class WordGridEnv(MiniGridEnv):
    """A minigrid env observed as a ``(3, 3, V)`` bag of words, moved by four cardinal actions.

    Subclasses build the map in ``_gen_grid`` (setting ``self.grid`` and ``self.agent_pos``) and
    implement :meth:`_transition`; they may add words to the centre cell with
    :meth:`centre_words` and extra actions after the four moves.

    Args:
        vocab: every word the env can show; ``"agent"`` and ``"wall"`` are added if missing.
        width: map width in cells (a subclass may change the map size at each reset).
        height: map height in cells.
        max_steps: step limit of an episode (truncation); a subclass may change it at reset.
        n_task_actions: number of actions after the four moves (0 for pure navigation).
        render_mode: ``None``, ``"rgb_array"`` (the whole map, 3x3 view highlighted) or ``"human"``.
        tile_size: pixels per cell of a rendered frame.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 10}

    def __init__(
        self,
        *,
        vocab: Sequence[str],
        width: int,
        height: int,
        max_steps: int,
        n_task_actions: int = 0,
        render_mode: str | None = None,
        tile_size: int = TILE_PIXELS,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, "
                f"got {render_mode!r}"
            )
        check_int("tile_size", tile_size, 1, 512)
        super().__init__(
            mission_space=MissionSpace(mission_func=_mission),
            width=max(width, 3),
            height=max(height, 3),
            max_steps=int(max_steps),
            see_through_walls=True,
            agent_view_size=3,
            render_mode=render_mode,
            highlight=True,
            tile_size=tile_size,
        )
        words = list(dict.fromkeys(["agent", "wall", *vocab]))
        self.vocab: list[str] = words
        self.word_index: dict[str, int] = {w: i for i, w in enumerate(words)}
        self._agent_word = self.word_index["agent"]
        self.observation_space = spaces.Box(0, 1, (3, 3, len(words)), np.uint8)
        self.action_space = spaces.Discrete(len(MOVES) + n_task_actions)
        self._n_actions = len(MOVES) + n_task_actions
        self._words = np.zeros((3, 3, len(words)), np.uint8)
        self._obj_words_cache: dict[tuple, np.ndarray] = {}

    # words

    def object_words(self, obj: WorldObj) -> list[str]:
        """The words describing ``obj``: ``["wall"]`` for walls, else its type and colour.

        Objects may carry a ``words`` attribute (a tuple of strings) to describe themselves.
        """
        words = getattr(obj, "words", None)
        if words is not None:
            return list(words)
        if obj.type == "wall":
            return ["wall"]
        return [obj.type, obj.color]

    def _word_vector(self, obj: WorldObj | None) -> np.ndarray:
        if obj is None:
            return np.zeros(len(self.vocab), np.uint8)
        key = (type(obj), obj.encode(), getattr(obj, "words", None))
        vec = self._obj_words_cache.get(key)
        if vec is None:
            vec = np.zeros(len(self.vocab), np.uint8)
            vec[[self.word_index[w] for w in self.object_words(obj)]] = 1
            self._obj_words_cache[key] = vec
        return vec

    def put(self, x: int, y: int, obj: WorldObj | None) -> None:
        """Places ``obj`` (or nothing) at ``(x, y)``, keeping the words of the cell in sync."""
        self.grid.set(x, y, obj)
        if obj is not None:
            obj.init_pos = obj.init_pos or (x, y)
            obj.cur_pos = (x, y)
        self._words[y, x] = self._word_vector(obj)

    def _build_words(self) -> None:
        # One scan of the map per reset; steps only touch the cells that change.
        grid = self.grid
        self._words = np.zeros((grid.height, grid.width, len(self.vocab)), np.uint8)
        for idx, obj in enumerate(grid.grid):
            if obj is not None:
                y, x = divmod(idx, grid.width)
                self._words[y, x] = self._word_vector(obj)

    def centre_words(self) -> Iterable[int]:
        """Indices of the extra words shown in the agent's own cell this step (none by default)."""
        return ()

    def decode(self, obs: np.ndarray) -> list[list[list[str]]]:
        """The words in each of the 9 cells of ``obs``, as a 3x3 nested list (row 0 is north)."""
        return decode_obs(obs, self.vocab)

    # gymnasium API

    def gen_obs(self) -> np.ndarray:
        """The ``(3, 3, V)`` bag-of-words view around the agent."""
        x, y = self.agent_pos
        obs = self._words[y - 1 : y + 2, x - 1 : x + 2].copy()
        centre = obs[1, 1]
        centre[self._agent_word] = 1
        for w in self.centre_words():
            centre[w] = 1
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        gym.Env.reset(self, seed=seed)
        self.agent_pos = (-1, -1)
        self.agent_dir = 0
        self.carrying = None
        self.step_count = 0
        self._gen_grid(self.width, self.height)
        self.width, self.height = self.grid.width, self.grid.height
        self._build_words()
        x, y = self.agent_pos
        if not (1 <= x < self.width - 1 and 1 <= y < self.height - 1):
            raise RuntimeError(f"_gen_grid placed the agent at {self.agent_pos}, off the map")
        if self.render_mode == "human":
            self.render()
        return self.gen_obs(), self._reset_info()

    def _reset_info(self) -> dict[str, Any]:
        return {}

    def _check_action(self, action: Any) -> int:
        if isinstance(action, (int, np.integer)) and not isinstance(action, bool):
            a = int(action)
        elif (
            isinstance(action, np.ndarray)
            and action.shape in ((), (1,))
            and (np.issubdtype(action.dtype, np.integer))
        ):
            a = int(action.reshape(()))
        else:
            raise ValueError(
                f"action must be an integer in [0, {self._n_actions - 1}], got {action!r}"
            )
        if not 0 <= a < self._n_actions:
            raise ValueError(f"action must be in [0, {self._n_actions - 1}], got {a}")
        return a

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.agent_pos is None or self.agent_pos == (-1, -1):
            raise RuntimeError("call reset() before step()")
        a = self._check_action(action)
        self.step_count += 1
        reward, terminated, info = self._transition(a)
        truncated = not terminated and self.step_count >= self.max_steps
        if terminated or truncated:
            success = bool(info.get("success", False))
            info["success"] = success
            info["is_success"] = success  # the key stable-baselines3's Monitor logs
        if self.render_mode == "human":
            self.render()
        return self.gen_obs(), float(reward), terminated, truncated, info

    @abstractmethod
    def _transition(self, action: int) -> tuple[float, bool, dict[str, Any]]:
        """Applies a validated action: returns ``(reward, terminated, info)``.

        On a terminal step ``info["success"]`` says whether the task was solved; the base adds
        truncation at ``max_steps`` (with ``success`` False unless the subclass sets it).
        """

    # moves

    def move(self, action: int) -> WorldObj | None:
        """Moves the agent one cell in direction ``action`` (0-3) if the cell can be entered.

        Returns the object that blocked the move (a wall, a door, ...) or ``None`` if it moved.
        """
        dx, dy = MOVES[action]
        self.agent_dir = _MOVE_TO_MINIGRID_DIR[action]
        x, y = self.agent_pos
        nx, ny = x + dx, y + dy
        obj = self.grid.grid[ny * self.grid.width + nx]
        if obj is None or obj.can_overlap():
            self.agent_pos = (nx, ny)
            return None
        return obj

    # rendering

    def _view_mask(self) -> np.ndarray:
        mask = np.zeros((self.grid.width, self.grid.height), dtype=bool)
        x, y = self.agent_pos
        mask[max(x - 1, 0) : x + 2, max(y - 1, 0) : y + 2] = True
        return mask

    def get_full_render(self, highlight: bool, tile_size: int) -> np.ndarray:
        """The whole map with the agent's 3x3 view highlighted."""
        return self.grid.render(
            tile_size,
            self.agent_pos,
            self.agent_dir,
            highlight_mask=self._view_mask() if highlight else None,
        )

    def get_pov_render(self, tile_size: int) -> np.ndarray:
        """Only the agent's 3x3 view."""
        x, y = self.agent_pos
        view: Grid = self.grid.slice(x - 1, y - 1, 3, 3)
        return view.render(tile_size, (1, 1), self.agent_dir)
