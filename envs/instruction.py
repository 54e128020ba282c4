"""The Instruction task: a gridworld version of the Expire-Span paper's LIGHT instruction task."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, TILE_PIXELS
from minigrid.core.grid import Grid
from minigrid.core.world_object import Wall, WorldObj
from minigrid.utils.rendering import fill_coords, point_in_circle, point_in_triangle

from envs.task import MOVES, TaskEnv, check_int, check_number
from envs.vector import TaskVectorEnv

__all__ = ["CHARACTER_NAMES", "Character", "InstructionEnv", "InstructionVectorEnv"]

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
_KEEP_FREE = ((2, 2), (2, 3))  # a room's centre and the floor cell inside its doorway
_ROOM_PLACES = 9 - len(_KEEP_FREE)  # standing places per room (place p is in room p // 7)
_EMPTY, _WALL, _CHARACTER = 0, 1, 2  # object ids of a cell; character k is 2 + k
_NONE = 1 << 62  # the step of an empty queue entry
#: Keyed-draw slots of a step: character ``k`` uses ``[8 k, 8 k + 7)`` (0-2 where it returns or
#: is first placed, 3 whether it moves, 4-6 where it moves to); the messenger and passer-by use
#: ``SLOT_INSTRUCTION + 0..4`` (instruction?, target, subject, distractor?, which word).
SLOTS_PER_CHARACTER = 8
SLOT_INSTRUCTION = SLOTS_PER_CHARACTER * len(CHARACTER_NAMES)


class _Probability:
    """A probability attribute that keeps its draw threshold, ``round(p * 2**32)`` (a draw
    below it happens with probability ``p``), as attribute ``<name>_below``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.below = name, f"{name}_below"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self if obj is None else obj.__dict__[self.name]

    def __set__(self, obj: Any, value: float) -> None:
        obj.__dict__[self.name], obj.__dict__[self.below] = value, round(value * 2**32)


class Character(WorldObj):
    """A person standing in a room, drawn as a figure of its own colour; its word is its name."""

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


class InstructionEnv(TaskEnv):
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
    ``info["instructions_failed"]`` and ``info["instructions_pending"]``; the first three are
    the task's measures at an episode's end.

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

    step_info = ("instructions_given", "instructions_done", "instructions_failed",
                 "instructions_pending")
    metrics = ("instructions_given", "instructions_done", "instructions_failed")
    instruction_prob = _Probability()
    distractor_prob = _Probability()
    move_prob = _Probability()

    def __init__(self, n_rooms: int = 4, n_characters: int = 8, episode_length: int = 500,
                 execute_delay: int = 200, answer_window: int = 100,
                 instruction_prob: float = 0.03, distractor_prob: float = 0.8,
                 move_prob: float = 0.005, tell_penalty: float = 0.1,
                 render_mode: str | None = None, tile_size: int = TILE_PIXELS) -> None:
        self.n_rooms = check_int("n_rooms", n_rooms, 1, 32)
        self.n_characters = check_int("n_characters", n_characters, 2, len(CHARACTER_NAMES))
        self.execute_delay = check_int("execute_delay", execute_delay, 1)
        self.answer_window = check_int("answer_window", answer_window, 1)
        self.episode_length = check_int("episode_length", episode_length,
                                        self.execute_delay + self.answer_window + 1)
        self.instruction_prob = check_number("instruction_prob", instruction_prob)
        self.distractor_prob = check_number("distractor_prob", distractor_prob)
        self.move_prob = check_number("move_prob", move_prob)
        self.tell_penalty = check_number("tell_penalty", tell_penalty)
        if self.n_characters > 7 * self.n_rooms:
            raise ValueError(f"n_characters must be in [2, {7 * self.n_rooms}] for "
                             f"{self.n_rooms} rooms (7 standing places each), got {n_characters}")
        self.reward_range = (-self.tell_penalty, 1.0)
        self.last_instruction_step = self.episode_length - self.execute_delay - self.answer_window
        # the most instructions one character can get in an episode: they are a delay apart
        self.queue = (max(self.last_instruction_step, 1) - 1) // self.execute_delay + 1
        self.width = 4 * self.n_rooms + 1  # of the map, 7 cells high
        names = CHARACTER_NAMES[: self.n_characters]
        super().__init__(vocab=[*names, *(f"target:{n}" for n in names),
                                *(f"subject:{n}" for n in names),
                                *(f"say:{w}" for w in DISTRACTOR_WORDS)],
                         max_steps=self.episode_length, n_task_actions=self.n_characters,
                         render_mode=render_mode, tile_size=tile_size)

    # the map

    def _wall(self, x: int, y: int) -> bool:
        if x in (0, self.width - 1) or y in (0, 6):
            return True
        return (y == 4 and x % 4 != 2) or (y < 4 and x % 4 == 0)  # rooms, doorways at x % 4 == 2

    def tables(self, xp: Any) -> SimpleNamespace:
        c, w, index = self.n_characters, self.width, self.word_index
        places = [(4 * r + dx, dy) for r in range(self.n_rooms) for dy in (1, 2, 3)
                  for dx in (1, 2, 3) if (dx, dy) not in _KEEP_FREE]
        place_cells = [y * w + x for x, y in places]
        # object ids (empty, wall, characters), then the agent's cell with each heard code:
        # 0 nothing, 1 + i passer-by word i, 1 + len(words) + target * c + subject an instruction
        heard = [[], *([f"say:{v}"] for v in DISTRACTOR_WORDS),
                 *([f"target:{CHARACTER_NAMES[a]}", f"subject:{CHARACTER_NAMES[b]}"]
                   for a in range(c) for b in range(c))]
        words = [[], ["wall"], *([n] for n in CHARACTER_NAMES[:c]), *(["agent", *h] for h in heard)]
        obs = np.zeros((len(words), len(self.vocab)), np.uint8)
        for k, names in enumerate(words):
            obs[k, [index[n] for n in names]] = 1
        bits = [0, 0, *(1 << k for k in range(c))] + [0] * len(heard)
        return SimpleNamespace(
            walls=xp.column([int(self._wall(i % w, i // w)) for i in range(7 * w)]),
            place_cells=xp.column(place_cells), place_cell=xp.table(place_cells),
            place_room=xp.column([(x - 1) // 4 for x, _ in places]),
            window=xp.column([dy * w + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)]),
            step=xp.table([dy * w + dx for dx, dy in MOVES] + [0] * c),
            obs=xp.table(obs), bits=xp.array(bits), kinds=xp.column(range(c)),
            kind_bit=xp.table([1 << k for k in range(c)]),
            kind_bits=xp.column([1 << k for k in range(c)]),
            slots=xp.column([SLOTS_PER_CHARACTER * k + 3 for k in range(c)]
                            + [SLOT_INSTRUCTION, SLOT_INSTRUCTION + 3, SLOT_INSTRUCTION + 4]),
            three=xp.column([0, 1, 2]),
            messenger=xp.column([SLOT_INSTRUCTION + 1, SLOT_INSTRUCTION + 2]),
            queue_slots=xp.column(range(self.queue)),
            no_place=xp.column([-1] * c), zeros=xp.column([0] * c),
            empty_queue=xp.column([_NONE] * (c * self.queue)),
        )

    # the rules

    def start(self, s: Any) -> None:
        xp, T = s.xp, s.T
        s.pos = 5 * self.width + 1  # the corridor's west end
        s.cells, s.place, s.away = s.full(T.walls), s.full(T.no_place), s.full(T.zeros)
        s.given, s.subjects = s.full(T.empty_queue), s.full(T.empty_queue)  # by target, in order
        s.instructions_given = s.instructions_done = s.instructions_failed = 0
        # (pending: a bit per kind waited for; n_present: each character placed below comes in)
        s.instructions_pending = s.heard = s.pending = s.n_present = 0
        base = xp.base(s.key, s.t)
        for k in range(self.n_characters):  # placed one by one, at step 0
            h = xp.draw(base, T.three + SLOTS_PER_CHARACTER * k)
            self._place(s, k, xp.below(h[0], self.n_rooms), h, s.full(-1), s.full(False))
        self._look(s)

    def _place(self, s: Any, k: Any, room: Any, h: Any, old: Any, moving: Any) -> None:
        """Character ``k`` (per env; now at place ``old``, -1 if away; ``moving``: ``old >= 0``)
        to a free place of ``room`` (or of any room if that one is full; draws ``h[1]``,
        ``h[2]``), if any."""
        xp, T = s.xp, s.T
        free = (s.at("cells", T.place_cells) == _EMPTY) & (T.place_cells != s.pos)
        here = free & (T.place_room == room)
        upto = here.cumsum(0)  # (free places so far)
        count, pick = upto[-1], h[1]
        anywhere = count == 0
        if xp.masked or xp.any(anywhere):  # (a full room: a place anywhere)
            upto = xp.where(anywhere, free, here).cumsum(0)
            count, pick = upto[-1], xp.where(anywhere, h[2], h[1])
        chosen = xp.first_true(upto > xp.below(pick, count))  # (0 if no place)
        ok = count > 0
        s.n_present = s.n_present + (ok & xp.not_(moving))  # (a character back)
        # (the old place left, if any: else the write goes to the agent's cell, always empty)
        s.put("cells", xp.where(ok & moving, T.place_cell[xp.maximum(old, 0)], s.pos), _EMPTY)
        s.put("cells", T.place_cell[chosen], _CHARACTER + k, where=ok)
        s.put("place", k, chosen, where=ok)
        s.put("away", k, 0, where=ok)

    def transition(self, s: Any) -> None:
        xp, T = s.xp, s.T
        target = s.pos + T.step[s.action]  # a move into a wall or a character stays
        s.pos = xp.where(s.at("cells", target) != _EMPTY, s.pos, target)
        # a tell: -tell_penalty, unless it executes an instruction; only one told to a
        # character waiting for a message (in view) can execute or fail one
        tell = s.action >= len(MOVES)
        s.reward = xp.where(tell, -self.tell_penalty, 0.0)
        if xp.masked or xp.any(tell):
            s.seen = T.bits[s.view].sum(0)  # a bit per character in view (before this move)
            hit = s.select(tell & ((s.seen & s.pending) > 0))
            if hit is not None:
                self._tell(hit)
                s.update(hit)
        self._update_world(s)
        s.instructions_pending = s.instructions_given - s.instructions_done \
            - s.instructions_failed
        s.success = (s.instructions_given > 0) & (s.instructions_done == s.instructions_given)
        s.terminated = s.full(False)
        self._look(s)

    def _look(self, s: Any) -> None:
        """``s.view``: the object ids of the 9 cells around the agent, the centre's the words
        heard (``observe`` reads it, the next step's tells too)."""
        s.view = s.at("cells", s.pos, s.T.window)
        s.view[4] = 2 + self.n_characters + s.heard  # (the agent's cell is always empty)

    def _tell(self, s: Any) -> None:
        """A tell of subject ``action - 4`` to the neighbours: the oldest matching instruction
        is executed, else each neighbour's oldest pending instruction fails."""
        xp, T, c, q = s.xp, s.T, self.n_characters, self.queue
        near = (s.seen & T.kind_bits) > 0  # per kind
        per_kind = (c, 1, *near.shape[1:])
        given, shape = s.given, (c, q, *s.given.shape[1:])
        queued = given.reshape(shape)  # (the queue by target; an empty entry is _NONE)
        match = near.reshape(per_kind) & (s.subjects == s.action - len(MOVES)).reshape(shape)
        # the step the oldest matching instruction was given (_NONE: none); a step gives one
        # instruction at most, so that step names it
        oldest = xp.amin(xp.where(match, queued, _NONE).reshape(given.shape), 0)
        executed = oldest < _NONE
        # a neighbour waiting for a message got the wrong one: its oldest instruction fails
        first = xp.amin(queued, 1)  # (each target's oldest, _NONE: none)
        fails = near & (first < _NONE) & xp.not_(executed)
        drop = (queued == oldest) | ((queued == first.reshape(per_kind)) & fails.reshape(per_kind))
        s.given = xp.where(drop.reshape(given.shape), _NONE, given)
        s.instructions_done = s.instructions_done + executed
        s.instructions_failed = s.instructions_failed + fails.sum(0)
        s.reward = xp.where(executed, 1.0, s.reward)
        s.pending = ((xp.amin(s.given.reshape(shape), 1) < _NONE) * T.kind_bits).sum(0)

    def _update_world(self, s: Any) -> None:
        xp, T, c = s.xp, s.T, self.n_characters
        s.base = xp.base(s.key, s.t)
        h = xp.draw(s.base, T.slots)  # each character's move?, messenger?, passer-by?, word
        away = s.away
        # back (away, and due) or moving (present, and drawn to); (a present one's away is 0)
        s.events = (away <= s.t) & ((away > 0) | (h[:c] < self.move_prob_below))
        # in the characters' order (a move changes the next one's places): each round, the
        # first character left of each env with one
        for one in s.rounds("events", c):
            k = xp.first_true(one.events)
            old = one.at("place", k)
            moving = old >= 0  # (a character present has a place, one away none)
            h3 = xp.draw(one.base, T.three + (SLOTS_PER_CHARACTER * k + 4 * moving))
            if self.n_rooms > 1:  # a move goes to another room: one of the n_rooms - 1 others
                room = xp.below(h3[0], xp.where(moving, self.n_rooms - 1, self.n_rooms))
                room = room + (moving & (room >= old // _ROOM_PLACES))  # (past its own)
            else:
                room = xp.below(h3[0], 1)
            self._place(one, k, room, h3, old, moving)
            one.put("events", k, False)
        messenger, speaker, word = xp.rows(h[c:])
        instruct = (s.t <= self.last_instruction_step) & (s.n_present > 0) \
            & (messenger < self.instruction_prob_below)
        say = xp.not_(instruct) & (speaker < self.distractor_prob_below)
        s.heard = xp.where(say, 1 + xp.below(word, len(DISTRACTOR_WORDS)), 0)
        told = s.select(instruct)
        if told is not None:
            self._instruct(told)
            s.update(told)

    def _instruct(self, s: Any) -> None:
        """A messenger: a present character is sent away with an instruction about another."""
        xp, T, c, q = s.xp, s.T, self.n_characters, self.queue
        h = xp.draw(s.base, T.messenger)
        present = s.away == 0  # (the j-th present character, j drawn below n_present)
        target = xp.first_true(present.cumsum(0) > xp.below(h[0], s.n_present))
        subject = xp.below(h[1], c - 1)
        subject = subject + (subject >= target)  # any kind but the target
        entry = target * q  # the target's first free queue entry (a queue of 1: the one)
        if q > 1:
            entry = entry + xp.first_true(s.at("given", entry + T.queue_slots) == _NONE)
        s.put("given", entry, s.t)
        s.put("subjects", entry, subject)
        s.instructions_given, s.n_present = s.instructions_given + 1, s.n_present - 1
        s.pending = s.pending | T.kind_bit[target]
        s.put("cells", T.place_cell[xp.maximum(s.at("place", target), 0)], _EMPTY)
        s.put("place", target, -1)
        s.put("away", target, s.t + self.execute_delay)
        s.heard = 1 + len(DISTRACTOR_WORDS) + target * c + subject

    def observe(self, s: Any) -> Any:
        return s.xp.view(s.T.obs, s.view)

    def draw(self, s: Any) -> tuple[Grid, tuple[int, int]]:
        grid = Grid(self.width, 7)
        for i, obj in enumerate(np.asarray(s.cells).tolist()):
            if obj:
                grid.set(i % self.width, i // self.width,
                         Character(obj - _CHARACTER) if obj >= _CHARACTER else Wall())
        return grid, (s.pos % self.width, s.pos // self.width)


class InstructionVectorEnv(TaskVectorEnv):
    """``num_envs`` :class:`InstructionEnv` envs stepped as arrays (arguments: ``num_envs``,
    then the task's; see :class:`~envs.vector.TaskVectorEnv`)."""

    task_class = InstructionEnv
