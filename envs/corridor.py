"""The Corridor task (Expire-Span paper, section 5.2 and appendix A.2.2)."""

from __future__ import annotations

from typing import Any

from minigrid.core.constants import TILE_PIXELS
from minigrid.core.grid import Grid
from minigrid.core.world_object import Ball, Door, Wall

from envs.base import WordGridEnv, check_int

__all__ = ["CorridorEnv"]

COLOURS = ("red", "blue")
#: Longest corridor accepted by the constructor (a sanity bound, far above the paper's 200).
MAX_LENGTH = 10_000


class CorridorEnv(WordGridEnv):
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
    (inclusive); the episode's length and time limit are in ``info["length"]`` and
    ``info["max_steps"]`` at reset.

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

    def __init__(
        self,
        min_length: int = 3,
        max_length: int = 200,
        render_mode: str | None = None,
        tile_size: int = TILE_PIXELS,
    ) -> None:
        self.min_length = check_int("min_length", min_length, 3, MAX_LENGTH)
        self.max_length = check_int("max_length", max_length, self.min_length, MAX_LENGTH)
        self.length = self.max_length
        self.colour = COLOURS[0]
        super().__init__(
            vocab=["ball", "door", *COLOURS],
            width=self.max_length + 2,
            height=5,
            max_steps=self.time_limit(self.max_length),
            render_mode=render_mode,
            tile_size=tile_size,
        )
        self.reward_range = (0.0, 1.0)
        self._doors: dict[tuple[int, int], str] = {}

    @staticmethod
    def time_limit(length: int) -> int:
        """Steps before truncation for a corridor of ``length`` cells: ``2 * length + 20``."""
        return 2 * length + 20

    def _gen_grid(self, width: int, height: int) -> None:
        rng = self.np_random
        length = int(rng.integers(self.min_length, self.max_length + 1))
        colour = COLOURS[int(rng.integers(2))]
        north_colour = COLOURS[int(rng.integers(2))]
        south_colour = COLOURS[1 - COLOURS.index(north_colour)]

        self.length, self.colour = length, colour
        self.max_steps = self.time_limit(length)
        self.grid = Grid(length + 2, 5)
        for y in (0, 1, 3, 4):
            self.grid.horz_wall(0, y)
        self.grid.set(length + 1, 2, Wall())
        self.grid.set(0, 2, Ball(colour))
        self.grid.set(length, 1, Door(north_colour))
        self.grid.set(length, 3, Door(south_colour))
        self._doors = {(length, 1): north_colour, (length, 3): south_colour}
        self.agent_pos = (1, 2)
        self.agent_dir = 0

    def _reset_info(self) -> dict[str, Any]:
        return {"length": self.length, "max_steps": self.max_steps}

    def _transition(self, action: int) -> tuple[float, bool, dict[str, Any]]:
        blocker = self.move(action)
        if blocker is not None and blocker.type == "door":
            success = blocker.color == self.colour
            return (1.0 if success else 0.0), True, {"success": success, "length": self.length}
        return 0.0, False, {}
