"""The Corridor task (Expire-Span paper, section 5.2 and appendix A.2.2)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from minigrid.core.constants import TILE_PIXELS
from minigrid.core.grid import Grid
from minigrid.core.world_object import Ball, Door, Wall

from envs.task import TaskEnv, check_int
from envs.vector import TaskVectorEnv

__all__ = ["CorridorEnv", "CorridorVectorEnv"]

COLOURS = ("red", "blue")
#: Longest corridor accepted by the constructor (a sanity bound, far above the paper's 200).
MAX_LENGTH = 10_000
_EMPTY, _WALL, _BALL, _DOOR = 0, 1, 2, 4  # object ids: + colour for the ball and the doors


class CorridorEnv(TaskEnv):
    """
    ## Description

    The agent starts at the west end of a corridor one cell wide, next to a ball that is red or
    blue at random. At the east end, the corridor's last cell has two doors, one red and one blue,
    one in the wall above it and one in the wall below it, in random order. Walking into the door
    whose colour matches the ball ends the episode with reward +1; walking into the other door
    ends it with reward 0. The ball is visible only from the first cell (it sits in the west wall,
    next to the start), the doors only from the last two cells: with ``min_length >= 3`` the two
    are never in view together, so the agent must carry one bit down the whole corridor.

    Map (length 4; ``B`` ball, ``A`` agent, ``D`` doors, ``#`` walls)::

        ######
        ####D#
        BA...#
        ####D#
        ######

    ## Observation

    ``Box(0, 1, (3, 3, V), uint8)``: the words of the 3x3 cells around the agent (row 0 north,
    column 0 west). Vocabulary: ``agent``, ``wall``, ``ball``, ``door``, ``red``, ``blue``
    (``env.unwrapped.vocab``). The agent's own cell always holds ``agent``.

    ## Actions

    ``Discrete(4)``: 0 north, 1 east, 2 south, 3 west. Moving into a wall or the ball leaves the
    agent in place; moving into a door ends the episode.

    ## Rewards

    +1 for the door matching the ball's colour, 0 otherwise (reward range ``[0, 1]``).

    ## Termination

    - Terminated when the agent walks into either door; ``info["success"]`` is True for the
      matching door.
    - Truncated after ``2 * length + 20`` steps (``length`` = number of corridor cells, the
      shortest solution takes ``length`` steps), with ``info["success"] = False``.

    Each episode's corridor length is drawn uniformly from ``[min_length, max_length]``
    (inclusive); it is ``info["length"]`` at reset and at the episode's end (the task's measure:
    success per length), the time limit ``info["max_steps"]`` at reset.

    ## Registered configurations

    - ``MemoRL/Corridor-v0``: lengths ``U(3, 200)``, the paper's setting.
    - ``MemoRL/Corridor-L10-v0``: length fixed at 10 (tests, quick training runs).
    - ``MemoRL/Corridor-Short-v0``: lengths ``U(3, 20)``.

    Args:
        min_length: shortest corridor (number of cells the agent can walk), at least 3.
        max_length: longest corridor, in ``[min_length, 10000]``.
        render_mode: ``None``, ``"rgb_array"`` or ``"human"``.
        tile_size: pixels per cell of a rendered frame.
    """

    reset_info = ("length", "max_steps")
    metrics = ("length",)

    def __init__(self, min_length: int = 3, max_length: int = 200,
                 render_mode: str | None = None, tile_size: int = TILE_PIXELS) -> None:
        self.min_length = check_int("min_length", min_length, 3, MAX_LENGTH)
        self.max_length = check_int("max_length", max_length, self.min_length, MAX_LENGTH)
        self.reward_range = (0.0, 1.0)
        super().__init__(vocab=["ball", "door", *COLOURS], max_steps=2 * self.max_length + 20,
                         render_mode=render_mode, tile_size=tile_size)

    def tables(self, xp: Any) -> SimpleNamespace:
        words = np.zeros((6, len(self.vocab)), np.uint8)  # per object id
        for k, names in enumerate([(), ("wall",), *(("ball", c) for c in COLOURS),
                                   *(("door", c) for c in COLOURS)]):
            words[k, [self.word_index[w] for w in names]] = 1
        views = []  # per 4 * (2 * ball colour + north door colour) + place (0 at the doors, 1
        for colour in range(2):  # one cell before, 2 inside, 3 next to the ball)
            for north in range(2):
                for place in range(4):
                    ids = np.full((3, 3), _WALL)
                    ids[1] = _EMPTY
                    if place == 3:
                        ids[1, 0] = _BALL + colour
                    elif place == 1:
                        ids[0, 2], ids[2, 2] = _DOOR + north, _DOOR + 1 - north
                    elif place == 0:
                        ids[0, 1], ids[2, 1], ids[1, 2] = _DOOR + north, _DOOR + 1 - north, _WALL
                    views.append(words[ids])
        views = np.stack(views)
        views[:, 1, 1, self.word_index["agent"]] = 1
        return SimpleNamespace(views=xp.table(views), dx=xp.table([0, 1, 0, -1]),
                               vertical=xp.table([True, False, True, False]),
                               slots=xp.column([0, 1, 2]))

    def start(self, s: Any) -> None:
        xp = s.xp
        h = xp.draw(xp.base(s.key, s.t), s.T.slots)
        s.length = self.min_length + xp.below(h[0], self.max_length - self.min_length + 1)
        colour, north = xp.below(h[1], 2), xp.below(h[2], 2)
        s.x = 1  # the agent's column
        s.max_steps = 2 * s.length + 20
        s.good = 2 * (north != colour)  # the action into the matching door: 0 north, 2 south
        s.view_base = 4 * (2 * colour + north)  # the rows of this episode's views

    def transition(self, s: Any) -> None:
        xp, a = s.xp, s.action
        # North and south lead into the doors from the last cell, else into walls.
        door = (s.x == s.length) & s.T.vertical[a]
        s.terminated = door
        s.success = door & (a == s.good)
        s.reward = xp.float(s.success)
        # East stops at the end wall, west at the ball in the west wall.
        s.x = xp.minimum(xp.maximum(s.x + s.T.dx[a], 1), s.length)

    def observe(self, s: Any) -> Any:
        # (x == 1 is at least 2 cells from the doors: the length is at least 3)
        place = s.xp.minimum(s.length - s.x, 2) + (s.x == 1) + s.view_base
        return s.xp.view(s.T.views, place)

    def time_limit(self, s: Any) -> Any:
        return s.max_steps

    def draw(self, s: Any) -> tuple[Grid, tuple[int, int]]:
        length, colour, north = s.length, s.view_base // 8, s.view_base // 4 % 2
        grid = Grid(length + 2, 5)
        for y in (0, 1, 3, 4):
            grid.horz_wall(0, y)
        grid.set(length + 1, 2, Wall())
        grid.set(0, 2, Ball(COLOURS[colour]))
        grid.set(length, 1, Door(COLOURS[north]))
        grid.set(length, 3, Door(COLOURS[1 - north]))
        return grid, (s.x, 2)


class CorridorVectorEnv(TaskVectorEnv):
    """``num_envs`` :class:`CorridorEnv` envs stepped as arrays (arguments: ``num_envs``, then
    the task's; see :class:`~envs.vector.TaskVectorEnv`)."""

    task_class = CorridorEnv
