"""The multi-room Portal task (Expire-Span paper, section 5.2 and appendix A.2.2)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from minigrid.core.constants import TILE_PIXELS
from minigrid.core.grid import Grid
from minigrid.core.world_object import Door

from envs.base import WordGridEnv, check_int

__all__ = ["PortalEnv", "draw_doors"]

DOOR_COLOURS = ("red", "green", "blue", "purple", "yellow")
#: Offsets, from a room's top-left wall corner, of the door slot in the middle of each wall.
DOOR_SLOTS = ((2, 0), (4, 2), (2, 4), (0, 2))  # north, east, south, west
ROOM = 5  # rooms are 5x5, walls included (a 3x3 floor)
MAX_ROOMS = 1000


def draw_doors(rng: np.random.Generator, n_rooms: int) -> tuple[np.ndarray, ...]:
    """The doors of an episode from one draw of ``rng``: ``(slots, colours, correct)``.

    ``slots[r]`` (2 distinct indices of ``DOOR_SLOTS``) and ``colours[r]`` (2 distinct indices of
    ``DOOR_COLOURS``) are room ``r``'s two doors, ``correct[r]`` (0 or 1) its correct one, for the
    ``n_rooms - 1`` rooms with doors. One array draw per episode (random permutations by argsort
    of uniforms) keeps resets cheap, and lets the batched env replay them exactly.
    """
    u = rng.random((n_rooms - 1, len(DOOR_SLOTS) + len(DOOR_COLOURS) + 1))
    slots = np.argsort(u[:, : len(DOOR_SLOTS)], axis=1, kind="stable")[:, :2]
    colours = np.argsort(u[:, len(DOOR_SLOTS) : -1], axis=1, kind="stable")[:, :2]
    return slots, colours, (u[:, -1] < 0.5).astype(np.int64)


class PortalEnv(WordGridEnv):
    """
    ## Description

    ``n_rooms`` rooms are connected in sequence by portals. Every room is 5x5 (walls included,
    a 3x3 floor) and has two exit doors of different colours, each in the middle of a different
    wall. One door of each room is correct: walking into it teleports the agent to the centre of
    the next room. The other teleports it back to the centre of room 1. Which door is correct,
    the two colours and the two walls are drawn at random per room at reset and fixed for the
    episode. Nothing shows which door is correct: it can only be found by trial and error, and
    must then be remembered to get back through the rooms after a mistake. The agent starts in
    the centre of room 1.

    Choices of ours where the paper is silent: door colours come from five minigrid colours
    (red, green, blue, purple, yellow); doors sit in the middle of a wall, so they are seen only
    from the floor cell next to that wall's middle or a corner; the last room has no doors.
    The map drawn by ``render`` lays the rooms out in rows of ``rooms_per_row``; rooms are not
    connected on the map, only through the doors.

    ## Observation

    ``Box(0, 1, (3, 3, V), uint8)``: the words of the 3x3 cells around the agent (row 0 north,
    column 0 west). Vocabulary: ``agent``, ``wall``, ``door``, the five colours, and
    ``room:1`` ... ``room:<n_rooms>``; the current room's word is in the centre cell.

    ## Actions

    ``Discrete(4)``: 0 north, 1 east, 2 south, 3 west. Moving into a wall leaves the agent in
    place; moving into a door goes through it.

    ## Rewards

    ``0.1 * k`` when the agent passes from room ``k`` to room ``k + 1`` (rooms numbered from 1);
    0 otherwise. Reward range ``[0, 0.1 * (n_rooms - 1)]``. The paper discounts with 0.98.

    ## Termination

    - Terminated when the agent reaches the last room (``info["success"] = True``) or makes its
      second mistake (wrong door) in the same room (``info["success"] = False``).
    - Truncated after ``max_steps`` steps (``info["success"] = False``).

    ``info["rooms_reached"]`` (every step) is the highest room number reached so far, the
    paper's metric (figure 5); ``info["room"]`` is the current room.

    ## Registered configurations

    - ``MemoRL/Portal-v0``: 50 rooms, 1000 steps, the paper's setting.
    - ``MemoRL/Portal-R5-v0``: 5 rooms, 200 steps (tests, quick runs).

    Args:
        n_rooms: number of rooms in the sequence, in ``[2, 1000]``.
        max_steps: step limit of an episode, at least 1.
        rooms_per_row: rooms per row of the rendered map, at least 1.
        render_mode: ``None``, ``"rgb_array"`` or ``"human"``.
        tile_size: pixels per cell of a rendered frame.
    """

    def __init__(
        self,
        n_rooms: int = 50,
        max_steps: int = 1000,
        rooms_per_row: int = 10,
        render_mode: str | None = None,
        tile_size: int = TILE_PIXELS,
    ) -> None:
        self.n_rooms = check_int("n_rooms", n_rooms, 2, MAX_ROOMS)
        check_int("max_steps", max_steps, 1)
        self.rooms_per_row = check_int("rooms_per_row", rooms_per_row, 1)
        cols = min(self.n_rooms, self.rooms_per_row)
        rows = math.ceil(self.n_rooms / cols)
        self._n_slots = rows * cols
        super().__init__(
            vocab=["door", *DOOR_COLOURS, *(f"room:{k}" for k in range(1, self.n_rooms + 1))],
            width=ROOM * cols,
            height=ROOM * rows,
            max_steps=max_steps,
            render_mode=render_mode,
            tile_size=tile_size,
        )
        self.reward_range = (0.0, 0.1 * (self.n_rooms - 1))
        self._room_words = [self.word_index[f"room:{k}"] for k in range(1, self.n_rooms + 1)]
        self.room = 0  # current room, 0-based
        self.rooms_reached = 1
        self.mistakes: list[int] = []
        # door cell -> (room index, is the correct door)
        self._portals: dict[tuple[int, int], tuple[int, bool]] = {}
        self._wall_cells: list | None = None  # cached walls of the map, shared by episodes
        self._wall_words: np.ndarray | None = None

    def room_origin(self, room: int) -> tuple[int, int]:
        """Top-left wall corner of room ``room`` (0-based) on the map."""
        row, col = divmod(room, self.rooms_per_row)
        return ROOM * col, ROOM * row

    def room_centre(self, room: int) -> tuple[int, int]:
        """Centre floor cell of room ``room`` (0-based), where the agent arrives."""
        x, y = self.room_origin(room)
        return x + 2, y + 2

    def _walls(self, width: int, height: int) -> Grid:
        """The rooms' walls, the part of the map that every episode shares."""
        grid = Grid(width, height)
        for room in range(self.n_rooms):
            ox, oy = self.room_origin(room)
            grid.wall_rect(ox, oy, ROOM, ROOM)
        # unused room slots of the last row stay walled
        for room in range(self.n_rooms, self._n_slots):
            ox, oy = self.room_origin(room)
            for y in range(oy, oy + ROOM):
                grid.horz_wall(ox, y, ROOM)
        return grid

    def _gen_grid(self, width: int, height: int) -> None:
        rng = self.np_random
        if self._wall_cells is None:
            self._wall_cells = self._walls(width, height).grid
        # Walls never change: the new map shares them with the cached one (a shallow copy).
        self.grid = Grid(width, height)
        self.grid.grid = list(self._wall_cells)
        self._portals = {}
        slots, colours, correct_doors = draw_doors(rng, self.n_rooms)
        for room in range(self.n_rooms - 1):  # the last room has no doors
            ox, oy = self.room_origin(room)
            correct = int(correct_doors[room])
            for i in range(2):
                dx, dy = DOOR_SLOTS[int(slots[room, i])]
                door = Door(DOOR_COLOURS[int(colours[room, i])])
                door.cur_pos = (ox + dx, oy + dy)
                self.grid.set(ox + dx, oy + dy, door)
                self._portals[(ox + dx, oy + dy)] = (room, i == correct)
        self.room = 0
        self.rooms_reached = 1
        self.mistakes = [0] * self.n_rooms
        self.agent_pos = self.room_centre(0)
        self.agent_dir = 0

    def _build_words(self) -> None:
        # The words of the walls are computed once; each reset only writes the door cells.
        if self._wall_words is None:
            super()._build_words()
            self._wall_words = self._words.copy()
            for x, y in self._portals:
                self._wall_words[y, x] = self._word_vector(self._wall_cells[y * self.width + x])
        self._words = self._wall_words.copy()
        for x, y in self._portals:
            self._words[y, x] = self._word_vector(self.grid.get(x, y))

    def centre_words(self) -> Iterable[int]:
        return (self._room_words[self.room],)

    def correct_door(self, room: int) -> tuple[int, int]:
        """Map position of the correct door of room ``room`` (0-based; not the last room)."""
        for pos, (r, ok) in self._portals.items():
            if r == room and ok:
                return pos
        raise ValueError(f"room must be in [0, {self.n_rooms - 2}], got {room}")

    def _info(self) -> dict[str, Any]:
        return {"room": self.room + 1, "rooms_reached": self.rooms_reached}

    def _reset_info(self) -> dict[str, Any]:
        return self._info()

    def _transition(self, action: int) -> tuple[float, bool, dict[str, Any]]:
        blocker = self.move(action)
        if blocker is None or blocker.type != "door":
            return 0.0, False, self._info()
        room, correct = self._portals[blocker.cur_pos]
        if correct:
            reward = 0.1 * (room + 1)  # rooms are numbered from 1 in the paper
            self.room = room + 1
            self.rooms_reached = max(self.rooms_reached, self.room + 1)
            self.agent_pos = self.room_centre(self.room)
            done = self.room == self.n_rooms - 1
            info = self._info()
            if done:
                info["success"] = True
            return reward, done, info
        self.mistakes[room] += 1
        self.room = 0
        self.agent_pos = self.room_centre(0)
        info = self._info()
        if self.mistakes[room] >= 2:
            info["success"] = False
            return 0.0, True, info
        return 0.0, False, info
