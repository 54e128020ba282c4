"""The Corridor task, batched: every env's corridor as a few integers and the agent's column."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from envs.batched.base import BatchedTaskEnv
from envs.corridor import COLOURS, CorridorEnv

__all__ = ["CorridorVectorEnv"]

# Object ids of a cell: empty, wall, red ball, blue ball, red door, blue door.
_EMPTY, _WALL, _BALL, _DOOR = 0, 1, 2, 4
_OBJECT_WORDS = ((), ("wall",), *(("ball", c) for c in COLOURS), *(("door", c) for c in COLOURS))
# Where the agent stands: next to the ball, inside, one cell before the doors, at the doors.
_START, _INSIDE, _BEFORE_END, _END = range(4)


def _view_ids(place: int, colour: int, north: int) -> np.ndarray:
    """The ``(3, 3)`` object ids around the agent for a place kind, ball and north door colours."""
    ids = np.full((3, 3), _WALL, np.int64)
    ids[1] = _EMPTY
    if place == _START:
        ids[1, 0] = _BALL + colour
    if place == _BEFORE_END:
        ids[0, 2], ids[2, 2] = _DOOR + north, _DOOR + 1 - north
    if place == _END:
        ids[0, 1], ids[2, 1], ids[1, 2] = _DOOR + north, _DOOR + 1 - north, _WALL
    return ids


class CorridorVectorEnv(BatchedTaskEnv):
    """``num_envs`` Corridor envs (:class:`envs.corridor.CorridorEnv`) stepped as arrays.

    Same observations, rewards, flags and infos as a ``SyncVectorEnv`` of the single env with the
    same seeds. Each env's state is its corridor length, the ball's colour, the north door's
    colour and the agent's column (the agent never leaves the corridor's row). The view takes
    one of 16 values (4 kinds of place times the 2 x 2 colours), so an observation is one row
    gather of a precomputed ``(16, 3, 3, V)`` table, and a step is a dozen array operations.

    Args:
        num_envs: number of envs, at least 1.
        min_length: shortest corridor, as :class:`~envs.corridor.CorridorEnv`.
        max_length: longest corridor, as :class:`~envs.corridor.CorridorEnv`.
        device: ``None``/``"numpy"`` (numpy arrays) or a torch device (tensors on it).
        render_mode: ``None`` or ``"rgb_array"`` (env 0's map).
        ring: episodes drawn ahead per env (see :class:`~envs.batched.base.BatchedTaskEnv`).
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (default, as gymnasium's) or
            ``AutoresetMode.SAME_STEP`` (see :class:`~envs.batched.base.BatchedTaskEnv`).
    """

    single_env_class = CorridorEnv
    param_size = 6

    def __init__(
        self,
        num_envs: int = 1,
        min_length: int = 3,
        max_length: int = 200,
        *,
        device: Any = None,
        render_mode: str | None = None,
        ring: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        super().__init__(
            num_envs,
            {"min_length": min_length, "max_length": max_length},
            device=device,
            render_mode=render_mode,
            ring=ring,
            autoreset_mode=autoreset_mode,
        )

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        # The draws of CorridorEnv._gen_grid, in its order (the reference of _draw_many).
        length = int(rng.integers(self.template.min_length, self.template.max_length + 1))
        colour = int(rng.integers(2))
        north = int(rng.integers(2))
        return np.array(_episode(length, colour, north), np.int64)

    def _draw_many(self, envs: np.ndarray, counts: np.ndarray) -> np.ndarray:
        # _draw through the generators' 32-bit words (see BatchedTaskEnv._integers_many): the
        # same numbers, as array work; then each episode's state row, as _episode
        low, high = self.template.min_length, self.template.max_length
        length, colour, north = self._integers_many(envs, counts, (high - low + 1, 2, 2)).T
        length = length + low
        return np.stack(
            [length, np.ones_like(length), 2 * length + 20, 2 * (north != colour),
             4 * (2 * colour + north), colour],
            axis=1,
        )

    def _allocate(self) -> None:
        xp, n = self.xp, self.num_envs
        index = self.template.word_index
        table = np.zeros((len(_OBJECT_WORDS), len(self.vocab)), np.uint8)
        for k, words in enumerate(_OBJECT_WORDS):
            table[k, [index[w] for w in words]] = 1
        self.word_table = xp.asarray(table, "uint8")
        # views[colours * 4 + place], colours = colour * 2 + north colour, place as _observe
        places = (_END, _BEFORE_END, _INSIDE, _START)
        views = np.stack(
            [table[_view_ids(p, c, d)] for c in range(2) for d in range(2) for p in places]
        )
        views[:, 1, 1, self._agent_word] = 1
        self._views = xp.asarray(views, "uint8")
        self._dx = xp.asarray([0, 1, 0, -1], "int64")
        self._even = xp.asarray([True, False, True, False], "bool")
        # One row of int64 state per env, so that a new episode is one row write.
        self.state = xp.zeros((n, self.param_size), "int64")
        self.length = self.state[:, 0]
        self.x = self.state[:, 1]
        self.max_steps = self.state[:, 2]  # CorridorEnv.time_limit
        self._good = self.state[:, 3]  # the action into the matching door (0 north, 2 south)
        self._colours4 = self.state[:, 4]  # 4 * (colour * 2 + north colour): the view's rows
        self.colour = self.state[:, 5]

    def _start(self, rows: Any, mask: Any, params: Any) -> None:
        self._set(self.state, rows, mask, params)

    def _reset_info(self) -> dict[str, Any]:
        return {"length": self.length, "max_steps": self.max_steps}  # copied by the base

    def _max_steps(self) -> Any:
        return self.max_steps

    def _transition(self, actions: Any) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
        x, length = self.x, self.length
        # North and south (even actions) lead into the doors from the last cell, else into walls.
        door = (x == length) & self._even[actions]
        success = door & (actions == self._good)
        # East stops at the end wall, west at the ball in the west wall.
        x += self._dx[actions]  # in place: a column of the state
        self.xp.clip(x, 1, length, out=x)
        reward = self.xp.astype(success, "float64")
        return reward, door, {"success": (success, door), "length": (length, door)}

    def _observe(self) -> Any:
        # place: 0 at the doors, 1 one cell before, 2 inside, 3 next to the ball (x == 1 is at
        # least 2 cells from the doors, as length >= 3)
        xp = self.xp
        place = xp.minimum(self.length - self.x, 2) + (self.x == 1)
        place += self._colours4
        if xp.is_numpy:
            return np.take(self._views, place, axis=0)
        return self._views[place]


def _episode(length: int, colour: int, north: int) -> tuple[int, ...]:
    """An episode's whole starting state (the columns of ``CorridorVectorEnv.state``)."""
    return length, 1, 2 * length + 20, 2 * (north != colour), 4 * (2 * colour + north), colour
