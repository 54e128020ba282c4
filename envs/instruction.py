"""The Instruction task: a gridworld version of the Expire-Span paper's LIGHT instruction task."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, TILE_PIXELS
from minigrid.core.grid import Grid
from minigrid.core.world_object import WorldObj
from minigrid.utils.rendering import fill_coords, point_in_circle, point_in_triangle

from envs.base import MOVES, WordGridEnv, check_int
from envs.batched.keyed_random import KEY_RANGE, below, bernoulli

__all__ = ["CHARACTER_NAMES", "Character", "InstructionEnv"]

CHARACTER_NAMES = ("butler", "guard", "cook", "maid", "knight", "merchant", "priest", "farmer")
_CHARACTER_RGB = (
    (90, 200, 230), (200, 30, 30), (240, 160, 0), (230, 120, 200),
    (160, 160, 200), (30, 160, 60), (240, 240, 240), (140, 90, 40),
)  # fmt: skip
#: Words spoken by passers-by between instructions; character names appear too, as
#: ``say:<name>`` (a different word from ``target:<name>``), so that only the role tag counts.
DISTRACTOR_WORDS = (
    "hello", "bread", "sword", "rain", "gold", "ale", "horse", "king",
    "market", "dragon", "river", "song", *CHARACTER_NAMES,
)  # fmt: skip


class Character(WorldObj):
    """A person standing in a room, shown by its name word (e.g. ``butler``)."""

    def __init__(self, kind: int) -> None:
        super().__init__("ball", "grey")
        self.kind = kind
        self.words = (CHARACTER_NAMES[kind],)

    def encode(self) -> tuple[int, int, int]:
        # A state code of its own per kind, so minigrid's tile cache never mixes it with a ball.
        return (OBJECT_TO_IDX["ball"], COLOR_TO_IDX["grey"], 3 + self.kind)

    def render(self, img: np.ndarray) -> None:
        colour = _CHARACTER_RGB[self.kind]
        fill_coords(img, point_in_triangle((0.2, 0.92), (0.8, 0.92), (0.5, 0.35)), colour)
        fill_coords(img, point_in_circle(0.5, 0.28, 0.17), colour)


class InstructionEnv(WordGridEnv):
    """
    ## Description

    A gridworld version of the paper's instruction task ("tell the butler that the town official
    wants to see them", executed when the butler is present, about 950 distractor lines later).
    ``n_rooms`` rooms (5x5, a 3x3 floor) stand in a row along a corridor, each opening onto it by
    a doorway. One character of each of ``n_characters`` kinds (butler, guard, cook, maid, knight,
    merchant, priest, farmer) stands in the rooms; each step, each character moves to a random
    free cell of another room with probability ``move_prob``.

    At random steps (probability ``instruction_prob``) a messenger's instruction is heard for one
    step: the words ``target:<who>`` and ``subject:<whom>`` in the agent's centre cell (target and
    subject are different kinds). The target then leaves the world for ``execute_delay`` steps and
    comes back to a random room: that is the gap between hearing an instruction and being able to
    execute it. On other steps, with probability ``distractor_prob``, a passer-by's word
    ``say:<word>`` is heard instead. Instructions are only given while there is time to execute
    them: up to step ``episode_length - execute_delay - answer_window``, and only to characters
    who are present; so every instruction given is reachable, and the success ratio is
    ``instructions_done / instructions_given``. Several instructions can be pending at once.

    Randomness: each reset draws one 32-bit key from ``np_random``; every random choice of the
    episode (where characters stand and move, instructions, distractors) is a hash of the key,
    the step and the choice's slot (``envs.batched.keyed_random``), so the batched version
    (``envs.batched.InstructionVectorEnv``) replays the same episodes for all envs at once.

    Choices of ours: the agent starts at the west end of the corridor; characters never stand in
    the corridor, a doorway, the floor cell inside a doorway or a room's centre, so every room can
    be entered and every character in a room is next to an agent standing in its centre.

    ## Observation

    ``Box(0, 1, (3, 3, V), uint8)``: the words of the 3x3 cells around the agent (row 0 north,
    column 0 west). Vocabulary: ``agent``, ``wall``, the character names, ``target:<name>``,
    ``subject:<name>`` and ``say:<word>`` (``env.unwrapped.vocab``); heard words are in the
    centre cell.

    ## Actions

    ``Discrete(4 + n_characters)``: 0 north, 1 east, 2 south, 3 west (into a wall or a character
    = stay), then ``4 + s`` = ``tell:<CHARACTER_NAMES[s]>``: tell a neighbouring character (one
    of the 8 cells around the agent) that subject ``s`` wants to see them.

    ## Rewards

    A tell of subject ``s`` while a character ``c`` with a pending instruction ``(c, s)`` is a
    neighbour executes it (the oldest such, if several): reward +1. A tell that matches no pending
    instruction of a neighbour costs ``-tell_penalty``, and every neighbour that was waiting for
    a message got the wrong one: its oldest pending instruction fails (removed from the queue,
    counted in ``info["instructions_failed"]``). As in the paper's task, where the message is
    generated once when the target is present, guessing does not pay: an agent that does not
    remember the subject executes at most a chance fraction ``1 / (n_characters - 1)`` of the
    instructions (its target, never the subject, is what it can see). Reward range
    ``[-tell_penalty, 1]``.

    ## Termination

    Episodes have a fixed length: truncated after ``episode_length`` steps, never terminated.
    ``info["success"]`` at the end is True when at least one instruction was given and all were
    executed. Every step reports ``info["instructions_given"]``, ``info["instructions_done"]``,
    ``info["instructions_failed"]`` and ``info["instructions_pending"]``.

    ## Registered configurations

    - ``MemoRL/Instruction-v0``: 4 rooms, 8 characters, 500 steps, delay 200.
    - ``MemoRL/Instruction-Short-v0``: 3 rooms, 200 steps, delay 60, answer window 60,
      instruction probability 0.05 (tests, quick runs).

    Args:
        n_rooms: number of rooms, in ``[1, 32]``.
        n_characters: number of character kinds, in ``[2, 8]``.
        episode_length: steps per episode, larger than ``execute_delay + answer_window``.
        execute_delay: steps a target is away after an instruction about it is heard, ``>= 1``.
        answer_window: steps left after the last possible return of a target, ``>= 1``.
        instruction_prob: probability that an instruction is heard at a step, in ``[0, 1]``.
        distractor_prob: probability of a ``say:`` word at a step without instruction, ``[0, 1]``.
        move_prob: probability per step that a character moves to another room, in ``[0, 1]``.
        tell_penalty: cost of a tell matching no pending instruction, in ``[0, 1]``.
        render_mode: ``None``, ``"rgb_array"`` or ``"human"``.
        tile_size: pixels per cell of a rendered frame.
    """

    def __init__(
        self,
        n_rooms: int = 4,
        n_characters: int = 8,
        episode_length: int = 500,
        execute_delay: int = 200,
        answer_window: int = 100,
        instruction_prob: float = 0.03,
        distractor_prob: float = 0.8,
        move_prob: float = 0.005,
        tell_penalty: float = 0.1,
        render_mode: str | None = None,
        tile_size: int = TILE_PIXELS,
    ) -> None:
        self.n_rooms = check_int("n_rooms", n_rooms, 1, 32)
        self.n_characters = check_int("n_characters", n_characters, 2, len(CHARACTER_NAMES))
        self.execute_delay = check_int("execute_delay", execute_delay, 1)
        self.answer_window = check_int("answer_window", answer_window, 1)
        self.episode_length = check_int(
            "episode_length", episode_length, self.execute_delay + self.answer_window + 1
        )
        for name, value in (
            ("instruction_prob", instruction_prob),
            ("distractor_prob", distractor_prob),
            ("move_prob", move_prob),
            ("tell_penalty", tell_penalty),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.instruction_prob = float(instruction_prob)
        self.distractor_prob = float(distractor_prob)
        self.move_prob = float(move_prob)
        self.tell_penalty = float(tell_penalty)
        if self.n_characters > 7 * self.n_rooms:
            raise ValueError(
                f"n_characters must be in [2, {7 * self.n_rooms}] for {self.n_rooms} rooms "
                f"(7 standing places per room), got {self.n_characters}"
            )
        names = CHARACTER_NAMES[: self.n_characters]
        super().__init__(
            vocab=[
                *names,
                *(f"target:{n}" for n in names),
                *(f"subject:{n}" for n in names),
                *(f"say:{w}" for w in DISTRACTOR_WORDS),
            ],
            width=4 * self.n_rooms + 1,
            height=7,
            max_steps=self.episode_length,
            n_task_actions=self.n_characters,
            render_mode=render_mode,
            tile_size=tile_size,
        )
        self.reward_range = (-self.tell_penalty, 1.0)
        self._target_words = [self.word_index[f"target:{n}"] for n in names]
        self._subject_words = [self.word_index[f"subject:{n}"] for n in names]
        self._say_words = [self.word_index[f"say:{w}"] for w in DISTRACTOR_WORDS]
        self.last_instruction_step = self.episode_length - self.execute_delay - self.answer_window
        # Standing places: room floor minus the centre and the cell inside the doorway.
        self._places = [
            [(4 * r + dx, dy) for dy in (1, 2, 3) for dx in (1, 2, 3) if (dx, dy) not in _KEEP_FREE]
            for r in range(self.n_rooms)
        ]
        self.characters: list[Character] = []
        self.away_until: list[int] = []  # step at which an away character returns, 0 if present
        self.pending: list[tuple[int, int]] = []  # (target, subject), oldest first
        self.instructions_given = 0
        self.instructions_done = 0
        self.instructions_failed = 0
        self._heard: tuple[int, ...] = ()
        self._key = 0  # the episode's key of keyed random draws, drawn at reset

    # world

    def _gen_grid(self, width: int, height: int) -> None:
        self.grid = Grid(width, height)
        self.grid.wall_rect(0, 0, width, height)
        self.grid.horz_wall(0, 4)
        for r in range(self.n_rooms):
            self.grid.vert_wall(4 * r, 0, 5)
            self.grid.set(4 * r + 2, 4, None)  # doorway
        self.agent_pos = (1, 5)
        self.agent_dir = 0
        self.characters = [Character(k) for k in range(self.n_characters)]
        self.away_until = [0] * self.n_characters
        self.pending = []
        self.instructions_given = 0
        self.instructions_done = 0
        self.instructions_failed = 0
        self._heard = ()
        # The episode's one draw from np_random: every later random choice is a keyed hash of
        # (key, step, slot) (envs/batched/keyed_random.py), so that the batched version of this
        # task makes the same choices for all envs at once, without a generator per step.
        self._key = int(self.np_random.integers(KEY_RANGE))
        for k, c in enumerate(self.characters):
            pos = self._free_place(exclude_room=None, slot=SLOTS_PER_CHARACTER * k)
            self.grid.set(*pos, c)
            c.cur_pos = pos

    def _free_place(self, exclude_room: int | None, slot: int) -> tuple[int, int] | None:
        # Draws: slot (the room), slot + 1 (a free place in it), slot + 2 (a free place anywhere,
        # when that room is full).
        t = self.step_count
        if exclude_room is None or self.n_rooms == 1:
            room = below(self._key, t, slot, self.n_rooms)
        else:
            room = below(self._key, t, slot, self.n_rooms - 1)
            room += room >= exclude_room
        free = [p for p in self._places[room] if self.grid.get(*p) is None and p != self.agent_pos]
        pick = slot + 1
        if not free:  # a full room: try every room
            pick = slot + 2
            free = [
                p
                for places in self._places
                for p in places
                if self.grid.get(*p) is None and p != self.agent_pos
            ]
        return free[below(self._key, t, pick, len(free))] if free else None

    def _update_world(self) -> None:
        key, t = self._key, self.step_count
        for k, c in enumerate(self.characters):
            slot = SLOTS_PER_CHARACTER * k
            if self.away_until[k]:
                if self.away_until[k] <= t:
                    pos = self._free_place(exclude_room=None, slot=slot)
                    if pos is not None:
                        self.away_until[k] = 0
                        self.put(*pos, c)
            elif self.move_prob and bernoulli(key, t, slot + 3, self.move_prob):
                pos = self._free_place(exclude_room=(c.cur_pos[0] - 1) // 4, slot=slot + 4)
                if pos is not None:
                    self.put(*c.cur_pos, None)
                    self.put(*pos, c)
        self._heard = ()
        present = [k for k in range(self.n_characters) if not self.away_until[k]]
        if (
            t <= self.last_instruction_step
            and present
            and bernoulli(key, t, SLOT_INSTRUCTION, self.instruction_prob)
        ):
            target = present[below(key, t, SLOT_INSTRUCTION + 1, len(present))]
            subject = below(key, t, SLOT_INSTRUCTION + 2, self.n_characters - 1)
            subject += subject >= target  # any kind but the target
            self.pending.append((target, subject))
            self.instructions_given += 1
            self.away_until[target] = t + self.execute_delay
            self.put(*self.characters[target].cur_pos, None)
            self._heard = (self._target_words[target], self._subject_words[subject])
        elif bernoulli(key, t, SLOT_INSTRUCTION + 3, self.distractor_prob):
            self._heard = (self._say_words[below(key, t, SLOT_INSTRUCTION + 4, len(_SAY))],)

    def neighbours(self) -> list[int]:
        """Kinds of the characters in the 8 cells around the agent."""
        x, y = self.agent_pos
        kinds = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                obj = self.grid.get(x + dx, y + dy)
                if isinstance(obj, Character):
                    kinds.append(obj.kind)
        return kinds

    def centre_words(self) -> Iterable[int]:
        return self._heard

    def _info(self) -> dict[str, Any]:
        return {
            "instructions_given": self.instructions_given,
            "instructions_done": self.instructions_done,
            "instructions_failed": self.instructions_failed,
            "instructions_pending": len(self.pending),
        }

    def _reset_info(self) -> dict[str, Any]:
        return self._info()

    def _transition(self, action: int) -> tuple[float, bool, dict[str, Any]]:
        reward = 0.0
        if action < len(MOVES):
            self.move(action)
        else:
            subject = action - len(MOVES)
            near = self.neighbours()
            match = next(
                (i for i, (c, s) in enumerate(self.pending) if s == subject and c in near), None
            )
            if match is None:
                reward = -self.tell_penalty
                # A neighbour waiting for a message got the wrong one: its oldest pending
                # instruction fails, so guessing subjects scores chance, 1 / (n_characters - 1).
                for c in near:
                    failed = next((i for i, (t, _) in enumerate(self.pending) if t == c), None)
                    if failed is not None:
                        del self.pending[failed]
                        self.instructions_failed += 1
            else:
                del self.pending[match]
                self.instructions_done += 1
                reward = 1.0
        self._update_world()
        info = self._info()
        if self.step_count >= self.max_steps:
            done, given = self.instructions_done, self.instructions_given
            info["success"] = given > 0 and done == given
        return reward, False, info


_KEEP_FREE = {(2, 2), (2, 3)}  # a room's centre and the floor cell inside its doorway
_SAY = DISTRACTOR_WORDS
#: Keyed-draw slots of a step: character ``k`` uses ``[8 k, 8 k + 7)`` (0-2 where it returns or
#: is first placed, 3 whether it moves, 4-6 where it moves to); the messenger and passer-by use
#: ``SLOT_INSTRUCTION + 0..4`` (instruction?, target, subject, distractor?, which word).
SLOTS_PER_CHARACTER = 8
SLOT_INSTRUCTION = SLOTS_PER_CHARACTER * len(CHARACTER_NAMES)
