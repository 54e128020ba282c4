"""The Corridor task, batched: every env's corridor as three integers and the agent's column."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.batched.base import BatchedTaskEnv
from envs.corridor import COLOURS, CorridorEnv

__all__ = ["CorridorVectorEnv"]

# Object ids of a cell: empty, wall, red ball, blue ball, red door, blue door.
_EMPTY, _WALL, _BALL, _DOOR = 0, 1, 2, 4
_OBJECT_WORDS = ((), ("wall",), *(("ball", c) for c in COLOURS), *(("door", c) for c in COLOURS))


class CorridorVectorEnv(BatchedTaskEnv):
    """``num_envs`` Corridor envs (:class:`envs.corridor.CorridorEnv`) stepped as arrays.

    Same observations, rewards, flags and infos as a ``SyncVectorEnv`` of the single env with the
    same seeds. Each env's state is its corridor length, the ball's colour, the north door's
    colour and the agent's column (the agent never leaves the corridor's row), so the 3x3 view
    is computed from four integers per env rather than read from a map.

    Args:
        num_envs: number of envs, at least 1.
        min_length: shortest corridor, as :class:`~envs.corridor.CorridorEnv`.
        max_length: longest corridor, as :class:`~envs.corridor.CorridorEnv`.
        device: ``None``/``"numpy"`` (numpy arrays) or a torch device (tensors on it).
        render_mode: ``None`` or ``"rgb_array"`` (env 0's map).
        ring: episodes drawn ahead per env (see :class:`~envs.batched.base.BatchedTaskEnv`).
    """

    single_env_class = CorridorEnv
    param_size = 3

    def __init__(
        self,
        num_envs: int = 1,
        min_length: int = 3,
        max_length: int = 200,
        *,
        device: Any = None,
        render_mode: str | None = None,
        ring: int | None = None,
    ) -> None:
        super().__init__(
            num_envs,
            {"min_length": min_length, "max_length": max_length},
            device=device,
            render_mode=render_mode,
            ring=ring,
        )

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        # The draws of CorridorEnv._gen_grid, in its order.
        length = int(rng.integers(self.template.min_length, self.template.max_length + 1))
        colour = int(rng.integers(2))
        north = int(rng.integers(2))
        return np.array([length, colour, north], np.int64)

    def _allocate(self) -> None:
        xp, n = self.xp, self.num_envs
        index = self.template.word_index
        table = np.zeros((len(_OBJECT_WORDS), len(self.vocab)), np.uint8)
        for k, words in enumerate(_OBJECT_WORDS):
            table[k, [index[w] for w in words]] = 1
        self.word_table = xp.asarray(table, "uint8")
        self.length = xp.full((n,), 3, "int64")
        self.colour = xp.zeros((n,), "int64")
        self.north = xp.zeros((n,), "int64")  # colour of the north door; the south one is 1 - it
        self.x = xp.full((n,), 1, "int64")
        self._offsets = xp.asarray([-1, 0, 1], "int64")

    def _start(self, rows: Any, mask: Any, params: Any) -> None:
        self._set(self.length, rows, mask, params[:, 0])
        self._set(self.colour, rows, mask, params[:, 1])
        self._set(self.north, rows, mask, params[:, 2])
        self._set(self.x, rows, mask, 1)

    def _reset_info(self) -> dict[str, Any]:
        return {"length": self.length, "max_steps": self._max_steps()}

    def _max_steps(self) -> Any:
        return 2 * self.length + 20  # CorridorEnv.time_limit

    def _transition(self, actions: Any) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
        xp, x, length = self.xp, self.x, self.length
        # North and south lead into the doors from the last cell, else into walls.
        door = ((actions == 0) | (actions == 2)) & (x == length)
        door_colour = xp.where(actions == 0, self.north, 1 - self.north)
        success = door & (door_colour == self.colour)
        # East stops at the end wall, west at the ball in the west wall.
        east = (actions == 1) & (x < length)
        west = (actions == 3) & (x > 1)
        self.x = xp.where(east, x + 1, xp.where(west, x - 1, x))
        reward = xp.where(success, 1.0, xp.zeros(success.shape, "float64"))
        return reward, door, {"success": (success, door), "length": (length, door)}

    def _cells(self) -> tuple[Any, Any]:
        xp = self.xp
        cols = self.x[:, None] + self._offsets  # (N, 3), map columns x - 1 .. x + 1
        length = self.length[:, None]
        at_doors = cols == length
        north = xp.where(at_doors, _DOOR + self.north[:, None], _WALL)
        south = xp.where(at_doors, _DOOR + 1 - self.north[:, None], _WALL)
        middle = xp.where(
            cols == 0, _BALL + self.colour[:, None], xp.where(cols == length + 1, _WALL, _EMPTY)
        )
        ids = xp.stack([north, middle, south], axis=1)
        return ids, xp.zeros((self.num_envs, 0), "int64")
