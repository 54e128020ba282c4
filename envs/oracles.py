"""Scripted policies for the tasks: oracles that remember, and memoryless baselines.

Every policy acts on observations only (the ``(3, 3, V)`` word grids, decoded with the env's
vocabulary) plus, for the oracles, what they chose to remember. The oracles show that each task
is solvable from its observations; the memoryless policies show the chance level an agent
without memory is held to. Usage::

    policy = make_scripted_policy(env, memory=True)
    obs, _ = env.reset(seed=0)
    policy.reset()
    obs, reward, terminated, truncated, info = env.step(policy.act(obs))
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

from envs.task import MOVES

__all__ = [
    "CorridorMemoryless",
    "CorridorOracle",
    "InstructionMemoryless",
    "InstructionOracle",
    "PortalMemoryless",
    "PortalOracle",
    "ScriptedPolicy",
    "TMazeMemoryless",
    "TMazeOracle",
    "make_scripted_policy",
]

NORTH, EAST, SOUTH, WEST = range(4)
# (row, col) of the neighbour cell in each move direction
_NEIGHBOUR = {NORTH: (0, 1), EAST: (1, 2), SOUTH: (2, 1), WEST: (1, 0)}


class ScriptedPolicy:
    """Base of the scripted policies: decodes observations with the env's vocabulary.

    Args:
        vocab: the env's vocabulary (``env.unwrapped.vocab``).
        seed: seed of the policy's own random choices (random walks, guesses).
    """

    def __init__(self, vocab: Sequence[str], seed: int | None = None) -> None:
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """Forgets everything: call at the start of each episode."""

    def act(self, obs: np.ndarray) -> int:
        """The action for observation ``obs``; subclasses override it."""
        return int(self.rng.integers(4))

    def words(self, obs: np.ndarray, row: int, col: int) -> set[str]:
        """The words of cell ``(row, col)`` of ``obs``."""
        return {self.vocab[i] for i in np.flatnonzero(obs[row, col])}

    def free(self, obs: np.ndarray, direction: int) -> bool:
        """Whether the neighbour cell in ``direction`` is empty."""
        return not obs[_NEIGHBOUR[direction]].any()

    def random_move(self, obs: np.ndarray) -> int:
        """A random move into an empty neighbour cell (any move if none is empty)."""
        moves = [d for d in range(4) if self.free(obs, d)] or list(range(4))
        return moves[int(self.rng.integers(len(moves)))]


# corridor


class CorridorOracle(ScriptedPolicy):
    """Reads the ball's colour on the first step, walks east, takes the matching door."""

    def reset(self) -> None:
        self.colour: str | None = None

    def _door_colour(self, obs: np.ndarray, direction: int) -> str | None:
        cell = self.words(obs, *_NEIGHBOUR[direction])
        return next(iter(cell - {"door"}), None) if "door" in cell else None

    def act(self, obs: np.ndarray) -> int:
        west = self.words(obs, *_NEIGHBOUR[WEST])
        if "ball" in west:
            self.colour = next(iter(west - {"ball"}))
        north, south = self._door_colour(obs, NORTH), self._door_colour(obs, SOUTH)
        if north is None or south is None:
            return EAST
        return SOUTH if south == self.colour else NORTH


class CorridorMemoryless(CorridorOracle):
    """Walks east and takes the north door: without memory, right half of the time."""

    def act(self, obs: np.ndarray) -> int:
        self.reset()  # nothing is carried from one step to the next
        return super().act(obs)


# portal

_SLOTS = ((2, 0), (4, 2), (2, 4), (0, 2))  # door slots of a room (x, y), walls at 0 and 4
_STAND = {(2, 0): (2, 1), (4, 2): (3, 2), (2, 4): (2, 3), (0, 2): (1, 2)}  # floor cell in front


class PortalOracle(ScriptedPolicy):
    """Remembers every room's doors and which of them was right or wrong.

    It tracks its own position in the room by dead reckoning (it arrives at the centre after
    every door), looks for the doors from two corners, tries an untried door, and after a
    mistake walks back through the rooms it solved.
    """

    def reset(self) -> None:
        self.pos = (2, 2)
        self.doors: dict[int, dict[tuple[int, int], str]] = {}  # room -> slot -> colour
        self.seen: dict[int, set[tuple[int, int]]] = {}  # room -> door slots looked at
        self.correct: dict[int, str] = {}
        self.wrong: dict[int, set[str]] = {}
        self.attempt: tuple[int, str] | None = None  # (room, colour) of the door just tried

    def _room(self, obs: np.ndarray) -> int:
        for w in self.words(obs, 1, 1):
            if w.startswith("room:"):
                return int(w[5:])
        raise ValueError("no room word in the centre cell: not a portal observation")

    def _go(self, target: tuple[int, int]) -> int:
        (x, y), (tx, ty) = self.pos, target
        if tx != x:
            return EAST if tx > x else WEST
        return SOUTH if ty > y else NORTH

    def act(self, obs: np.ndarray) -> int:
        room = self._room(obs)
        if self.attempt is not None:
            tried_room, colour = self.attempt
            if room == tried_room + 1:
                self.correct[tried_room] = colour
            else:
                self.wrong.setdefault(tried_room, set()).add(colour)
            self.pos, self.attempt = (2, 2), None
        doors = self.doors.setdefault(room, {})
        seen = self.seen.setdefault(room, set())
        for r in range(3):
            for c in range(3):
                slot = (self.pos[0] + c - 1, self.pos[1] + r - 1)
                if slot in _STAND:
                    seen.add(slot)
                    cell = self.words(obs, r, c)
                    if "door" in cell:
                        doors[slot] = next(iter(cell - {"door"}))
        wrong = self.wrong.get(room, set())
        choices = [s for s, col in doors.items() if col == self.correct.get(room)]
        choices = choices or [s for s, col in doors.items() if col not in wrong]
        if choices:
            slot = choices[0]
            if self.pos == _STAND[slot]:
                self.attempt = (room, doors[slot])
                return self._go(slot)
            target = _STAND[slot]
        else:  # look for the doors: the NW corner sees north and west, SE sees east and south
            unseen_nw = any(s not in seen for s in (_SLOTS[0], _SLOTS[3]))
            target = (1, 1) if unseen_nw and self.pos != (1, 1) else (3, 3)
        action = self._go(target)
        dx, dy = MOVES[action]
        self.pos = (self.pos[0] + dx, self.pos[1] + dy)
        return action


class PortalMemoryless(ScriptedPolicy):
    """Walks into any door it sees, lines itself up with a diagonal door, else walks at random."""

    def act(self, obs: np.ndarray) -> int:
        door = self.index["door"]
        for d in range(4):
            if obs[_NEIGHBOUR[d] + (door,)]:
                return d
        for r, c in ((0, 0), (0, 2), (2, 0), (2, 2)):
            if obs[r, c, door]:
                return EAST if c == 2 else WEST
        return self.random_move(obs)


# instruction


class InstructionOracle(ScriptedPolicy):
    """Remembers every instruction heard; sweeps the rooms and tells each target its subject.

    The sweep walks the corridor back and forth and steps into the centre of each room it
    passes, from where every character in the room is a neighbour.
    """

    def reset(self) -> None:
        self.pending: list[tuple[str, str]] = []  # (target, subject), oldest first
        self.direction = EAST
        self.phase = "corridor"  # corridor -> in -> out -> corridor
        self.count = 0
        self.just_out = False

    def hear(self, obs: np.ndarray) -> None:
        """Remembers the instruction heard in ``obs``, if any."""
        centre = self.words(obs, 1, 1)
        target = next((w[7:] for w in centre if w.startswith("target:")), None)
        subject = next((w[8:] for w in centre if w.startswith("subject:")), None)
        if target is not None and subject is not None:
            self.pending.append((target, subject))

    def neighbours(self, obs: np.ndarray) -> set[str]:
        """Names of the characters in the 8 cells around the agent."""
        names = {w[7:] for w in self.vocab if w.startswith("target:")}
        seen: set[str] = set()
        for r in range(3):
            for c in range(3):
                if (r, c) != (1, 1):
                    seen |= self.words(obs, r, c) & names
        return seen

    def tell(self, obs: np.ndarray) -> int | None:
        """The tell action for a remembered instruction whose target is a neighbour, if any."""
        near = self.neighbours(obs)
        for target, subject in self.pending:
            if target in near:
                # The env executes the oldest pending (neighbour, subject): forget that one.
                i = next(i for i, (t, s) in enumerate(self.pending) if s == subject and t in near)
                del self.pending[i]
                return len(MOVES) + self.index[f"subject:{subject}"] - self._first_subject
        return None

    @property
    def _first_subject(self) -> int:
        return min(i for w, i in self.index.items() if w.startswith("subject:"))

    def navigate(self, obs: np.ndarray) -> int:
        """The next move of the sweep."""
        if self.phase == "in":
            self.count += 1
            if self.count == 3:
                self.phase = "out"
                self.count = 0
            return NORTH
        if self.phase == "out":
            self.count += 1
            if self.count == 3:
                self.phase, self.just_out = "corridor", True
            return SOUTH
        if self.free(obs, NORTH) and not self.just_out and not self.free(obs, SOUTH):
            self.phase, self.count = "in", 1
            return NORTH
        self.just_out = False
        if not self.free(obs, self.direction):
            self.direction = WEST if self.direction == EAST else EAST
        return self.direction

    def act(self, obs: np.ndarray) -> int:
        self.hear(obs)
        action = self.tell(obs)
        return self.navigate(obs) if action is None else action


class InstructionMemoryless(InstructionOracle):
    """Walks at random; tells only what it hears while the target stands next to it.

    With ``guess=True`` it also tells a random subject to every character it meets (the
    chance level, ``1 / (n_characters - 1)``, that a memoryless agent can reach).
    """

    def __init__(self, vocab: Sequence[str], seed: int | None = None, guess: bool = False):
        self.guess = guess
        super().__init__(vocab, seed)

    def act(self, obs: np.ndarray) -> int:
        self.pending = []  # nothing is carried from one step to the next
        self.hear(obs)
        action = self.tell(obs)
        if action is not None:
            return action
        if self.guess and self.neighbours(obs):
            n_subjects = sum(w.startswith("subject:") for w in self.vocab)
            return len(MOVES) + int(self.rng.integers(n_subjects))
        return self.random_move(obs)


# t-maze


class TMazeOracle(ScriptedPolicy):
    """Hears the cue on the first step, walks east to the junction, turns the way it said."""

    def reset(self) -> None:
        self.turn = NORTH

    def act(self, obs: np.ndarray) -> int:
        centre = self.words(obs, 1, 1)
        if "cue:south" in centre or "cue:north" in centre:
            self.turn = SOUTH if "cue:south" in centre else NORTH
        at_junction = self.free(obs, NORTH) and self.free(obs, SOUTH)
        return self.turn if at_junction else EAST


class TMazeMemoryless(TMazeOracle):
    """Walks east and turns north at the junction: without memory, right half of the time."""

    def act(self, obs: np.ndarray) -> int:
        self.reset()  # nothing is carried from one step to the next
        return super().act(obs)


_POLICIES = {
    "CorridorEnv": (CorridorOracle, CorridorMemoryless),
    "PortalEnv": (PortalOracle, PortalMemoryless),
    "InstructionEnv": (InstructionOracle, InstructionMemoryless),
    "TMazeEnv": (TMazeOracle, TMazeMemoryless),
}


def make_scripted_policy(env: gym.Env, memory: bool = True, seed: int | None = None):
    """The oracle (``memory=True``) or memoryless scripted policy for ``env``'s task."""
    name = type(env.unwrapped).__name__
    if name not in _POLICIES:
        raise ValueError(f"env must be one of the tasks {sorted(_POLICIES)}, got {name}")
    oracle, memoryless = _POLICIES[name]
    return (oracle if memory else memoryless)(env.unwrapped.vocab, seed=seed)
