"""The Passive T-Maze (Ni et al. 2023, "When do transformers shine in RL?", section 5.1)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from minigrid.core.constants import TILE_PIXELS
from minigrid.core.grid import Grid
from minigrid.core.world_object import Goal, Wall

from envs.task import TaskEnv, check_int, check_number
from envs.vector import TaskVectorEnv

__all__ = ["TMazeEnv", "TMazeVectorEnv"]

MAX_LENGTH = 100_000
CUES = ("cue:north", "cue:south")


class TMazeEnv(TaskEnv):
    """
    ## Description

    The probe of memory length of Ni et al. (2023): the agent starts at the west end of a
    corridor of ``length`` cells; on the first step only it hears a cue, ``cue:north`` or
    ``cue:south``. At the east end, the junction opens north and south: walking into the side
    the cue named ends the episode with reward +1, the other side with 0. Memory length
    ``length``, credit assignment length 1: the goal reward comes only from the turn at the
    junction, ``length`` steps after the cue.

    Map (length 4; ``A`` agent, ``#`` walls, ``.`` floor; the two floor cells at the junction
    are the exits)::

        #######
        #####.#
        #A....#
        #####.#
        #######

    As in Ni et al.'s passive T-maze: the time limit is ``length + 1`` steps, exactly what
    walking straight to the junction and turning takes, and on each other step that leaves the
    agent behind that schedule (fewer cells walked east than steps taken) the reward is
    ``-penalty``, ``1 / length`` by default (their choice: the penalties sum to at most -1).
    ``penalty=0`` leaves the turn's reward alone. Where ours differs: their agent observes its
    position code (start, corridor, junction), ours the 3x3 view (which shows the west wall at
    the start and the exits from the last corridor cell); their episode always runs ``length +
    1`` steps, ours ends at the turn (the same for an agent on schedule); their cue is a number,
    ours a word in the centre cell.

    ## Observation

    ``Box(0, 1, (3, 3, V), uint8)``: the words of the 3x3 cells around the agent (row 0 north,
    column 0 west). Vocabulary: ``agent``, ``wall``, ``cue:north``, ``cue:south``; the cue is in
    the centre cell of the first observation (after reset) only.

    ## Actions

    ``Discrete(4)``: 0 north, 1 east, 2 south, 3 west. Moving into a wall leaves the agent in
    place; north or south at the junction ends the episode.

    ## Rewards

    +1 for the turn the cue named, 0 for the other; ``-penalty`` on each non-final step behind
    schedule. Reward range ``[-penalty, 1]``.

    ## Termination

    - Terminated at the turn; ``info["success"]`` is True for the side the cue named.
    - Truncated after ``length + 1`` steps (``info["success"] = False``).

    ## Registered configurations

    - ``MemoRL/TMaze-v0``: length 100.
    - ``MemoRL/TMaze-L10-v0``, ``-L50-v0``: short (tests, quick runs).
    - ``MemoRL/TMaze-L1500-v0``, ``-L3000-v0``: the length a transformer solved in Ni et al.,
      and twice it.

    Args:
        length: corridor cells from the start to the junction (the memory length), in
            ``[1, 100000]``.
        penalty: the cost of a step behind schedule, in ``[0, 1]``; ``None``: ``1 / length``.
        render_mode: ``None``, ``"rgb_array"`` or ``"human"``.
        tile_size: pixels per cell of a rendered frame.
    """

    def __init__(self, length: int = 100, penalty: float | None = None,
                 render_mode: str | None = None, tile_size: int = TILE_PIXELS) -> None:
        self.length = check_int("length", length, 1, MAX_LENGTH)
        self.penalty = 1.0 / self.length if penalty is None else check_number("penalty", penalty)
        self.reward_range = (-self.penalty, 1.0)
        super().__init__(vocab=CUES, max_steps=self.length + 1, render_mode=render_mode,
                         tile_size=tile_size)

    def tables(self, xp: Any) -> SimpleNamespace:
        # The view at column x depends on (x == 1, x == length, x == length + 1): 8 codes.
        views = np.zeros((8, 3, 3, len(self.vocab)), np.uint8)
        for x in {1, 2, self.length - 1, self.length, self.length + 1} - {0, self.length + 2}:
            code = (x == 1) + 2 * (x == self.length) + 4 * (x == self.length + 1)
            for row in range(3):
                for col in range(3):
                    if self._wall(x + col - 1, row + 1):
                        views[code, row, col, self.word_index["wall"]] = 1
            views[code, 1, 1, self.word_index["agent"]] = 1
        return SimpleNamespace(views=xp.table(views), dx=xp.table([0, 1, 0, -1]),
                               vertical=xp.table([True, False, True, False]),
                               cue=xp.table([self.word_index[c] for c in CUES]))

    def _wall(self, x: int, y: int) -> bool:
        # the corridor is row 2, cells 1 .. length + 1 (the junction); the exits (length + 1, 1|3)
        return not ((y == 2 and 1 <= x <= self.length + 1) or (x == self.length + 1 and y % 2))

    def start(self, s: Any) -> None:
        xp = s.xp
        north = xp.below(xp.draw(xp.base(s.key, s.t), 0), 2) == 0
        s.good = xp.where(north, 0, 2)  # the turn the cue names: 0 north, 2 south
        s.x = 1

    def transition(self, s: Any) -> None:
        xp, a = s.xp, s.action
        turn = (s.x == self.length + 1) & s.T.vertical[a]
        s.terminated = turn
        s.success = turn & (a == s.good)
        s.x = xp.minimum(xp.maximum(s.x + s.T.dx[a], 1), self.length + 1)
        behind = (s.x - 1 < s.t) & (s.t <= self.length)  # (not at the last step)
        s.reward = xp.float(s.success) - xp.float(behind) * self.penalty

    def observe(self, s: Any) -> Any:
        xp, length = s.xp, self.length
        obs = xp.view(s.T.views, (s.x == 1) + 2 * (s.x == length) + 4 * (s.x == length + 1))
        cue = s.T.cue[s.good // 2]
        xp.set_word(obs, xp.where(s.t == 0, cue, self.word_index["agent"]))
        return obs

    def draw(self, s: Any) -> tuple[Grid, tuple[int, int]]:
        grid = Grid(self.length + 3, 5)
        for x in range(self.length + 3):
            for y in range(5):
                if self._wall(x, y):
                    grid.set(x, y, Wall())
        goal, goal.words = Goal(), ()  # the exit the cue names, drawn (the agent sees nothing)
        grid.set(self.length + 1, 1 + s.good, goal)
        return grid, (s.x, 2)


class TMazeVectorEnv(TaskVectorEnv):
    """``num_envs`` :class:`TMazeEnv` envs stepped as arrays (arguments: ``num_envs``, then the
    task's; see :class:`~envs.vector.TaskVectorEnv`)."""

    task_class = TMazeEnv
