"""The Instruction task, batched: characters, instructions and heard words as arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.base import MOVES
from envs.batched.base import BatchedTaskEnv
from envs.batched.keyed_random import KEY_RANGE, below, bernoulli
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
_OFFSETS = (-1, 0, 1)


class InstructionVectorEnv(BatchedTaskEnv):
    """``num_envs`` Instruction envs (:class:`envs.instruction.InstructionEnv`) stepped as arrays.

    Same observations, rewards, flags and infos as a ``SyncVectorEnv`` of the single env with the
    same seeds. The single env draws one key per episode from ``np_random`` and every other
    random choice as a keyed hash (``envs.batched.keyed_random``), so here the choices of all
    envs are one array expression per step. State per env: the agent's cell, each character's
    standing place (``-1`` while away) and return step, the instructions given so far (target,
    subject, pending flag, in order: the queue), the counters and the words heard this step.
    Characters are processed one kind after another (at most 8), as in the single env, since a
    character's move changes the free places of the next.

    Args:
        num_envs: number of envs, at least 1.
        n_rooms, n_characters, episode_length, execute_delay, answer_window,
        instruction_prob, distractor_prob, move_prob, tell_penalty: the task's configuration,
            as :class:`~envs.instruction.InstructionEnv` (same defaults).
        device: ``None``/``"numpy"`` (numpy arrays) or a torch device (tensors on it).
        render_mode: ``None`` or ``"rgb_array"`` (env 0's map).
        ring: episodes drawn ahead per env (see :class:`~envs.batched.base.BatchedTaskEnv`).
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
        walls = np.array(
            [
                [
                    int(o is not None and o.type == "wall")
                    for o in env.grid.grid[y * env.width :][: env.width]
                ]
                for y in range(env.height)
            ],
            np.int64,
        )
        places = [
            (4 * r + dx, dy)
            for r in range(env.n_rooms)
            for dy in (1, 2, 3)
            for dx in (1, 2, 3)
            if (dx, dy) not in _KEEP_FREE
        ]
        assert places == [p for room in env._places for p in room]
        place_map = np.full((env.height, env.width), -1, np.int64)
        for p, (x, y) in enumerate(places):
            place_map[y, x] = p
        self._walls = xp.asarray(walls, "int64")  # (H, W) object id of the static map
        self._place_map = xp.asarray(place_map, "int64")  # (H, W) -> place index or -1
        self._place_x = xp.asarray([x for x, _ in places], "int64")
        self._place_y = xp.asarray([y for _, y in places], "int64")
        self._place_room = xp.asarray([(x - 1) // 4 for x, _ in places], "int64")
        self._place_ids = xp.arange(len(places))
        self._offsets = xp.asarray(_OFFSETS, "int64")
        self._dx = xp.asarray([dx for dx, _ in MOVES] + [0] * c, "int64")
        self._dy = xp.asarray([dy for _, dy in MOVES] + [0] * c, "int64")
        self._target_words = xp.asarray(env._target_words, "int64")
        self._subject_words = xp.asarray(env._subject_words, "int64")
        self._say_words = xp.asarray(env._say_words, "int64")
        queue = max(env.last_instruction_step, 1)  # at most one instruction per step
        self.key = xp.zeros((n,), "int64")
        self.x = xp.full((n,), 1, "int64")
        self.y = xp.full((n,), 5, "int64")
        self.place = xp.full((n, c), -1, "int64")  # standing place of each character, -1 away
        self.away_until = xp.zeros((n, c), "int64")
        self.targets = xp.zeros((n, queue), "int64")  # instructions in the order given
        self.subjects = xp.zeros((n, queue), "int64")
        self.pending = xp.zeros((n, queue), "bool")
        self.given = xp.zeros((n,), "int64")
        self.done = xp.zeros((n,), "int64")
        self.failed = xp.zeros((n,), "int64")
        self.heard = xp.full((n, 2), -1, "int64")

    # helpers

    def _first(self, mask: Any) -> tuple[Any, Any]:
        """``(index of the first true entry per row, whether there is one)`` of a 2-d mask."""
        return self.xp.first_true(mask), mask.any(axis=1)

    def _free_place(self, t: Any, slot: int, exclude: Any | None) -> Any:
        """InstructionEnv._free_place for every env: a place index, or -1 where none is free."""
        xp, n_rooms = self.xp, self.template.n_rooms
        if exclude is None or n_rooms == 1:
            room = below(self.key, t, slot, n_rooms)
        else:
            room = below(self.key, t, slot, n_rooms - 1)
            room = room + xp.asarray(room >= exclude, "int64")
        ids = self._place_ids
        occupied = (self.place[:, :, None] == ids).any(axis=1)  # (N, P)
        agent = self._place_map[self.y, self.x]
        free = ~occupied & (ids != agent[:, None])
        in_room = free & (self._place_room == room[:, None])
        count = in_room.sum(axis=1)
        anywhere = count == 0  # a full room: try every room
        cand = xp.where(anywhere[:, None], free, in_room)
        count = cand.sum(axis=1)
        size = xp.maximum(count, xp.full(count.shape, 1, "int64"))
        pick = xp.where(
            anywhere, below(self.key, t, slot + 2, size), below(self.key, t, slot + 1, size)
        )
        chosen = xp.first_true((cand.cumsum(axis=1) == (pick + 1)[:, None]) & cand)
        return xp.where(count > 0, chosen, -1)

    def _set_column(self, array: Any, k: int, cond: Any, values: Any) -> None:
        array[:, k] = self.xp.where(cond, values, array[:, k])

    def _row_put(self, array: Any, col: Any, cond: Any, values: Any) -> None:
        """``array[n, col[n]] = values[n]`` where ``cond[n]``."""
        rows = self._rows
        array[rows, col] = self.xp.where(cond, values, array[rows, col])

    # episodes

    def _start(self, rows: Any, mask: Any, params: Any) -> None:
        xp, c = self.xp, self.template.n_characters
        if mask is None:
            if rows.shape[0] == 0:
                return
            mask = xp.zeros((self.num_envs,), "bool")
            mask[rows] = True
            self.key[rows] = params[:, 0]
        else:
            self.key[...] = xp.where(mask, params[:, 0], self.key)
        for array, value in (
            (self.x, 1), (self.y, 5), (self.given, 0), (self.done, 0), (self.failed, 0)
        ):  # fmt: skip
            array[...] = xp.where(mask, value, array)
        for array, value in ((self.place, -1), (self.away_until, 0), (self.heard, -1)):
            array[...] = xp.where(mask[:, None], value, array)
        self.pending &= ~mask[:, None]
        for k in range(c):  # characters placed one by one, at step 0
            place = self._free_place(0, SLOTS_PER_CHARACTER * k, None)
            self._set_column(self.place, k, mask, place)

    def _info(self) -> dict[str, Any]:
        return {
            "instructions_given": self.given,
            "instructions_done": self.done,
            "instructions_failed": self.failed,
            "instructions_pending": self.pending.sum(axis=1),
        }

    def _reset_info(self) -> dict[str, Any]:
        return self._info()

    def _character_cells(self) -> tuple[Any, Any]:
        """``(x, y)`` map cells ``(N, C)`` of the characters (meaningless where away)."""
        place = self.xp.where(self.place >= 0, self.place, 0)
        return self._place_x[place], self._place_y[place]

    def _transition(self, actions: Any) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
        xp, env = self.xp, self.template
        c = env.n_characters
        t = self.step_count
        present = self.place >= 0
        px, py = self._character_cells()
        # moves: into a wall or a character = stay
        nx, ny = self.x + self._dx[actions], self.y + self._dy[actions]
        blocked = (self._walls[ny, nx] == _WALL) | (
            present & (px == nx[:, None]) & (py == ny[:, None])
        ).any(axis=1)
        self.x = xp.where(blocked, self.x, nx)
        self.y = xp.where(blocked, self.y, ny)
        # tells: subject s to the neighbours (the 8 cells around the agent, before moving)
        tell = actions >= len(MOVES)
        subject = actions - len(MOVES)
        near = present & (abs(px - nx[:, None]) <= 1) & (abs(py - ny[:, None]) <= 1)
        near = near & tell[:, None]  # (N, C); nx == x on tells
        waiting = self.pending & xp.take(near, self.targets)  # (N, Q)
        match, executed = self._first(waiting & (self.subjects == subject[:, None]))
        self._row_put(self.pending, match, executed, False)
        self.done = self.done + xp.asarray(executed, "int64")
        wrong = tell & ~executed
        for k in range(c):  # a neighbour given the wrong message: its oldest instruction fails
            oldest, has = self._first(self.pending & (self.targets == k))
            fails = has & wrong & near[:, k]
            self._row_put(self.pending, oldest, fails, False)
            self.failed = self.failed + xp.asarray(fails, "int64")
        reward = xp.where(
            executed, 1.0, xp.where(wrong, -env.tell_penalty, xp.zeros(t.shape, "float64"))
        )
        self._update_world(t)
        info = {
            key: (value, xp.full((self.num_envs,), True, "bool"))
            for key, value in self._info().items()
        }
        end = t >= env.max_steps
        info["success"] = ((self.given > 0) & (self.done == self.given), end)
        return reward, xp.zeros((self.num_envs,), "bool"), info

    def _update_world(self, t: Any) -> None:
        # InstructionEnv._update_world for every env, with the same keyed draws.
        xp, env = self.xp, self.template
        c = env.n_characters
        for k in range(c):
            slot = SLOTS_PER_CHARACTER * k
            away = self.away_until[:, k] > 0
            back = away & (self.away_until[:, k] <= t)
            place = self._free_place(t, slot, None)
            back = back & (place >= 0)
            self._set_column(self.place, k, back, place)
            self._set_column(self.away_until, k, back, 0)
            if env.move_prob:
                moves = ~away & bernoulli(self.key, t, slot + 3, env.move_prob)
                room = self._place_room[xp.where(self.place[:, k] >= 0, self.place[:, k], 0)]
                place = self._free_place(t, slot + 4, room)
                self._set_column(self.place, k, moves & (place >= 0), place)
        present = self.away_until == 0
        n_present = present.sum(axis=1)
        instruct = (
            (t <= env.last_instruction_step)
            & (n_present > 0)
            & bernoulli(self.key, t, SLOT_INSTRUCTION, env.instruction_prob)
        )
        size = xp.maximum(n_present, xp.full(n_present.shape, 1, "int64"))
        j = below(self.key, t, SLOT_INSTRUCTION + 1, size)
        target = xp.first_true((present.cumsum(axis=1) == (j + 1)[:, None]) & present)
        subject = below(self.key, t, SLOT_INSTRUCTION + 2, c - 1)
        subject = subject + xp.asarray(subject >= target, "int64")  # any kind but the target
        slot = xp.where(instruct, self.given, 0)
        self._row_put(self.targets, slot, instruct, target)
        self._row_put(self.subjects, slot, instruct, subject)
        self._row_put(self.pending, slot, instruct, True)
        self.given = self.given + xp.asarray(instruct, "int64")
        self._row_put(self.away_until, target, instruct, t + env.execute_delay)
        self._row_put(self.place, target, instruct, -1)
        say = ~instruct & bernoulli(self.key, t, SLOT_INSTRUCTION + 3, env.distractor_prob)
        word = self._say_words[below(self.key, t, SLOT_INSTRUCTION + 4, len(_SAY))]
        none = xp.full((self.num_envs,), -1, "int64")
        self.heard[:, 0] = xp.where(instruct, self._target_words[target], xp.where(say, word, none))
        self.heard[:, 1] = xp.where(instruct, self._subject_words[subject], none)

    def _cells(self) -> tuple[Any, Any]:
        xp = self.xp
        cy = (self.y[:, None] + self._offsets)[:, :, None]  # (N, 3, 1)
        cx = (self.x[:, None] + self._offsets)[:, None, :]  # (N, 1, 3)
        ids = self._walls[cy, cx]  # (N, 3, 3)
        px, py = self._character_cells()
        for k in range(self.template.n_characters):
            at = (cx == px[:, k, None, None]) & (cy == py[:, k, None, None])
            ids = xp.where(at & (self.place[:, k, None, None] >= 0), _CHARACTER + k, ids)
        return ids, self.heard
