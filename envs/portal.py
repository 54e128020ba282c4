"""The multi-room Portal task (Expire-Span paper, section 5.2 and appendix A.2.2)."""

from __future__ import annotations

import functools
import itertools
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
from minigrid.core.constants import TILE_PIXELS
from minigrid.core.grid import Grid
from minigrid.core.world_object import Door

from envs.task import MOVES, TaskEnv, check_int
from envs.vector import TaskVectorEnv

__all__ = ["PortalEnv", "PortalVectorEnv"]

DOOR_COLOURS = ("red", "green", "blue", "purple", "yellow")
#: Offsets, from a room's top-left wall corner, of the door slot in the middle of each wall.
DOOR_SLOTS = ((2, 0), (4, 2), (2, 4), (0, 2))  # north, east, south, west
ROOM = 5  # rooms are 5x5, walls included (a 3x3 floor)
MAX_ROOMS = 1000
# A room's doors packed in one integer: the door colour at wall slot s (base-6 digit s: 0 none,
# 1 + colour) in bits 0-10, its kind (2 bits at 11 + 2 s: 1 correct, 2 wrong) in bits 11-18,
# bit 19 set once a mistake was made in the room. A room's draw picks one of the 480 rooms
# (ordered pair of slots x ordered pair of colours x which door is correct).
_COLOURS_MASK, _KIND, _MISTAKE, _NO_DOOR = (1 << 11) - 1, 11, 1 << 19, 20
_N_CODES = 6 ** len(DOOR_SLOTS)
_CENTRE = (ROOM // 2) * ROOM + ROOM // 2  # the cell (y * ROOM + x) where the agent arrives


@functools.cache
def _room_views() -> tuple[np.ndarray, np.ndarray]:
    """The distinct views in a room but its word, as object ids ``(K, 3, 3)`` (0 empty, 1 wall,
    2 + colour a door), and the view of each (cell, packed door colours), ``cell * 6**4 +
    colours``: the walls and the doors next to the cell are all a view depends on."""
    codes = np.arange(_N_CODES)
    ids = np.zeros((ROOM * ROOM, _N_CODES, 3, 3), np.int64)
    for y, x, r, c in itertools.product(range(1, ROOM - 1), range(1, ROOM - 1), range(3), range(3)):
        cx, cy = x + c - 1, y + r - 1
        edge = int(cx in (0, ROOM - 1) or cy in (0, ROOM - 1))
        if (cx, cy) in DOOR_SLOTS:
            digit = codes // 6 ** DOOR_SLOTS.index((cx, cy)) % 6
            ids[y * ROOM + x, :, r, c] = np.where(digit > 0, 1 + digit, edge)
        else:
            ids[y * ROOM + x, :, r, c] = edge
    unique, view_of = np.unique(ids.reshape(-1, 9), axis=0, return_inverse=True)
    return unique.reshape(-1, 3, 3), view_of.reshape(-1)


def _rooms() -> list[int]:
    codes = []
    for slots in itertools.permutations(range(len(DOOR_SLOTS)), 2):
        for colours in itertools.permutations(range(len(DOOR_COLOURS)), 2):
            for correct in (0, 1):
                codes.append(sum((colours[i] + 1) * 6 ** slots[i]
                                 + ((1 if i == correct else 2) << (_KIND + 2 * slots[i]))
                                 for i in (0, 1)))
    return codes


class PortalEnv(TaskEnv):
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
    paper's metric (figure 5) and the task's measure at an episode's end; ``info["room"]`` is
    the current room.

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

    step_info = ("room", "rooms_reached")
    metrics = ("rooms_reached",)

    def __init__(self, n_rooms: int = 50, max_steps: int = 1000, rooms_per_row: int = 10,
                 render_mode: str | None = None, tile_size: int = TILE_PIXELS) -> None:
        self.n_rooms = check_int("n_rooms", n_rooms, 2, MAX_ROOMS)
        self.rooms_per_row = check_int("rooms_per_row", rooms_per_row, 1)
        self.reward_range = (0.0, 0.1 * (self.n_rooms - 1))
        rooms = [f"room:{k}" for k in range(1, self.n_rooms + 1)]
        super().__init__(vocab=["door", *DOOR_COLOURS, *rooms], max_steps=max_steps,
                         render_mode=render_mode, tile_size=tile_size)

    def tables(self, xp: Any) -> SimpleNamespace:
        index = self.word_index
        words = np.zeros((2 + len(DOOR_COLOURS), len(self.vocab)), np.uint8)  # empty, wall, doors
        words[1, index["wall"]] = 1
        for k, colour in enumerate(DOOR_COLOURS):
            words[2 + k, [index["door"], index[colour]]] = 1
        # per (cell in the room, action): the cell moved to (doors and walls stop), and the
        # shift that reads the kind of the door walked into (_NO_DOOR: none)
        moved, shift = [], []
        for cell, (dx, dy) in itertools.product(range(ROOM * ROOM), MOVES):
            x, y = cell % ROOM + dx, cell // ROOM + dy
            inside = 1 <= x <= ROOM - 2 and 1 <= y <= ROOM - 2
            moved.append(y * ROOM + x if inside else cell)
            slot = DOOR_SLOTS.index((x, y)) if (x, y) in DOOR_SLOTS else None
            shift.append(_NO_DOOR if slot is None else _KIND + 2 * slot)
        ids, view_of = _room_views()
        views = words[ids]
        views[:, 1, 1, index["agent"]] = 1
        room_words = [0, *(index[f"room:{k}"] for k in range(1, self.n_rooms + 1))]
        return SimpleNamespace(
            moved=xp.table(moved), shift=xp.table(shift), views=xp.table(views),
            view_of=xp.table(view_of), room_word=xp.table(room_words),
            reward=xp.table([0.1 * k for k in range(self.n_rooms + 1)]),
            codes=xp.array(_rooms()), slots=xp.column(range(self.n_rooms)),
            has_doors=xp.column([1] * (self.n_rooms - 1) + [0]),
        )

    def start(self, s: Any) -> None:
        xp = s.xp
        h = xp.draw(xp.base(s.key, s.t), s.T.slots)  # a draw per room
        s.rooms = s.T.codes[xp.below(h, 480)] * s.T.has_doors  # (the last room has no doors)
        s.cur = xp.at(s.rooms, 0)  # the current room's doors
        s.room, s.rooms_reached, s.cell = 1, 1, _CENTRE

    def transition(self, s: Any) -> None:
        # (over every env: a door is walked into at a few steps in a hundred, but the few
        # lookups below cost less than selecting those envs and writing them back)
        xp, T = s.xp, s.T
        move = s.cell * 4 + s.action
        door = s.door = (s.cur >> T.shift[move]) & 3  # the kind of the door walked into, 0: none
        right, wrong, room, cur = door == 1, door == 2, s.room, s.cur
        # a correct door: reward 0.1 * k from room k to k + 1
        s.reward = T.reward[room] * right
        # a wrong door: a mistake in this room (the second ends the episode), to room 1
        repeated = wrong & (cur >= _MISTAKE)  # (the mistake bit is the highest)
        s.put("rooms", room - 1, cur | _MISTAKE, where=wrong)
        room = s.room = xp.where(wrong, 1, room + right)
        s.cur, s.cell = s.at("rooms", room - 1), xp.where(door > 0, _CENTRE, T.moved[move])
        s.rooms_reached = xp.maximum(s.rooms_reached, room)
        s.success = right & (room == self.n_rooms)
        s.terminated = s.success | repeated

    def observe(self, s: Any) -> Any:
        xp, T = s.xp, s.T
        obs = xp.view(T.views, T.view_of[s.cell * _N_CODES + (s.cur & _COLOURS_MASK)])
        xp.set_word(obs, T.room_word[s.room])
        return obs

    def doors(self, s: Any, room: int) -> list[tuple[tuple[int, int], str, bool]]:
        """Room ``room``'s (1-based) doors in state ``s``: their cell in the room (x, y),
        colour and whether each is the correct one."""
        code = int(s.rooms[room - 1])
        digits = [(code & _COLOURS_MASK) // 6**k % 6 for k in range(len(DOOR_SLOTS))]
        return [(DOOR_SLOTS[k], DOOR_COLOURS[d - 1], (code >> (_KIND + 2 * k)) & 3 == 1)
                for k, d in enumerate(digits) if d]

    def room_origin(self, room: int) -> tuple[int, int]:
        """Top-left wall corner of room ``room`` (1-based) on the drawn map."""
        row, col = divmod(room - 1, self.rooms_per_row)
        return ROOM * col, ROOM * row

    def draw(self, s: Any) -> tuple[Grid, tuple[int, int]]:
        cols = min(self.n_rooms, self.rooms_per_row)
        rows = math.ceil(self.n_rooms / cols)
        grid = Grid(ROOM * cols, ROOM * rows)
        for room in range(1, rows * cols + 1):
            ox, oy = self.room_origin(room)
            if room > self.n_rooms:  # the unused places of the last row are walled
                for y in range(oy, oy + ROOM):
                    grid.horz_wall(ox, y, ROOM)
                continue
            grid.wall_rect(ox, oy, ROOM, ROOM)
            for (dx, dy), colour, _ in self.doors(s, room):
                grid.set(ox + dx, oy + dy, Door(colour))
        ox, oy = self.room_origin(s.room)
        return grid, (ox + s.cell % ROOM, oy + s.cell // ROOM)


class PortalVectorEnv(TaskVectorEnv):
    """``num_envs`` :class:`PortalEnv` envs stepped as arrays (arguments: ``num_envs``, then the
    task's; see :class:`~envs.vector.TaskVectorEnv`)."""

    task_class = PortalEnv
