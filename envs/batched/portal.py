"""The multi-room Portal task, batched: each env's doors, room and position as arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from envs.base import MOVES
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
    Each env keeps the object ids of its rooms' cells and, per room and wall slot, whether a
    door is there and whether it is correct: a step is a few table lookups (the cell moved to
    and the door walked into, per cell and action) and the view is one gather of 9 cells.

    Args:
        num_envs: number of envs, at least 1.
        n_rooms: number of rooms, as :class:`~envs.portal.PortalEnv`.
        max_steps: step limit of an episode, as :class:`~envs.portal.PortalEnv`.
        device: ``None``/``"numpy"`` (numpy arrays) or a torch device (tensors on it).
        render_mode: ``None`` or ``"rgb_array"`` (env 0's map).
        ring: episodes drawn ahead per env (see :class:`~envs.batched.base.BatchedTaskEnv`).
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (default, as gymnasium's) or
            ``AutoresetMode.SAME_STEP`` (see :class:`~envs.batched.base.BatchedTaskEnv`).
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
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        self.param_size = 5 * (PortalEnv(n_rooms=n_rooms, max_steps=max_steps).n_rooms - 1)
        super().__init__(
            num_envs,
            {"n_rooms": n_rooms, "max_steps": max_steps},
            device=device,
            render_mode=render_mode,
            ring=ring,
            autoreset_mode=autoreset_mode,
        )

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        slots, colours, correct = draw_doors(rng, self.template.n_rooms)
        return np.concatenate([slots.reshape(-1), colours.reshape(-1), correct])

    def _draw_many(self, rngs: list[np.random.Generator]) -> np.ndarray:
        # draw_doors for many episodes: the same uniforms, one stable argsort for all.
        m = self.template.n_rooms - 1
        shape = (m, len(DOOR_SLOTS) + len(DOOR_COLOURS) + 1)
        u = np.stack([rng.random(shape) for rng in rngs])  # (E, m, 10)
        slots = np.argsort(u[:, :, : len(DOOR_SLOTS)], axis=2, kind="stable")[:, :, :2]
        colours = np.argsort(u[:, :, len(DOOR_SLOTS) : -1], axis=2, kind="stable")[:, :, :2]
        correct = (u[:, :, -1] < 0.5).astype(np.int64)
        count = len(rngs)
        return np.concatenate(
            [slots.reshape(count, -1), colours.reshape(count, -1), correct], axis=1
        )

    def _allocate(self) -> None:
        xp, n, rooms = self.xp, self.num_envs, self.template.n_rooms
        index = self.template.word_index
        table = np.zeros((2 + len(DOOR_COLOURS) + rooms, len(self.vocab)), np.uint8)
        table[_WALL, index["wall"]] = 1
        for k, colour in enumerate(DOOR_COLOURS):
            table[_DOOR + k, [index["door"], index[colour]]] = 1
        # then the agent's own cell in each room: the agent and the room's word
        self._centre_id = _DOOR + len(DOOR_COLOURS)
        for k in range(rooms):
            table[self._centre_id + k, [self._agent_word, index[f"room:{k + 1}"]]] = 1
        self.word_table = xp.asarray(table, "uint8")
        cells = ROOM * ROOM  # a room's cells, y * ROOM + x
        template = np.zeros((ROOM, ROOM), np.int64)
        template[[0, -1]] = template[:, [0, -1]] = _WALL
        self._template = xp.asarray(template.reshape(-1), "int64")
        self._slot_cell = xp.asarray([y * ROOM + x for x, y in DOOR_SLOTS], "int64")
        # per (cell, action): the cell moved to on the floor (doors and walls stop), and the
        # door slot walked into (1 + slot, 0 for none)
        moved = np.zeros((cells, 4), np.int64)
        hit = np.zeros((cells, 4), np.int64)
        for cell in range(cells):
            y, x = divmod(cell, ROOM)
            for a, (dx, dy) in enumerate(MOVES):
                nx, ny = x + dx, y + dy
                inside = 1 <= nx <= ROOM - 2 and 1 <= ny <= ROOM - 2
                moved[cell, a] = ny * ROOM + nx if inside else cell
                if (nx, ny) in DOOR_SLOTS:
                    hit[cell, a] = 1 + DOOR_SLOTS.index((nx, ny))
        self._moved = xp.asarray(moved.reshape(-1), "int64")
        self._hit = xp.asarray(hit.reshape(-1), "int64")
        window = [
            [min(max(cell // ROOM + dy, 0), ROOM - 1) * ROOM + min(max(cell % ROOM + dx, 0), 4)
             for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
            for cell in range(cells)
        ]  # fmt: skip
        self._window = xp.asarray(window, "int64")  # (25, 9) cells of the view (floor only)
        self._rewards = xp.asarray([0.1 * (k + 1) for k in range(rooms)], "float64")
        self._centre_cell = (ROOM // 2) * ROOM + ROOM // 2
        self.cells = xp.zeros((n, rooms * cells), "int64")  # object id of each room's cells
        self.doors = xp.zeros((n, rooms * 5), "int64")  # per room: 0, then each wall slot's
        # door: 0 none, 1 the correct door, 2 the wrong one
        self.mistakes = xp.zeros((n, rooms), "int64")
        self.room = xp.zeros((n,), "int64")  # 0-based
        self.rooms_reached = xp.full((n,), 1, "int64")
        self.pos = xp.full((n,), self._centre_cell, "int64")  # cell inside the room

    def _start(self, rows: Any, mask: Any, params: Any) -> None:
        xp, rooms = self.xp, self.template.n_rooms
        m, count = rooms - 1, params.shape[0]
        if count == 0:
            return
        slots = params[:, : 2 * m].reshape(count, m, 2)
        colours = params[:, 2 * m : 4 * m].reshape(count, m, 2)
        correct = params[:, 4 * m :]
        cells = xp.zeros((count, rooms, ROOM * ROOM), "int64") + self._template
        env_i = xp.arange(count)[:, None, None]
        room_i = xp.arange(m)[None, :, None]
        cells[env_i, room_i, self._slot_cell[slots]] = _DOOR + colours
        doors = xp.zeros((count, rooms, 5), "int64")
        which = xp.arange(2)[None, None, :]
        doors[env_i, room_i, 1 + slots] = xp.where(which == correct[:, :, None], 1, 2)
        self._set(self.cells, rows, mask, cells.reshape(count, -1))
        self._set(self.doors, rows, mask, doors.reshape(count, -1))
        self._set(self.mistakes, rows, mask, 0)
        self._set(self.room, rows, mask, 0)
        self._set(self.rooms_reached, rows, mask, 1)
        self._set(self.pos, rows, mask, self._centre_cell)

    def _info(self) -> dict[str, Any]:
        return {"room": self.room + 1, "rooms_reached": self.rooms_reached}

    def _reset_info(self) -> dict[str, Any]:
        return self._info()

    def _transition(self, actions: Any) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
        xp, n_rooms = self.xp, self.template.n_rooms
        move = self.pos * 4 + actions
        door = xp.take(self.doors, (self.room * 5 + self._hit[move])[:, None])[:, 0]
        right, wrong = door == 1, door == 2
        through = door > 0
        room = self.room
        # a correct door: reward 0.1 * k from room k to k + 1 (rooms numbered from 1)
        reward = right * self._rewards[room]
        # a wrong door: one more mistake in this room, back to room 1
        mistakes = xp.take(self.mistakes, room[:, None])[:, 0] + wrong
        self.mistakes[self._rows, room] = mistakes
        room = (room + right) * ~wrong
        self.room = room
        self.pos = xp.where(through, self._centre_cell, self._moved[move])
        self.rooms_reached = xp.maximum(self.rooms_reached, room + 1)
        success = right & (room == n_rooms - 1)
        terminated = success | (wrong & (mistakes >= 2))
        info = {key: (value, None) for key, value in self._info().items()}
        info["success"] = (success, terminated)
        return reward, terminated, info

    def _observe(self) -> Any:
        xp = self.xp
        view = xp.take(self.cells, self.room[:, None] * (ROOM * ROOM) + self._window[self.pos])
        view[:, 4] = self._centre_id + self.room  # the agent's own cell, always floor
        if xp.is_numpy:
            return np.take(self.word_table, view, axis=0).reshape(self.num_envs, 3, 3, -1)
        return self.word_table[view].reshape(self.num_envs, 3, 3, -1)
