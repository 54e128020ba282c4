"""The multi-room Portal task, batched: each env's doors, room and position as arrays."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from envs.base import MOVES
from envs.batched.base import BatchedTaskEnv
from envs.portal import DOOR_COLOURS, DOOR_SLOTS, ROOM, PortalEnv, draw_doors

__all__ = ["PortalVectorEnv"]

# Object ids of a cell: empty, wall, then a door of each colour.
_EMPTY, _WALL, _DOOR = 0, 1, 2
# A room packed in one integer: bits 0-10 the door colour of each wall slot s (base 6 digit s:
# 0 none, 1 + colour), bits 11-18 the door's kind at slot s (2 bits at 11 + 2 s: 0 none,
# 1 correct, 2 wrong), bit 19 set once a mistake was made in the room.
_N_CODES = 6 ** len(DOOR_SLOTS)
_CODE_MASK = (1 << 11) - 1
_KIND_SHIFT = 11
_MISTAKE = 1 << 19
_NO_DOOR = 20  # a shift that reads no door kind
_POW6 = 6 ** np.arange(len(DOOR_SLOTS))
# draw_doors' uniforms per room: the slots' (4), the colours' (5), the correct door's (1)
_N_UNIFORMS = len(DOOR_SLOTS) + len(DOOR_COLOURS) + 1
# the pairs (earlier, later) of a room's slot uniforms, then of its colour uniforms
_PAIRS = [
    (first + i, first + j)
    for first, count in ((0, len(DOOR_SLOTS)), (len(DOOR_SLOTS), len(DOOR_COLOURS)))
    for i in range(count)
    for j in range(i + 1, count)
]
# (earlier, later uniforms, their pairs' indices) grouped by the earlier uniform
_PAIR_GROUPS = [
    (i, slice(_PAIRS[k][1], _PAIRS[k][1] + n), slice(k, k + n))
    for k, (i, j) in enumerate(_PAIRS)
    if k == 0 or _PAIRS[k - 1][0] != i
    for n in [sum(1 for e, _ in _PAIRS if e == i)]
]
_GATHER_BITS = np.uint64(0x0102040810204080)  # 8 bytes of 0/1 times this: the bits at 56..63


def pack_rooms(slots: np.ndarray, colours: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Packs :func:`envs.portal.draw_doors` output (leading dims ``(..., rooms)``, the doors in
    the last axis) into one integer per room (see the bit layout above), int64."""
    kinds = np.stack([1 + correct, 2 - correct], axis=-1)  # door i is correct iff i == correct
    packed = (colours + 1) * _POW6[slots] + (kinds << (_KIND_SHIFT + 2 * slots))
    return packed.sum(axis=-1).astype(np.int64)


@functools.cache
def _room_table() -> np.ndarray:
    """The packed room (int64) of each comparison pattern of a room's uniforms: bit ``k`` set
    when the later uniform of ``_PAIRS[k]`` is strictly smaller, then the correct-door bit
    (the last uniform below 0.5: door 1 is correct, as in draw_doors). Built from every order
    of the slots' and the colours' uniforms (a tie orders as the strict order that puts the
    earlier index first, as a stable argsort does)."""
    n_pairs = len(_PAIRS)
    table = np.zeros(1 << (n_pairs + 1), np.int64)
    for values in itertools.product(
        itertools.permutations(range(len(DOOR_SLOTS))),
        itertools.permutations(range(len(DOOR_COLOURS))),
    ):
        u = np.concatenate(values)  # the ranks of the uniforms of the slots, the colours
        pattern = sum(1 << k for k, (i, j) in enumerate(_PAIRS) if u[j] < u[i])
        slots = np.argsort(values[0])[:2]
        colours = np.argsort(values[1])[:2]
        for correct in (0, 1):
            code = int(pack_rooms(slots, colours, np.array(correct)))
            table[pattern | (correct << n_pairs)] = code
    return table


class PortalVectorEnv(BatchedTaskEnv):
    """``num_envs`` Portal envs (:class:`envs.portal.PortalEnv`) stepped as arrays.

    Same observations, rewards, flags and infos as a ``SyncVectorEnv`` of the single env with the
    same seeds. Each env's state is its doors (per room: two wall slots, two colours, which one
    is correct), its mistakes per room, the current room and the agent's cell inside the room.
    Each room is packed in one integer (its door colour and kind per wall slot, and whether a
    mistake was made in it), so a step is a few table lookups (the cell moved to and the door
    walked into, per cell and action, read from the current room's integer), and the view is one
    gather of a precomputed table (cell in the room times the room's door colours: 169
    distinct views), plus the room's word.

    Args:
        num_envs: number of envs, at least 1.
        n_rooms: number of rooms, as :class:`~envs.portal.PortalEnv`.
        max_steps: step limit of an episode, as :class:`~envs.portal.PortalEnv`.
        device: ``None``/``"numpy"`` (numpy arrays) or a torch device (tensors on it).
        render_mode: ``None`` or ``"rgb_array"`` (env 0's map).
        ring: episodes drawn ahead per env (see :class:`~envs.batched.base.BatchedTaskEnv`).
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (default, as gymnasium's) or
            ``AutoresetMode.SAME_STEP`` (see :class:`~envs.batched.base.BatchedTaskEnv`).
    """

    single_env_class = PortalEnv
    draw_chunk = 512  # (an episode draws 10 * (n_rooms - 1) raw words)

    def __init__(
        self,
        num_envs: int = 1,
        n_rooms: int = 50,
        max_steps: int = 1000,
        *,
        device: Any = None,
        render_mode: str | None = None,
        ring: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        self.param_size = PortalEnv(n_rooms=n_rooms, max_steps=max_steps).n_rooms  # packed rooms
        super().__init__(
            num_envs,
            {"n_rooms": n_rooms, "max_steps": max_steps},
            device=device,
            render_mode=render_mode,
            ring=ring,
            autoreset_mode=autoreset_mode,
        )

    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        # PortalEnv._gen_grid's draw; the last room has no doors (0)
        return np.append(pack_rooms(*draw_doors(rng, self.template.n_rooms)), 0)

    def _draw_many(self, envs: np.ndarray, counts: np.ndarray) -> np.ndarray:
        # draw_doors for many episodes, from the same numbers: Generator.random's uniforms are
        # u = (raw >> 11) * 2**-53 from the raw 64-bit outputs, so raw >> 11 (= u * 2**53) is
        # compared directly. The first two indices of a stable argsort depend only on which of
        # each pair of uniforms is smaller (the later one first only if strictly smaller): a
        # room's 6 slot and 10 colour comparisons and its correct-door bit index a table of
        # packed rooms.
        rooms = self.template.n_rooms
        size = (rooms - 1) * _N_UNIFORMS
        rngs = self._rngs
        pairs = zip(envs.tolist(), counts.tolist(), strict=True)
        raw = np.concatenate([rngs[i].bit_generator.random_raw(c * size) for i, c in pairs])
        # u53[k] = the k-th uniform of every room, contiguous (fast comparisons)
        u53 = np.empty((_N_UNIFORMS, len(raw) // _N_UNIFORMS), np.uint64)
        np.right_shift(raw.reshape(-1, _N_UNIFORMS).T, np.uint64(11), out=u53)
        bits = np.zeros((u53.shape[1], 24), bool)  # a room's pattern bits, then padding
        by_pair = bits.T
        for earlier, later, at in _PAIR_GROUPS:
            np.less(u53[later], u53[earlier], out=by_pair[at])
        np.less(u53[-1], np.uint64(1 << 52), out=by_pair[len(_PAIRS)])  # u < 0.5
        # each 8 bools (0/1 bytes) to the 8 bits of a byte by one product, then 3 bytes
        byte = (bits.view(np.uint64) * _GATHER_BITS) >> np.uint64(56)
        pattern = byte[:, 0] | (byte[:, 1] << np.uint64(8)) | (byte[:, 2] << np.uint64(16))
        packed = np.zeros((int(counts.sum()), rooms), np.int64)
        packed[:, :-1] = _room_table().take(pattern).reshape(-1, rooms - 1)
        return packed

    def _allocate(self) -> None:
        xp, n, rooms = self.xp, self.num_envs, self.template.n_rooms
        index = self.template.word_index
        vocab = len(self.vocab)
        table = np.zeros((2 + len(DOOR_COLOURS), vocab), np.uint8)
        table[_WALL, index["wall"]] = 1
        for k, colour in enumerate(DOOR_COLOURS):
            table[_DOOR + k, [index["door"], index[colour]]] = 1
        self.word_table = xp.asarray(table, "uint8")
        cells = ROOM * ROOM  # a room's cells, y * ROOM + x
        # per (cell, action): 4 * the cell moved to on the floor (doors and walls stop), and the
        # shift of the kind of the door walked into (_NO_DOOR for none)
        moved4 = np.zeros((cells, 4), np.int64)
        shift = np.full((cells, 4), _NO_DOOR, np.int64)
        for cell in range(cells):
            y, x = divmod(cell, ROOM)
            for a, (dx, dy) in enumerate(MOVES):
                nx, ny = x + dx, y + dy
                inside = 1 <= nx <= ROOM - 2 and 1 <= ny <= ROOM - 2
                moved4[cell, a] = 4 * (ny * ROOM + nx if inside else cell)
                if (nx, ny) in DOOR_SLOTS:
                    shift[cell, a] = _KIND_SHIFT + 2 * DOOR_SLOTS.index((nx, ny))
        self._moved4 = xp.asarray(moved4.reshape(-1), "int64")
        self._shift = xp.asarray(shift.reshape(-1), "int64")
        # The view (without the room's word) depends on the cell and the room's door colours
        # only: _view_of[cell * _N_CODES + code] indexes the distinct views.
        views: dict[bytes, int] = {}
        view_of = np.zeros((cells, _N_CODES), np.int64)
        rows = []
        for cell in range(cells):
            y, x = divmod(cell, ROOM)
            if not (1 <= x <= ROOM - 2 and 1 <= y <= ROOM - 2):
                continue
            for code in range(_N_CODES):
                ids = np.full((3, 3), _EMPTY, np.int64)
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        cx, cy = x + dx, y + dy
                        digit = 0
                        if (cx, cy) in DOOR_SLOTS:
                            digit = code // 6 ** DOOR_SLOTS.index((cx, cy)) % 6
                        if digit:
                            ids[dy + 1, dx + 1] = _DOOR + digit - 1
                        elif cx in (0, ROOM - 1) or cy in (0, ROOM - 1):
                            ids[dy + 1, dx + 1] = _WALL
                obs = table[ids]
                obs[1, 1, self._agent_word] = 1
                key = obs.tobytes()
                if key not in views:
                    views[key] = len(rows)
                    rows.append(obs)
                view_of[cell, code] = views[key]
        self._views = xp.asarray(np.stack(rows), "uint8")  # (169, 3, 3, V)
        self._view_of = xp.asarray(view_of.reshape(-1), "int64")
        # the room's word, at the flat index of the centre cell of env i's observation
        room_words = [index[f"room:{k + 1}"] for k in range(rooms)]
        self._room_word = xp.asarray(room_words, "int64")
        self._centre_at = xp.arange(n) * (9 * vocab) + 4 * vocab
        self._rewards = xp.asarray([0.1 * (k + 1) for k in range(rooms)], "float64")
        self._centre4 = 4 * ((ROOM // 2) * ROOM + ROOM // 2)
        self._room_at = xp.arange(n) * rooms  # flat index of env i's room 0 in room_info
        self.room_info = xp.zeros((n, rooms), "int64")  # packed rooms, see pack_rooms
        self.cur = xp.zeros((n,), "int64")  # the current room's packed info
        self.room = xp.zeros((n,), "int64")  # 0-based
        self.rooms_reached = xp.full((n,), 1, "int64")
        self.pos4 = xp.full((n,), self._centre4, "int64")  # 4 * the agent's cell in the room

    def _start(self, rows: Any, mask: Any, params: Any) -> None:
        self._set(self.room_info, rows, mask, params)
        self._set(self.cur, rows, mask, params[:, 0])
        self._set(self.room, rows, mask, 0)
        self._set(self.rooms_reached, rows, mask, 1)
        self._set(self.pos4, rows, mask, self._centre4)

    def _info(self) -> dict[str, Any]:
        return {"room": self.room + 1, "rooms_reached": self.rooms_reached}

    def _reset_info(self) -> dict[str, Any]:
        return self._info()

    def _transition(self, actions: Any) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
        if self.xp.is_numpy:
            return self._transition_numpy(actions)
        xp, cur, room = self.xp, self.cur, self.room
        move = self.pos4 + actions
        door = (cur >> self._shift[move]) & 3
        right, wrong = door == 1, door == 2
        # a correct door: reward 0.1 * k from room k to k + 1 (rooms numbered from 1)
        reward = self._rewards[room] * right
        # a wrong door: a mistake in this room (the second ends the episode), back to room 1
        repeated = wrong & ((cur & _MISTAKE) > 0)
        self.room_info.reshape(-1)[self._room_at + room] = cur | (wrong * _MISTAKE)
        room = xp.where(wrong, 0, room + right)
        self.room = room
        self.cur = xp.take(self.room_info, room[:, None])[:, 0]
        self.pos4 = xp.where(door > 0, self._centre4, self._moved4[move])
        self.rooms_reached = xp.maximum(self.rooms_reached, room + 1)
        success = right & (room == self.template.n_rooms - 1)
        terminated = success | repeated
        info = {key: (value, None) for key, value in self._info().items()}
        info["success"] = (success, terminated)
        return reward, terminated, info

    def _transition_numpy(self, actions: Any) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
        # _transition on numpy: every env moves (a table lookup); the envs that walk into a
        # door (a few in a hundred) are updated by index.
        n = self.num_envs
        move = self.pos4 + actions
        door = (self.cur >> self._shift.take(move)) & 3
        pos4 = self._moved4.take(move)
        reward = np.zeros(n)
        terminated = np.zeros(n, bool)
        success = np.zeros(n, bool)
        hit = door.nonzero()[0]
        if len(hit):
            right = door[hit] == 1
            wrong = ~right
            room, cur = self.room[hit], self.cur[hit]
            # a correct door: reward 0.1 * k from room k to k + 1 (rooms numbered from 1)
            reward[hit] = self._rewards[room] * right
            # a wrong door: a mistake in this room (the second ends the episode), to room 1
            self.room_info[hit, room] = cur | (wrong * _MISTAKE)
            room = (room + right) * right
            self.room[hit] = room
            self.cur[hit] = self.room_info[hit, room]
            pos4[hit] = self._centre4
            self.rooms_reached[hit] = np.maximum(self.rooms_reached[hit], room + 1)
            won = right & (room == self.template.n_rooms - 1)
            success[hit] = won
            terminated[hit] = won | (wrong & ((cur & _MISTAKE) > 0))
        self.pos4 = pos4
        info = {key: (value, None) for key, value in self._info().items()}
        info["success"] = (success, terminated)
        return reward, terminated, info

    def _observe(self) -> Any:
        xp = self.xp
        view = self._view_of[self.pos4 * (_N_CODES // 4) + (self.cur & _CODE_MASK)]
        word = self._centre_at + self._room_word[self.room]
        if xp.is_numpy:
            obs = np.take(self._views, view, axis=0)
            obs.reshape(-1)[word] = 1
            return obs
        obs = self._views[view]
        obs.reshape(-1)[word] = 1
        return obs
