"""The multi-room Portal task, batched: each env's doors, room and position as arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.batched.base import BatchedTaskEnv
from envs.portal import DOOR_COLOURS, DOOR_SLOTS, ROOM, PortalEnv, draw_doors

__all__ = ["PortalVectorEnv"]

# Object ids of a cell: empty, wall, then a door of each colour.
_EMPTY, _WALL, _DOOR = 0, 1, 2


class PortalVectorEnv(BatchedTaskEnv):
    """``num_envs`` Portal envs (:class:`envs.portal.PortalEnv`) stepped as arrays.

    Same observations, rewards, flags and infos as a ``SyncVectorEnv`` of the single env with the
    same seeds. Each env's state is its doors (per room: two wall slots, two colours, which one
    is correct), its mistakes per room, the current room and the agent's cell inside the room.
    Rooms are alike and never seen together, so the 3x3 view is computed from the room's 5x5
    template and its two doors rather than read from a map.

    Args:
        num_envs: number of envs, at least 1.
        n_rooms: number of rooms, as :class:`~envs.portal.PortalEnv`.
        max_steps: step limit of an episode, as :class:`~envs.portal.PortalEnv`.
        device: ``None``/``"numpy"`` (numpy arrays) or a torch device (tensors on it).
        render_mode: ``None`` or ``"rgb_array"`` (env 0's map).
        ring: episodes drawn ahead per env (see :class:`~envs.batched.base.BatchedTaskEnv`).
    """

    single_env_class = PortalEnv

    def __init__(
        self,
        num_envs: int = 1,
        n_rooms: int = 50,
        max_steps: int = 1000,
        *,
        device: Any = None,
        render_mode: str | None = None,
        ring: int | None = None,
    ) -> None:
        self.param_size = 5 * (PortalEnv(n_rooms=n_rooms, max_steps=max_steps).n_rooms - 1)
        super().__init__(
            num_envs,
            {"n_rooms": n_rooms, "max_steps": max_steps},
            device=device,
            render_mode=render_mode,
            ring=ring,
        )

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        slots, colours, correct = draw_doors(rng, self.template.n_rooms)
        return np.concatenate([slots.reshape(-1), colours.reshape(-1), correct])

    def _allocate(self) -> None:
        xp, n, rooms = self.xp, self.num_envs, self.template.n_rooms
        index = self.template.word_index
        table = np.zeros((2 + len(DOOR_COLOURS), len(self.vocab)), np.uint8)
        table[_WALL, index["wall"]] = 1
        for k, colour in enumerate(DOOR_COLOURS):
            table[_DOOR + k, [index["door"], index[colour]]] = 1
        self.word_table = xp.asarray(table, "uint8")
        self._room_words = xp.asarray([index[f"room:{k}"] for k in range(1, rooms + 1)], "int64")
        self._slot_x = xp.asarray([dx for dx, _ in DOOR_SLOTS], "int64")
        self._slot_y = xp.asarray([dy for _, dy in DOOR_SLOTS], "int64")
        self._offsets = xp.asarray([-1, 0, 1], "int64")
        self._dx = xp.asarray([0, 1, 0, -1], "int64")
        self._dy = xp.asarray([-1, 0, 1, 0], "int64")
        self.slots = xp.zeros((n, rooms - 1, 2), "int64")  # wall slot of each room's 2 doors
        self.colours = xp.zeros((n, rooms - 1, 2), "int64")
        self.correct = xp.zeros((n, rooms - 1), "int64")  # which of the 2 doors is correct
        self.mistakes = xp.zeros((n, rooms), "int64")
        self.room = xp.zeros((n,), "int64")  # 0-based
        self.rooms_reached = xp.full((n,), 1, "int64")
        self.x = xp.full((n,), ROOM // 2, "int64")  # position inside the room, walls at 0 and 4
        self.y = xp.full((n,), ROOM // 2, "int64")

    def _start(self, rows: Any, mask: Any, params: Any) -> None:
        m = self.template.n_rooms - 1
        count = params.shape[0]
        self._set(self.slots, rows, mask, params[:, : 2 * m].reshape(count, m, 2))
        self._set(self.colours, rows, mask, params[:, 2 * m : 4 * m].reshape(count, m, 2))
        self._set(self.correct, rows, mask, params[:, 4 * m :])
        self._set(self.mistakes, rows, mask, 0)
        self._set(self.room, rows, mask, 0)
        self._set(self.rooms_reached, rows, mask, 1)
        self._set(self.x, rows, mask, ROOM // 2)
        self._set(self.y, rows, mask, ROOM // 2)

    def _info(self) -> dict[str, Any]:
        return {"room": self.room + 1, "rooms_reached": self.rooms_reached}

    def _reset_info(self) -> dict[str, Any]:
        return self._info()

    def _doors(self) -> tuple[Any, Any, Any]:
        """``(x, y, has)`` of the current room's 2 doors: ``(N, 2)`` cells, ``(N,)`` bool."""
        last = self.template.n_rooms - 1
        has = self.room < last  # the last room has no doors
        slots = self.slots[self._rows, self.xp.where(has, self.room, 0)]  # (N, 2)
        return self._slot_x[slots], self._slot_y[slots], has

    def _transition(self, actions: Any) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
        xp, n_rooms = self.xp, self.template.n_rooms
        nx, ny = self.x + self._dx[actions], self.y + self._dy[actions]
        floor = (nx >= 1) & (nx <= ROOM - 2) & (ny >= 1) & (ny <= ROOM - 2)
        door_x, door_y, has = self._doors()
        hits = (door_x == nx[:, None]) & (door_y == ny[:, None]) & has[:, None]  # (N, 2)
        through = hits.any(axis=1)
        correct_door = self.correct[self._rows, xp.where(has, self.room, 0)]
        right = through & hits[self._rows, correct_door]
        wrong = through & ~right
        room = self.room
        # a correct door: reward 0.1 * k from room k to k + 1 (rooms numbered from 1)
        reward = xp.where(right, 0.1 * xp.asarray(room + 1, "float64"), 0.0)
        new_room = xp.where(right, room + 1, xp.where(wrong, 0, room))
        self.rooms_reached = xp.maximum(self.rooms_reached, new_room + 1)
        # a wrong door: one more mistake in this room, back to room 1
        mistakes = self.mistakes[self._rows, room] + xp.asarray(wrong, "int64")
        self.mistakes[self._rows, room] = mistakes
        self.x = xp.where(through, ROOM // 2, xp.where(floor, nx, self.x))
        self.y = xp.where(through, ROOM // 2, xp.where(floor, ny, self.y))
        self.room = new_room
        success = right & (new_room == n_rooms - 1)
        terminated = success | (wrong & (mistakes >= 2))
        always = xp.full((self.num_envs,), True, "bool")
        info = {key: (value, always) for key, value in self._info().items()}
        info["success"] = (success, terminated)
        return reward, terminated, info

    def _cells(self) -> tuple[Any, Any]:
        xp = self.xp
        cx = (self.x[:, None] + self._offsets)[:, None, :]  # (N, 1, 3) columns of the view
        cy = (self.y[:, None] + self._offsets)[:, :, None]  # (N, 3, 1) rows
        border = (cx == 0) | (cx == ROOM - 1) | (cy == 0) | (cy == ROOM - 1)
        ids = xp.where(border, _WALL, xp.zeros(border.shape, "int64"))
        door_x, door_y, has = self._doors()
        colours = self.colours[self._rows, xp.where(has, self.room, 0)]  # (N, 2)
        for i in range(2):
            at = (cx == door_x[:, i, None, None]) & (cy == door_y[:, i, None, None])
            ids = xp.where(at & has[:, None, None], _DOOR + colours[:, i, None, None], ids)
        return ids, self._room_words[self.room][:, None]
