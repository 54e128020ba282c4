"""The Instruction task, batched: characters, instructions and heard words as arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from envs.base import MOVES
from envs.batched.base import BatchedTaskEnv
from envs.batched.keyed_random import KEY_RANGE, draw, mix_u32, scale, step_base, threshold
from envs.instruction import (
    _KEEP_FREE,
    _SAY,
    CHARACTER_NAMES,
    SLOT_INSTRUCTION,
    SLOTS_PER_CHARACTER,
    InstructionEnv,
)

__all__ = ["InstructionVectorEnv"]

_EMPTY, _WALL, _CHARACTER = 0, 1, 2  # object ids; character k is _CHARACTER + k
_NONE = 1 << 62  # the given-step of an empty queue entry


class InstructionVectorEnv(BatchedTaskEnv):
    """``num_envs`` Instruction envs (:class:`envs.instruction.InstructionEnv`) stepped as arrays.

    Same observations, rewards, flags and infos as a ``SyncVectorEnv`` of the single env with the
    same seeds. The single env draws one key per episode from ``np_random`` and every other
    random choice as a keyed hash (``envs.batched.keyed_random``), so here the choices of all
    envs are array expressions. State per env: the map's object ids ``(H * W,)`` (walls and
    characters, so a view is one gather of 9 cells and a move one lookup), the agent's cell,
    each character's standing place (``-1`` while away) and return step, the pending
    instructions per target character (``K`` entries each, ``K`` the most instructions one
    character can get in an episode: its targets are ``execute_delay`` steps apart), the
    counters and a code of the words heard this step.

    A step draws the per-step choices of all envs at once (one hash per slot from a shared
    per-step base); the rare events that need a free standing place (a character coming back or
    moving) are gathered, and processed in rounds of at most one event per env, in the single
    env's character order (a character's move changes the free places of the next). On host
    backends only the envs with an event take part; on accelerators the rounds are the
    characters, full width with masked writes, so no step waits for the host.

    Args:
        num_envs: number of envs, at least 1.
        n_rooms, n_characters, episode_length, execute_delay, answer_window,
        instruction_prob, distractor_prob, move_prob, tell_penalty: the task's configuration,
            as :class:`~envs.instruction.InstructionEnv` (same defaults).
        device: ``None``/``"numpy"`` (numpy arrays) or a torch device (tensors on it).
        render_mode: ``None`` or ``"rgb_array"`` (env 0's map).
        ring: episodes drawn ahead per env (see :class:`~envs.batched.base.BatchedTaskEnv`).
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (default, as gymnasium's) or
            ``AutoresetMode.SAME_STEP`` (see :class:`~envs.batched.base.BatchedTaskEnv`).
    """

    single_env_class = InstructionEnv
    param_size = 1

    def __init__(
        self,
        num_envs: int = 1,
        n_rooms: int = 4,
        n_characters: int = 8,
        episode_length: int = 500,
        execute_delay: int = 200,
        answer_window: int = 100,
        instruction_prob: float = 0.03,
        distractor_prob: float = 0.8,
        move_prob: float = 0.005,
        tell_penalty: float = 0.1,
        *,
        device: Any = None,
        render_mode: str | None = None,
        ring: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        super().__init__(
            num_envs,
            {
                "n_rooms": n_rooms,
                "n_characters": n_characters,
                "episode_length": episode_length,
                "execute_delay": execute_delay,
                "answer_window": answer_window,
                "instruction_prob": instruction_prob,
                "distractor_prob": distractor_prob,
                "move_prob": move_prob,
                "tell_penalty": tell_penalty,
            },
            device=device,
            render_mode=render_mode,
            ring=ring,
            autoreset_mode=autoreset_mode,
        )

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        # InstructionEnv._gen_grid's one draw: the episode's key.
        return np.array([rng.integers(KEY_RANGE)], np.int64)

    def _allocate(self) -> None:
        xp, n, env = self.xp, self.num_envs, self.template
        c = env.n_characters
        index = env.word_index
        table = np.zeros((_CHARACTER + c, len(self.vocab)), np.uint8)
        table[_WALL, index["wall"]] = 1
        for k in range(c):
            table[_CHARACTER + k, index[CHARACTER_NAMES[k]]] = 1
        self.word_table = xp.asarray(table, "uint8")
        env.reset(seed=0)  # the static walls of the map, and its standing places
        width = env.width
        walls = np.array(
            [int(o is not None and o.type == "wall") for o in env.grid.grid], np.int64
        )
        places = [
            (4 * r + dx, dy)
            for r in range(env.n_rooms)
            for dy in (1, 2, 3)
            for dx in (1, 2, 3)
            if (dx, dy) not in _KEEP_FREE
        ]
        assert places == [p for room in env._places for p in room]
        self._width = width
        self._walls = xp.asarray(walls, "int64")  # (H * W,) object id of the static map
        self._start_cell = env.agent_pos[1] * width + env.agent_pos[0]
        self._place_cell = xp.asarray([y * width + x for x, y in places], "int64")
        self._place_room = xp.asarray([(x - 1) // 4 for x, _ in places], "int64")
        self._window = xp.asarray(
            [dy * width + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)], "int64"
        )
        self._step = xp.asarray([dy * width + dx for dx, dy in MOVES] + [0] * c, "int64")
        # the centre cell: agent plus the words heard, by code (0 none, 1 + w a passer-by's
        # word, 1 + len(_SAY) + target * c + subject an instruction)
        centre = np.zeros((1 + len(_SAY) + c * c, len(self.vocab)), np.uint8)
        centre[:, self._agent_word] = 1
        for w, word in enumerate(env._say_words):
            centre[1 + w, word] = 1
        for target in range(c):
            for subject in range(c):
                row = centre[1 + len(_SAY) + target * c + subject]
                row[env._target_words[target]] = row[env._subject_words[subject]] = 1
        # object ids, then the centre codes (the agent's cell, shown with the words heard)
        self._obs_table = xp.asarray(np.concatenate([table, centre]), "uint8")
        bits = np.zeros(_CHARACTER + c + len(centre), np.int64)
        bits[_CHARACTER : _CHARACTER + c] = 1 << np.arange(c)
        self._bits = xp.asarray(bits, "int64")
        self._kinds = xp.arange(c)
        self._kind_bit = xp.asarray(1 << np.arange(c), "int64")
        # the characters in view, from their bits
        self._near = xp.asarray((np.arange(1 << c)[:, None] >> np.arange(c)) & 1, "bool")
        self._centre_id = table.shape[0]
        self._rewards = xp.asarray([0.0, 1.0, -env.tell_penalty], "float64")
        # per step hash slots of every env: whether each character moves, whether a messenger
        # comes, whether a passer-by speaks and its word (the messenger's target and subject
        # are drawn for the envs with a messenger only)
        self._slots = xp.asarray(
            [SLOTS_PER_CHARACTER * k + 3 for k in range(c)]
            + [SLOT_INSTRUCTION, SLOT_INSTRUCTION + 3, SLOT_INSTRUCTION + 4],
            "int64",
        )
        if xp.is_numpy:
            self._slots = self._slots.astype(np.uint32)
        # numpy: step_base's mix of each step number, the draws' thresholds, and the slots
        # of a relocation's room, place in the room and place anywhere (from its first slot)
        # (a step count reaches max_steps + 1 at the step that resets an env, discarded)
        self._step_mix = mix_u32(np.arange(env.max_steps + 2, dtype=np.uint32))
        self._move_below = threshold(env.move_prob)
        self._say_below = threshold(env.distractor_prob)
        self._instruct_below = threshold(env.instruction_prob)
        self._room_pick_slots = np.arange(3, dtype=np.uint32)
        self._messenger_slots = np.array([SLOT_INSTRUCTION + 1, SLOT_INSTRUCTION + 2], np.uint32)
        last = max(env.last_instruction_step, 1)
        self.queue_size = (last - 1) // env.execute_delay + 1  # instructions per target
        self.key = xp.zeros((n,), "int64")
        self.cells = xp.zeros((n, walls.shape[0]), "int64")
        self._cell_at = xp.arange(n) * walls.shape[0]  # flat index of env i's first cell
        self.pos = xp.full((n,), self._start_cell, "int64")
        self.place = xp.full((n, c), -1, "int64")  # standing place of each character, -1 away
        self.away_until = xp.zeros((n, c), "int64")
        if xp.is_numpy:  # stored character-major: the per-step tests run along the envs
            self.away_until = np.zeros((c, n), np.int64).T
        self.given_at = xp.full((n, c, self.queue_size), _NONE, "int64")  # pending, by target
        self.subjects = xp.zeros((n, c, self.queue_size), "int64")
        self.given = xp.zeros((n,), "int64")
        self.done = xp.zeros((n,), "int64")
        self.failed = xp.zeros((n,), "int64")
        self.heard = xp.zeros((n,), "int64")
        self.pending_bits = xp.zeros((n,), "int64")  # bit k: character k has instructions
        self._view = xp.zeros((n, 9), "int64")

    # helpers

    def _put(self, array: Any, index: tuple[Any, ...], cond: Any, values: Any) -> None:
        """``array[index] = values`` where ``cond`` (``True``: everywhere; the rows of ``index``
        are distinct)."""
        if cond is True:
            array[index] = values
        else:
            array[index] = self.xp.where(cond, values, array[index])

    def _relocate(
        self, rows: Any, kind: Any, moving: Any, active: Any, base: Any, t: Any
    ) -> None:
        """InstructionEnv._free_place and its move for one character per env of ``rows``:
        character ``kind`` comes back (``moving`` False) or moves to another room, if a place
        is free. ``active`` (or ``None`` for all) masks the rows; ``base`` are the rows'
        :func:`step_base` at step ``t``."""
        xp, env = self.xp, self.template
        n_rooms = env.n_rooms
        slot = SLOTS_PER_CHARACTER * kind + 4 * moving
        h = scale(draw(base, slot), n_rooms)
        old = self.place[rows, kind]
        if n_rooms > 1:
            exclude = self._place_room[xp.where(old >= 0, old, 0)]
            other = scale(draw(base, slot), n_rooms - 1)
            other = other + (other >= exclude)
            h = xp.where(moving, other, h)
        self._choose_and_put(rows, kind, h, slot, active, base, old)

    def _choose_and_put(
        self, rows: Any, kind: Any, room: Any, slot: Any, active: Any, base: Any, old: Any
    ) -> None:
        xp = self.xp
        occupied = self.cells[rows[:, None], self._place_cell]  # (M, P)
        free = (occupied == _EMPTY) & (self._place_cell != self.pos[rows][:, None])
        in_room = free & (self._place_room == room[:, None])
        anywhere = ~in_room.any(axis=1)  # a full room: try every room
        cand = xp.where(anywhere[:, None], free, in_room)
        count = cand.sum(axis=1)
        pick = scale(draw(base, slot + 1 + anywhere), count + (count == 0))
        chosen = xp.first_true(cand & (cand.cumsum(axis=1) == (pick + 1)[:, None]))
        ok = count > 0
        if active is not None:
            ok = ok & active
        cell = self._place_cell[chosen]
        if old is not None:  # leave the old place
            old_cell = self._place_cell[xp.where(old >= 0, old, 0)]
            self._put(self.cells, (rows, old_cell), ok & (old >= 0), _EMPTY)
        self._put(self.cells, (rows, cell), ok, _CHARACTER + kind)
        self._put(self.place, (rows, kind), ok, chosen)
        self._put(self.away_until, (rows, kind), ok, 0)

    # episodes

    def _start(self, rows: Any, mask: Any, params: Any) -> None:
        xp, env = self.xp, self.template
        if mask is None and rows.shape[0] == 0:
            return
        self._set(self.key, rows, mask, params[:, 0])
        self._set(self.cells, rows, mask, self._walls)
        self._set(self.pos, rows, mask, self._start_cell)
        self._set(self.place, rows, mask, -1)
        self._set(self.away_until, rows, mask, 0)
        self._set(self.given_at, rows, mask, _NONE)
        for array in (self.given, self.done, self.failed, self.heard, self.pending_bits):
            self._set(array, rows, mask, 0)
        base = step_base(self.key[rows], xp.zeros(rows.shape, "int64"))
        for k in range(env.n_characters):  # characters placed one by one, at step 0
            room = scale(draw(base, SLOTS_PER_CHARACTER * k), env.n_rooms)
            kind = xp.full(rows.shape, k, "int64")
            self._choose_and_put(rows, kind, room, SLOTS_PER_CHARACTER * k, mask, base, None)

    def _info(self) -> dict[str, Any]:
        return {
            "instructions_given": self.given,
            "instructions_done": self.done,
            "instructions_failed": self.failed,
            # every instruction given is pending, executed or failed
            "instructions_pending": self.given - self.done - self.failed,
        }

    def _reset_info(self) -> dict[str, Any]:
        return self._info()

    def _transition(self, actions: Any) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
        xp, env, n = self.xp, self.template, self.num_envs
        t = self.step_count
        # moves: into a wall or a character = stay
        target = self.pos + self._step[actions]
        if xp.is_numpy:
            blocked = self.cells.reshape(-1).take(self._cell_at + target) != _EMPTY
        else:
            blocked = xp.take(self.cells, target[:, None])[:, 0] != _EMPTY
        self.pos = xp.where(blocked, self.pos, target)
        # tells: subject s to the characters of the 8 cells around the agent (the last view)
        tell = actions >= len(MOVES)
        reward = self._rewards[2 * tell]  # a tell matching no pending instruction: the penalty
        if xp.masked_writes:
            self._tell(self._rows, tell, actions - len(MOVES), reward)
        else:
            # (only the tells with a character with a pending instruction in view can execute
            # or fail one)
            rows = xp.nonzero(tell)
            if xp.is_numpy:  # (the view is stored cell-major: _observe)
                seen = self._bits.take(self._view.T.take(rows, axis=1)).sum(axis=0)
            else:
                seen = self._bits[self._view[rows]].sum(axis=1)  # one bit per character in view
            keep = (seen & self.pending_bits[rows]) > 0
            rows = rows[keep]
            if rows.shape[0]:
                self._tell(rows, True, actions[rows] - len(MOVES), reward, seen[keep])
        self._update_world(t)
        info: dict[str, tuple[Any, Any]] = {k: (v, None) for k, v in self._info().items()}
        info["success"] = ((self.given > 0) & (self.done == self.given), t >= env.max_steps)
        return reward, xp.zeros((n,), "bool"), info

    def _tell(
        self, rows: Any, cond: Any, subject: Any, reward: Any, seen: Any = None
    ) -> None:
        """The tells of subject ``subject`` by the envs of ``rows`` (where ``cond``): the oldest
        matching instruction of a neighbour is executed, else each neighbour's oldest pending
        instruction fails; sets ``reward`` (over all envs) at the executing rows. ``seen``:
        the rows' bits of the characters in view, if known."""
        xp, env = self.xp, self.template
        c, q = env.n_characters, self.queue_size
        m = rows.shape[0]
        if seen is None:
            seen = self._bits[self._view[rows]].sum(axis=1)  # one bit per character in view
        near = self._near[seen]  # (M, C)
        if cond is not True:
            near = near & cond[:, None]
        given_at = self.given_at[rows]  # (M, C, Q)
        match = (self.subjects[rows] == subject[:, None, None]) & near[:, :, None]
        keyed = xp.where(match.reshape(m, c * q), given_at.reshape(m, c * q), _NONE)
        at = xp.arange(m)
        oldest = keyed.argmin(axis=1)  # the oldest matching instruction
        executed = keyed[at, oldest] < _NONE
        flat = given_at.reshape(m, c * q)  # a view
        flat[at, oldest] = xp.where(executed, _NONE, flat[at, oldest])
        # a neighbour given the wrong message: its oldest pending instruction fails
        first = given_at.argmin(axis=2)  # (M, C)
        index = (at[:, None], self._kinds, first)
        fails = near & ~executed[:, None] & (given_at[index] < _NONE)
        given_at[index] = xp.where(fails, _NONE, given_at[index])
        self.given_at[rows] = given_at
        self.pending_bits[rows] = ((given_at < _NONE).any(axis=2) * self._kind_bit).sum(axis=1)
        self.done[rows] += executed
        self.failed[rows] += fails.sum(axis=1)
        reward[rows] = xp.where(executed, 1.0, reward[rows])

    def _update_world(self, t: Any) -> None:
        # InstructionEnv._update_world for every env, with the same keyed draws.
        if self.xp.is_numpy:
            self._update_world_host(t)
            return
        xp, env = self.xp, self.template
        c = env.n_characters
        base = step_base(self.key, t)
        h = draw(base[:, None], self._slots)  # (N, C + 3)
        away = self.away_until > 0
        events = away & (self.away_until <= t[:, None])  # back
        moving = ~away
        if env.move_prob:
            moving = moving & (h[:, :c] < threshold(env.move_prob))
            events = events | moving
        else:
            moving = self.away_until < 0  # nobody moves
        if xp.masked_writes:
            for k in range(c):
                kind = xp.full((self.num_envs,), k, "int64")
                self._relocate(self._rows, kind, moving[:, k], events[:, k], base, t)
        else:
            rows, kinds = xp.nonzero2(events)  # sorted by env, then kind
            if rows.shape[0]:
                index = xp.arange(rows.shape[0])
                new_env = xp.full(rows.shape, True, "bool")
                new_env[1:] = rows[1:] != rows[:-1]
                rank = index - xp.cummax(xp.where(new_env, index, 0))  # event number in its env
                for r in range(int(rank.max()) + 1):
                    sel = rank == r
                    rr, kk = rows[sel], kinds[sel]
                    self._relocate(rr, kk, moving[rr, kk], None, base[rr], t[rr])
        present = self.away_until == 0
        n_present = present.sum(axis=1)
        instruct = (
            (t <= env.last_instruction_step)
            & (n_present > 0)
            & (h[:, c] < threshold(env.instruction_prob))
        )
        say = ~instruct & (h[:, c + 1] < threshold(env.distractor_prob))
        self.heard = xp.where(say, 1 + scale(h[:, c + 2], len(_SAY)), 0)
        if xp.masked_writes:
            rows, active = self._rows, instruct
        else:
            rows, active = xp.nonzero(instruct), None
            if rows.shape[0] == 0:
                return
        self._instruct(rows, active, base[rows], t[rows], present[rows], n_present[rows])

    def _instruct(
        self, rows: Any, active: Any, base: Any, t: Any, present: Any, n_present: Any
    ) -> None:
        """The messengers of the envs of ``rows`` (where ``active``; ``None``: all): a present
        character is sent away with an instruction; ``base`` and ``t`` of the rows, their
        ``present`` characters ``(M, C)`` and how many."""
        xp, env = self.xp, self.template
        c = env.n_characters
        if xp.is_numpy:  # both draws in one hash call (the host path: n_present > 0)
            both = draw(base[:, None], self._messenger_slots)
            j, subject = scale(both[:, 0], n_present), scale(both[:, 1], c - 1)
        else:
            j = scale(draw(base, SLOT_INSTRUCTION + 1), n_present + (n_present == 0))
            subject = scale(draw(base, SLOT_INSTRUCTION + 2), c - 1)
        target = xp.first_true(present & (present.cumsum(axis=1) == (j + 1)[:, None]))
        subject = subject + (subject >= target)  # any kind but the target
        cond = True if active is None else active
        free = xp.first_true(self.given_at[rows, target] == _NONE)
        self._put(self.given_at, (rows, target, free), cond, t)
        self._put(self.subjects, (rows, target, free), cond, subject)
        self.given[rows] += cond
        bits = self.pending_bits[rows] | self._kind_bit[target]
        self._put(self.pending_bits, (rows,), cond, bits)
        self._put(self.away_until, (rows, target), cond, t + env.execute_delay)
        place = self.place[rows, target]
        self._put(self.cells, (rows, self._place_cell[xp.where(place >= 0, place, 0)]), cond, 0)
        self._put(self.place, (rows, target), cond, -1)
        self._put(self.heard, (rows,), cond, 1 + len(_SAY) + target * c + subject)

    def _update_world_host(self, t: np.ndarray) -> None:
        # _update_world on numpy: the per-step draws of every env; the rare events (characters
        # coming back or moving, messengers) on their envs only, in as few array calls as
        # possible (rows distinct in a round, so plain index writes).
        env = self.template
        c = env.n_characters
        base = mix_u32(self.key.astype(np.uint32) ^ self._step_mix[t])  # step_base(key, t)
        h = mix_u32(self._slots[:, None] ^ base)  # (C + 3, N): slot-major, rows contiguous
        away_until = self.away_until.T  # (C, N), contiguous (see _allocate)
        # back: away and due; moving: present and drawn to move
        events = (away_until <= t) & (away_until > 0)
        if env.move_prob:
            events |= (h[:c] < self._move_below) & (away_until == 0)
        rows = events.any(axis=0).nonzero()[0]  # the envs with events (few)
        at, kinds = events[:, rows].T.nonzero()  # sorted by env, then kind
        rows = rows[at]
        if len(rows):
            first = np.ones(len(rows), bool)
            np.not_equal(rows[1:], rows[:-1], out=first[1:])
            if first.all():  # one event per env (the usual case): one round
                self._relocate_host(rows, kinds, base[rows])
            else:
                index = np.arange(len(rows))
                rank = index - np.maximum.accumulate(np.where(first, index, 0))
                for r in range(int(rank.max()) + 1):
                    sel = (rank == r).nonzero()[0]
                    rr = rows[sel]
                    self._relocate_host(rr, kinds[sel], base[rr])
        heard = (h[c + 2].astype(np.int64) * len(_SAY) >> 32) + 1
        heard *= h[c + 1] < self._say_below
        self.heard = heard
        # messengers: drawn, before the last instruction step, and someone present
        rows = ((h[c] < self._instruct_below) & (t <= env.last_instruction_step)).nonzero()[0]
        if len(rows):
            present = self.away_until[rows] == 0
            n_present = present.sum(axis=1)
            some = n_present > 0
            if not some.all():
                rows, present, n_present = rows[some], present[some], n_present[some]
            if len(rows):
                self._instruct(rows, None, base[rows], t[rows], present, n_present)

    def _relocate_host(self, rows: np.ndarray, kind: np.ndarray, base: np.ndarray) -> None:
        """:meth:`_relocate` on numpy for distinct ``rows``: character ``kind`` of each comes
        back (if away: it has no place) or moves; ``base``: the rows' :func:`step_base`."""
        n_rooms = self.template.n_rooms
        old = self.place[rows, kind]
        moving = old >= 0  # (a character away has no place)
        slot = (SLOTS_PER_CHARACTER * kind + 4 * moving).astype(np.uint32)
        hs = draw(base[:, None], slot[:, None] + self._room_pick_slots)  # (M, 3)
        hs = hs.astype(np.int64)
        room = hs[:, 0] * n_rooms >> 32
        if n_rooms > 1 and moving.any():
            other = hs[:, 0] * (n_rooms - 1) >> 32
            other += other >= self._place_room[old]  # (old >= 0 where moving)
            room = np.where(moving, other, room)
        at = rows * self.cells.shape[1]
        free = self.cells.take(at[:, None] + self._place_cell) == _EMPTY  # (M, P)
        free &= self._place_cell != self.pos[rows, None]
        cand = free & (self._place_room == room[:, None])
        count = cand.sum(axis=1)
        pick = hs[:, 1]
        anywhere = count == 0  # a full room: try every room
        if anywhere.any():
            cand[anywhere] = free[anywhere]
            count[anywhere] = free[anywhere].sum(axis=1)
            pick = np.where(anywhere, hs[:, 2], pick)
        pick = pick * count >> 32
        chosen = (cand.cumsum(axis=1) > pick[:, None]).argmax(axis=1)
        ok = count > 0
        if not ok.all():  # no free place: the character stays (away, or where it is)
            rows, kind, old, moving, chosen, at = (
                x[ok] for x in (rows, kind, old, moving, chosen, at)
            )
        flat = self.cells.reshape(-1)
        if moving.any():  # leave the old place
            flat[at[moving] + self._place_cell[old[moving]]] = _EMPTY
        flat[at + self._place_cell[chosen]] = _CHARACTER + kind
        self.place[rows, kind] = chosen
        self.away_until[rows, kind] = 0

    def _observe(self) -> Any:
        xp = self.xp
        if xp.is_numpy:
            # cell-major (9, N): the index sums and the centre write run along the envs
            view = self.cells.reshape(-1).take(self._window[:, None] + (self._cell_at + self.pos))
            np.add(self.heard, self._centre_id, out=view[4])  # the agent's cell, always empty
            self._view = view.T
            return np.take(self._obs_table, view.T, axis=0).reshape(self.num_envs, 3, 3, -1)
        view = xp.take(self.cells, self.pos[:, None] + self._window)  # (N, 9)
        view[:, 4] = self.heard + self._centre_id  # the agent's own cell, always empty
        self._view = view
        return self._obs_table[view].reshape(self.num_envs, 3, 3, -1)
