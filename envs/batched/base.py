"""Shared machinery of the batched tasks: backends, per-env seeding, autoreset, infos, state.

A batched task keeps the state of all ``N`` envs in arrays (numpy, or torch tensors on a device)
and implements three array functions: :meth:`BatchedTaskEnv._start` (begin new episodes for some
envs from their drawn parameters), :meth:`BatchedTaskEnv._transition` (one step of every env)
and :meth:`BatchedTaskEnv._observe` (the ``(N, 3, 3, V)`` observation, a gather of precomputed
word rows).

Randomness replays the single env exactly: env ``i`` owns a ``np.random.Generator`` seeded like
the single env's ``np_random`` (``seed + i`` for an int seed, as ``SyncVectorEnv`` does), and each
episode's parameters (a corridor length, a portal's doors, an instruction key) are drawn from it
by the single env's own draw, on the host. Draws are made ahead into a ring of ``ring`` episodes
per env, checked every ``period`` steps (an env starts at most one episode per step): an env left
with fewer than ``period`` drawn episodes is topped up to ``ring``. So a step on a device never
waits for the host except at a check (one small copy of the per-env episode counters), and on the
host each top-up draws several episodes of an env at once (``period = ring // 2``), and the draws
of many episodes share their array work.
"""

from __future__ import annotations

import copy
import sys
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

__all__ = ["Backend", "BatchedTaskEnv"]

_DTYPES = ("int64", "bool", "uint8", "float64")


class Backend:
    """Array creation and the few operations that differ between numpy and torch.

    Args:
        device: ``None`` or ``"numpy"`` for numpy arrays on the host, else a torch device
            (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``).
    """

    def __init__(self, device: Any = None) -> None:
        if device is None or device == "numpy":
            self.torch = None
            self.device = None
            self.force_masked = False
            self._row_starts: dict[tuple[int, int], np.ndarray] = {}
            self.dtypes = {name: np.dtype(name) for name in _DTYPES}
            return
        import torch

        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"device must be None, 'numpy' or a torch device ('cpu', 'cuda'), got {device!r}"
            ) from err
        self.torch = torch
        self.force_masked = False  # tests: run the accelerator code path on the CPU
        self.dtypes = {name: getattr(torch, name) for name in _DTYPES}
        self.dtypes["bool"] = torch.bool

    @property
    def is_numpy(self) -> bool:
        """True for the numpy backend."""
        return self.torch is None

    @property
    def masked_writes(self) -> bool:
        """True where updates of some rows are full-width ``where`` writes (no host sync)."""
        return self.torch is not None and (self.device.type != "cpu" or self.force_masked)

    def zeros(self, shape: Sequence[int], dtype: str) -> Any:
        """An array of zeros."""
        if self.torch is None:
            return np.zeros(tuple(shape), self.dtypes[dtype])
        return self.torch.zeros(tuple(shape), dtype=self.dtypes[dtype], device=self.device)

    def full(self, shape: Sequence[int], value: Any, dtype: str) -> Any:
        """An array filled with ``value``."""
        if self.torch is None:
            return np.full(tuple(shape), value, self.dtypes[dtype])
        return self.torch.full(tuple(shape), value, dtype=self.dtypes[dtype], device=self.device)

    def asarray(self, x: Any, dtype: str) -> Any:
        """``x`` (a host array, or an array of this backend) as an array of this backend."""
        if self.torch is None:
            return np.asarray(x, self.dtypes[dtype])
        if isinstance(x, self.torch.Tensor):
            return x.to(device=self.device, dtype=self.dtypes[dtype])
        return self.torch.as_tensor(np.asarray(x), device=self.device).to(self.dtypes[dtype])

    def astype(self, x: Any, dtype: str) -> Any:
        """``x`` converted to ``dtype`` (a copy)."""
        if self.torch is None:
            return x.astype(self.dtypes[dtype])
        return x.to(self.dtypes[dtype])

    def clip(self, x: Any, low: Any, high: Any, out: Any = None) -> Any:
        """``min(max(x, low), high)`` elementwise (``low`` a scalar, ``high`` scalar or array)."""
        if self.torch is None:
            y = np.maximum(x, low, out=out)
            return np.minimum(y, high, out=y)
        t = self.torch
        y = t.clamp(x, min=low)
        y = t.minimum(y, high) if t.is_tensor(high) else t.clamp(y, max=high)
        if out is None:
            return y
        out.copy_(y)
        return out

    def arange(self, n: int) -> Any:
        """``[0, n)`` as int64."""
        if self.torch is None:
            return np.arange(n, dtype=np.int64)
        return self.torch.arange(n, device=self.device)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        """Elementwise ``a if cond else b`` (scalars allowed)."""
        if self.torch is None:
            return np.where(cond, a, b)
        t = self.torch
        if not isinstance(a, t.Tensor):
            a = t.as_tensor(a, device=self.device, dtype=b.dtype if t.is_tensor(b) else None)
        if not isinstance(b, t.Tensor):
            b = t.as_tensor(b, device=self.device, dtype=a.dtype)
        return t.where(cond, a, b)

    def stack(self, arrays: Sequence[Any], axis: int) -> Any:
        """Stacks arrays along a new axis."""
        if self.torch is None:
            return np.stack(arrays, axis=axis)
        return self.torch.stack(list(arrays), dim=axis)

    def first_true(self, mask: Any) -> Any:
        """Index of the first true entry of each row of a 2-d bool mask (0 where none)."""
        if self.torch is None:
            return mask.argmax(axis=1)
        return mask.to(self.torch.uint8).argmax(dim=1)

    def take(self, array: Any, index: Any) -> Any:
        """``array[n, index[n, j]]`` for 2-d ``array`` and ``index`` (numpy's take_along_axis)."""
        if self.torch is None:
            # flat indexing: faster than take_along_axis for small rows
            n, cols = array.shape
            starts = self._row_starts.get((n, cols))
            if starts is None:
                starts = self._row_starts[(n, cols)] = np.arange(0, n * cols, cols)[:, None]
            return array.reshape(-1)[starts + index]
        return self.torch.gather(array, 1, index)

    def maximum(self, a: Any, b: Any) -> Any:
        """Elementwise maximum of two arrays."""
        return np.maximum(a, b) if self.torch is None else self.torch.maximum(a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        """Elementwise minimum of an array and an array or a scalar."""
        if self.torch is None:
            return np.minimum(a, b)
        t = self.torch
        return t.minimum(a, b) if t.is_tensor(b) else t.clamp(a, max=b)

    def nonzero(self, mask: Any) -> Any:
        """Indices of the true entries of a 1-d mask."""
        if self.torch is None:
            return np.flatnonzero(mask)
        return self.torch.nonzero(mask).reshape(-1)

    def nonzero2(self, mask: Any) -> tuple[Any, Any]:
        """``(rows, cols)`` of the true entries of a 2-d mask, in row-major order."""
        if self.torch is None:
            return np.nonzero(mask)
        return self.torch.nonzero(mask, as_tuple=True)

    def cummax(self, x: Any) -> Any:
        """Running maximum of a 1-d array."""
        if self.torch is None:
            return np.maximum.accumulate(x)
        return self.torch.cummax(x, 0).values

    def to_numpy(self, x: Any) -> np.ndarray:
        """A host numpy copy (a device sync on accelerators)."""
        return np.asarray(x) if self.torch is None else x.detach().cpu().numpy()

    def copy(self, x: Any) -> Any:
        """A copy of an array."""
        return x.copy() if self.torch is None else x.clone()


class BatchedTaskEnv(VectorEnv):
    """A ``VectorEnv`` of ``num_envs`` copies of a single word-grid task, stepped as arrays.

    Semantics are those of ``gymnasium.vector.SyncVectorEnv`` in the same autoreset mode.
    NEXT_STEP (the default, as gymnasium's): the step after an env's episode ends resets it (its
    action is ignored, reward 0, flags False, the reset's info). SAME_STEP: the step that ends an
    episode returns the next episode's first observation (and the reset's info), with the ending
    step's observation in ``info["final_obs"]`` and its info in ``info["final_info"]`` (masks
    ``info["_final_obs"]``, ``info["_final_info"]``: the envs that ended). ``final_obs`` is, as
    in ``SyncVectorEnv``, a numpy object array (``None`` where no episode ended) on the numpy
    backend; on torch it is one ``(N, 3, 3, V)`` tensor on the device, zero where no episode
    ended (no host work). Infos use gymnasium's vector format (``info[key]`` array plus
    ``info["_key"]`` mask). On host backends (numpy, torch on the CPU) a key appears only when
    some env reports it, as with ``SyncVectorEnv``; on accelerators every key of the task is
    always present (with an all-false mask when no env reports it), because checking would need
    a host sync.

    Subclasses set ``single_env_class`` and implement :meth:`_draw`, :meth:`_allocate`,
    :meth:`_start`, :meth:`_transition` and :meth:`_observe`.

    Args:
        num_envs: number of envs, at least 1.
        single_kwargs: constructor arguments of the single env (the task's configuration).
        device: ``None``/``"numpy"`` (numpy arrays, the default) or a torch device: the
            observations, rewards, flags and infos are then tensors on that device.
        render_mode: ``None`` or ``"rgb_array"`` (``render()`` draws env 0).
        ring: episodes drawn ahead per env, at least 1; the draws are checked every
            ``ring`` steps on accelerators (one host sync each), every ``max(1, ring // 2)``
            steps on host backends; ``None`` picks the task's ``default_ring``.
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` (default) or ``AutoresetMode.SAME_STEP``
            (or their values, ``"NextStep"``, ``"SameStep"``); also in
            ``metadata["autoreset_mode"]``.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["rgb_array"],
        "render_fps": 10,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }
    single_env_class: ClassVar[type[gym.Env]]
    param_size: ClassVar[int]
    """Length of the int64 parameter vector that :meth:`_draw` returns per episode."""
    default_ring: ClassVar[int] = 16
    """``ring`` when none is given."""
    draw_chunk: ClassVar[int] = 4096
    """Most episodes drawn by one :meth:`_draw_many` call (bounds its arrays' size)."""

    def __init__(
        self,
        num_envs: int,
        single_kwargs: dict[str, Any],
        *,
        device: Any = None,
        render_mode: str | None = None,
        ring: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        modes = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            mode = None
        if mode not in modes:
            raise ValueError(
                f"autoreset_mode must be one of {[m.value for m in modes]} (AutoresetMode), "
                f"got {autoreset_mode!r}"
            )
        self.autoreset_mode = mode
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)):
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.xp = Backend(device)
        if ring is None:
            ring = self.default_ring
        if isinstance(ring, bool) or not isinstance(ring, int) or ring < 1:
            raise ValueError(f"ring must be an integer >= 1, got {ring!r}")
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.device = self.xp.device
        self.ring = ring
        # The single env is the reference of the task: spaces, vocabulary, validated arguments.
        self.template = self.single_env_class(**single_kwargs)
        self.single_kwargs = dict(single_kwargs)
        self.vocab: list[str] = self.template.vocab
        self.single_observation_space = self.template.observation_space
        self.single_action_space = self.template.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._n_actions = int(self.single_action_space.n)
        self._agent_word = self.template.word_index["agent"]
        self.metadata = {**self.metadata, "autoreset_mode": mode}

        n, xp = self.num_envs, self.xp
        self._rows = xp.arange(n)
        self._rngs: list[np.random.Generator] = []
        self._drawn = np.zeros(n, np.int64)  # episodes drawn per env (host)
        self._half_word = np.full(n, -1, np.int64)  # see _word
        self._queued: dict[int, list[int]] = {}  # see _integers_many
        self._started = xp.zeros((n,), "int64")  # episodes started per env (device)
        self._params = xp.zeros((n, ring, self.param_size), "int64")
        self._since_refill = 0
        self._autoreset = xp.zeros((n,), "bool")
        self.step_count = xp.zeros((n,), "int64")
        self._allocate()
        self._render_env: gym.Env | None = None
        if render_mode == "rgb_array":
            self._render_env = self.single_env_class(**single_kwargs, render_mode="rgb_array")

    # task interface

    @abstractmethod
    def _draw(self, rng: np.random.Generator) -> np.ndarray:
        """One episode's parameters, drawn from ``rng`` exactly as the single env's reset does."""

    @abstractmethod
    def _allocate(self) -> None:
        """Creates the state arrays of all envs."""

    @abstractmethod
    def _start(self, rows: Any, mask: Any, params: Any) -> None:
        """Begins new episodes: ``rows`` and ``mask`` select the envs (see :meth:`_set`),
        ``params`` are their drawn parameters (one row per selected row)."""

    @abstractmethod
    def _reset_info(self) -> dict[str, Any]:
        """The info of a reset, as arrays over all envs, from the current state."""

    @abstractmethod
    def _transition(self, actions: Any) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
        """Steps every env (``step_count`` already incremented): ``(reward, terminated, info)``,
        ``info`` mapping each key to ``(values, mask)`` arrays over all envs."""

    @abstractmethod
    def _observe(self) -> Any:
        """The ``(N, 3, 3, V)`` uint8 observation of every env, from the current state."""

    word_table: Any
    """``(K, V)`` uint8: the words of each object id (set by :meth:`_allocate`)."""

    # helpers for subclasses

    def _select(self, mask: Any) -> tuple[Any, Any]:
        """``(rows, mask)`` for :meth:`_set`: indices of the masked envs, or (on accelerators,
        to avoid a sync) all rows with the mask kept for ``where`` writes."""
        if self.xp.masked_writes:
            return self._rows, mask
        return self.xp.nonzero(mask), None

    def _set(self, array: Any, rows: Any, mask: Any, values: Any) -> None:
        """``array[rows] = values`` for the rows selected by :meth:`_select`."""
        if mask is None:
            array[rows] = values
            return
        m = mask.reshape(-1, *([1] * (array.ndim - 1)))
        array[...] = self.xp.where(m, values, array)

    # seeding and the ring of drawn episodes

    def _seed(self, seed: int | Sequence[int | None] | None, mask: np.ndarray) -> None:
        n = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(n)]
        else:
            seeds = list(seed)
            if len(seeds) != n:
                raise ValueError(f"seed must be an int or a list of {n} seeds, got {seed!r}")
        started = self.xp.to_numpy(self._started)
        for i in range(n):
            if not mask[i] or (seeds[i] is None and i < len(self._rngs)):
                continue
            rng, _ = seeding.np_random(seeds[i])
            if i < len(self._rngs):
                self._rngs[i] = rng
            else:
                self._rngs.append(rng)
            self._half_word[i] = -1
            self._drawn[i] = started[i]  # forget episodes drawn from the old generator
            if i == 0 and self._render_env is not None:
                self._render_env.reset(seed=0)
                self._render_env._np_random = copy.deepcopy(rng)

    @property
    def period(self) -> int:
        """Steps between two checks of the drawn episodes (see the module docstring)."""
        return self.ring if self.xp.masked_writes else max(1, self.ring // 2)

    def _refill(self) -> None:
        # One host sync: the envs left with fewer than `period` drawn episodes (enough for the
        # steps up to the next check) are topped up to `ring`, in order.
        started = self.xp.to_numpy(self._started)
        left = self._drawn - started
        envs = (left < self.period).nonzero()[0]
        if len(envs):
            counts = self.ring - left[envs]
            ends = np.cumsum(counts)
            start = 0
            while start < len(envs):  # at most `draw_chunk` episodes a call (or one env's)
                limit = ends[start] - counts[start] + self.draw_chunk
                stop = max(int(np.searchsorted(ends, limit, side="right")), start + 1)
                self._draw_into(envs[start:stop], counts[start:stop])
                start = stop
        self._since_refill = 0

    def _draw_into(self, envs: np.ndarray, counts: np.ndarray) -> None:
        """Draws the next ``counts[j]`` episodes of env ``envs[j]`` (host arrays, distinct envs)
        into the ring, with one :meth:`_draw_many` call for all."""
        first = self._drawn[envs]
        env_idx = np.repeat(envs, counts)
        offsets = np.arange(len(env_idx)) - np.repeat(np.cumsum(counts) - counts, counts)
        episode = np.repeat(first, counts) + offsets
        self._drawn[envs] = first + counts
        params = self._draw_many(envs, counts)
        xp = self.xp
        slots = episode % self.ring
        if xp.is_numpy:
            self._params[env_idx, slots] = params
        else:
            index = (xp.asarray(env_idx, "int64"), xp.asarray(slots, "int64"))
            self._params[index] = xp.asarray(params, "int64")

    def _begin(self, rows: Any, mask: Any) -> dict[str, Any]:
        """Starts the next drawn episode of the selected envs (see :meth:`_select`); returns the
        reset info over all envs (meaningful at the selected rows)."""
        params = self._params[rows, self._started[rows] % self.ring]
        self._start(rows, mask, params)
        self._set(self.step_count, rows, mask, 0)
        if mask is None:
            self._started[rows] += 1
        else:
            self._started += mask
        return self._reset_info()

    def _draw_many(self, envs: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``counts[j]`` episodes of env ``envs[j]`` (distinct envs), drawn in turn by
        :meth:`_draw` from the env's generator, stacked (an env's rows together, in order);
        tasks may batch the work."""
        rngs = self._rngs
        pairs = zip(envs.tolist(), counts.tolist(), strict=True)
        return np.stack([self._draw(rngs[i]) for i, c in pairs for _ in range(c)])

    def _word(self, i: int) -> int:
        """The next 32-bit word of env ``i``'s generator, as numpy's bounded integer draws take
        them: the low half of a 64-bit output, then (at the next call) its high half.

        For tasks whose draws are all bounded integers of ranges below ``2**32``: they may then
        draw through this, several times faster than a ``Generator.integers`` call, and get
        the same numbers as the single env's ``integers`` calls, provided every draw of the
        env's generator goes through here (the pending high half is kept in ``_half_word``).
        """
        if self._queued:  # words taken from the generator ahead (see _integers_many)
            queue = self._queued.get(i)
            if queue:
                return queue.pop(0)
        half = self._half_word[i]
        if half >= 0:
            self._half_word[i] = -1
            return int(half)
        raw = int(self._rngs[i].bit_generator.random_raw())
        self._half_word[i] = raw >> 32
        return raw & 0xFFFFFFFF

    def _integers(self, i: int, span: int) -> int:
        """``Generator.integers(span)`` of env ``i`` through :meth:`_word` (``1 <= span <=
        2**32 - 1``): numpy's method (Lemire's), which redraws when the low half of ``word *
        span`` falls below ``(2**32 - span) % span`` (never for a power of two)."""
        if span == 1:
            return 0  # numpy draws nothing
        product = self._word(i) * span
        if product & 0xFFFFFFFF < span:
            threshold = ((1 << 32) - span) % span
            while product & 0xFFFFFFFF < threshold:
                product = self._word(i) * span
        return product >> 32

    def _integers_many(
        self, envs: np.ndarray, counts: np.ndarray, spans: Sequence[int]
    ) -> np.ndarray:
        """``(counts.sum(), len(spans))``: ``counts[j]`` rows for env ``envs[j]`` (distinct
        envs), each row ``[_integers(env, span) for span in spans]``, drawn in turn from the
        generators' 32-bit words as :meth:`_integers` takes them.

        The words of each env come from one ``random_raw`` call; the numbers are one array
        product. An env with a word that numpy's method may redraw (the low half of ``word *
        span`` below ``span``: about ``span / 2**32`` per word) is replayed by :meth:`_integers`
        from the same words."""
        envs = np.asarray(envs, np.int64)
        counts = np.asarray(counts, np.int64)
        out = np.zeros((int(counts.sum()), len(spans)), np.int64)
        cols = [c for c, span in enumerate(spans) if span > 1]  # (a span of 1 draws nothing)
        if not len(out) or not cols:
            return out
        width = len(cols)
        span_arr = np.asarray([spans[c] for c in cols], np.uint64)
        half = self._half_word[envs]
        has_half = (half >= 0).astype(np.int64)
        need = counts * width  # words per env
        n_raw = (need - has_half + 1) // 2
        rngs = self._rngs
        pairs = zip(envs.tolist(), n_raw.tolist(), strict=True)
        raws = np.concatenate([rngs[i].bit_generator.random_raw(r) for i, r in pairs])
        # each env's words: its pending high half (if any), then the raws' low and high halves
        seg = has_half + 2 * n_raw
        ends = np.cumsum(seg)
        words = np.empty(int(ends[-1]), np.uint64)
        is_raw = np.ones(len(words), bool)
        with_half = has_half > 0
        if with_half.any():
            is_raw[(ends - seg)[with_half]] = False
            words[~is_raw] = half[with_half]
        words[is_raw] = np.stack([raws & np.uint64(0xFFFFFFFF), raws >> np.uint64(32)], 1).ravel()
        spare = seg > need  # one word left over: the env's next pending half
        used = np.ones(len(words), bool)
        used[ends[spare] - 1] = False
        product = words[used].reshape(-1, width) * span_arr
        out[:, cols] = product >> np.uint64(32)
        self._half_word[envs] = -1
        self._half_word[envs[spare]] = words[ends[spare] - 1]
        redraw = ((product & np.uint64(0xFFFFFFFF)) < span_arr).any(axis=1)
        if redraw.any():
            # replay those envs word by word (their words queued ahead of the generator)
            row_env = np.repeat(np.arange(len(envs)), counts)
            for j in np.unique(row_env[redraw]).tolist():
                k = int(envs[j])
                self._half_word[k] = -1
                self._queued[k] = words[ends[j] - seg[j] : ends[j]].tolist()
                for r in np.flatnonzero(row_env == j).tolist():
                    out[r, cols] = [self._integers(k, int(span)) for span in span_arr.tolist()]
                left = self._queued.pop(k)
                if left:  # at most the one spare word
                    self._half_word[k] = left[0]
        return out

    # gymnasium API

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """Resets every env (or those of ``options["reset_mask"]``, a bool array).

        ``seed``: an int (env ``i`` gets ``seed + i``), a list of ``num_envs`` seeds or ``None``.
        """
        n = self.num_envs
        host_mask = np.ones(n, bool)
        if options and "reset_mask" in options:
            host_mask = np.asarray(self.xp.to_numpy(options["reset_mask"]), bool)
            if host_mask.shape != (n,) or not host_mask.any():
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({n},) with a True "
                    f"entry, got {options['reset_mask']!r}"
                )
        self._seed(seed, host_mask)
        self._refill()
        mask = self.xp.asarray(host_mask, "bool")
        rows, m = self._select(mask)
        reset_info = self._begin(rows, m)
        self._since_refill = self.ring  # the next step checks the draws (the reset used some)
        self._autoreset = self.xp.where(mask, False, self._autoreset)
        if self._render_env is not None and host_mask[0]:
            self._render_env.reset()
        info = {key: (values, mask) for key, values in reset_info.items()}
        return self._observe(), self._vector_info(info)

    def _check_actions(self, actions: Any) -> Any:
        xp = self.xp
        acts = xp.asarray(actions, "int64").reshape(-1)
        if acts.shape[0] != self.num_envs:
            raise ValueError(f"actions must have shape ({self.num_envs},), got {acts.shape}")
        # one reduction: a negative action is a huge unsigned one
        if xp.is_numpy and acts.view(np.uint64).max() >= self._n_actions:
            raise ValueError(f"actions must be in [0, {self._n_actions - 1}], got {actions!r}")
        return acts

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Steps every env; envs whose episode ended at the previous step are reset instead.

        Host backends (numpy, torch on the CPU) reset only the envs that ended, and skip every
        piece of bookkeeping that no env needs this step; on accelerators the same work is done
        with full-width masked writes, so a step never waits for the host. The drawn episodes
        are checked every :attr:`period` steps (one small copy). On numpy the envs that reset
        or end are handled by index (:meth:`_step_numpy`).
        """
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            return self._step_same(actions)
        if self.xp.is_numpy and self._render_env is None:
            return self._step_numpy(actions)
        xp = self.xp
        acts = self._check_actions(actions)
        resetting = self._autoreset
        masked = xp.masked_writes
        if self._since_refill >= self.period:
            self._refill()
        self._since_refill += 1
        any_reset = masked or bool(resetting.any())
        self.step_count += 1
        reward, terminated, step_info = self._transition(acts)
        truncated = self.step_count >= self._max_steps()
        truncated &= ~terminated
        reset_info: dict[str, Any] = {}
        if any_reset:
            keep = ~resetting
            reward = reward * keep
            terminated &= keep
            truncated &= keep
            rows, m = (self._rows, resetting) if masked else (xp.nonzero(resetting), None)
            reset_info = self._begin(rows, m)
        done = terminated | truncated
        self._success_info(step_info, done, masked or any_reset or bool(done.any()))
        info = self._merge_info(step_info, reset_info, resetting if any_reset else None)
        self._autoreset = done
        if self._render_env is not None:
            if bool(resetting[0]):
                self._render_env.reset()
            else:
                self._render_env.step(int(acts[0]))
        return self._observe(), reward, terminated, truncated, self._vector_info(info)

    def _step_numpy(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """:meth:`step` on numpy (NEXT_STEP mode): the same results, with the envs that reset
        or end this step (a few) handled by index, and each info key built in a few calls."""
        acts = self._check_actions(actions)
        if self._since_refill >= self.period:
            self._refill()
        self._since_refill += 1
        rows = self._autoreset.nonzero()[0]
        self.step_count += 1
        reward, terminated, step_info = self._transition(acts)
        truncated = np.greater_equal(self.step_count, self._max_steps())
        np.greater(truncated, terminated, out=truncated)  # truncated and not terminated
        reset_info: dict[str, Any] = {}
        if len(rows):  # (reward and flags are fresh arrays of this step)
            reward[rows] = 0.0
            terminated[rows] = False
            truncated[rows] = False
            reset_info = self._begin(rows, None)
        done = terminated | truncated
        self._success_info(step_info, done, np.count_nonzero(done) > 0)
        info: dict[str, Any] = {}
        n = self.num_envs
        seen: dict[int, str] = {}  # step-only keys by their (values, mask) pair
        for key in {**step_info, **reset_info}:
            r_values = reset_info.get(key)
            pair = step_info.get(key, (None, None))
            if r_values is None:
                twin = seen.setdefault(id(pair), key)
                if twin != key:  # the same pair (success and is_success): copies
                    if twin in info:
                        info[key], info[f"_{key}"] = info[twin].copy(), info[f"_{twin}"].copy()
                    continue
            values, mask = pair
            if mask is None and values is not None:  # reported by every env
                out = values.copy()  # (may be live state)
                if r_values is not None and values is not r_values and len(rows):
                    out[rows] = r_values[rows]
                info[key], info[f"_{key}"] = out, np.ones(n, bool)
                continue
            if values is None:
                values, mask = r_values, np.zeros(n, bool)
            else:
                mask = mask.copy()  # (may be a flag or state)
                mask[rows] = False
            if r_values is not None:
                mask[rows] = True
            if not np.count_nonzero(mask):
                continue
            out = values & mask if values.dtype == mask.dtype else values * mask
            if r_values is not None:
                out[rows] = r_values[rows]
            info[key], info[f"_{key}"] = out, mask
        self._autoreset = done
        return self._observe(), reward, terminated, truncated, info

    def _step_same(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """:meth:`step` in SAME_STEP mode: the envs whose episode ends are reset in this step."""
        xp = self.xp
        acts = self._check_actions(actions)
        masked = xp.masked_writes
        if self._since_refill >= self.period:
            self._refill()
        self._since_refill += 1
        self.step_count += 1
        reward, terminated, step_info = self._transition(acts)
        truncated = self.step_count >= self._max_steps()
        truncated &= ~terminated
        done = terminated | truncated
        any_done = masked or bool(done.any())
        self._success_info(step_info, done, any_done)
        final: dict[str, Any] = {}
        if any_done:
            # the ending step's observation and info, taken before the resets overwrite the state
            final_info = {
                key: (values, done if mask is None else mask & done)
                for key, (values, mask) in step_info.items()
            }
            final = {
                "final_obs": self._final_obs(self._observe(), done),
                "_final_obs": xp.copy(done),
                "final_info": self._vector_info(final_info),
                "_final_info": xp.copy(done),
            }
            rows, m = (self._rows, done) if masked else (xp.nonzero(done), None)
            reset_info = self._begin(rows, m)
            info = self._merge_info(step_info, reset_info, done)
        else:
            info = dict(step_info)
        if self._render_env is not None:
            self._render_env.step(int(acts[0]))
            if bool(done[0]):
                self._render_env.reset()
        return self._observe(), reward, terminated, truncated, {**final, **self._vector_info(info)}

    def _final_obs(self, obs: Any, done: Any) -> Any:
        """``info["final_obs"]``: an object array of the ended envs' observations (``None``
        elsewhere) on numpy, as ``SyncVectorEnv``; on torch the tensor, zero where not ended."""
        if self.xp.is_numpy:
            out = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done).tolist():
                out[i] = obs[i]
            return out
        return obs * done.reshape(-1, *([1] * (obs.ndim - 1))).to(obs.dtype)

    def _success_info(self, step_info: dict[str, Any], done: Any, any_done: bool) -> None:
        """Sets ``success`` and ``is_success`` at the envs whose episode ended (the single env
        reports success on every terminal step, False unless the task set it)."""
        if any_done:
            success, success_mask = step_info.pop("success", (done, None))
            if success_mask is not None:
                success = success & success_mask
            step_info["success"] = (success & done, done)
            step_info["is_success"] = step_info["success"]
        else:
            step_info.pop("success", None)

    def _merge_info(
        self, step_info: dict[str, Any], reset_info: dict[str, Any], resetting: Any
    ) -> dict[str, Any]:
        """``(values, mask)`` per key: the step's info, and the reset's info at the envs of
        ``resetting`` (``None``: no env was reset). Keys reported every step have the mask
        None."""
        if resetting is None:
            return dict(step_info)
        xp, keep = self.xp, ~resetting
        info: dict[str, Any] = {}
        for key in {**step_info, **reset_info}:
            values, mask = step_info.get(key, (None, None))
            mask = keep if mask is None else mask & keep
            r_values = reset_info.get(key)
            if r_values is not None and values is None:
                values, mask = r_values, resetting
            elif r_values is not None:
                if values is not r_values:  # (else both are the same live state)
                    values = xp.where(resetting, r_values, values)
                mask = mask | resetting
            info[key] = (values, mask)
        return info

    def _max_steps(self) -> Any:
        """Step limit of each env's episode (``(N,)`` or a scalar)."""
        return self.template.max_steps

    def _observe_cells(self, ids: Any, centre: Any) -> Any:
        """The observation from object ids ``(N, 3, 3)`` indexing :attr:`word_table`, with the
        agent and the extra centre words ``(N, E)`` (word ids, ``-1`` for none)."""
        obs = self.word_table[ids]  # (N, 3, 3, V)
        obs[:, 1, 1, self._agent_word] = 1
        for e in range(centre.shape[1]):
            w = centre[:, e]
            obs[self._rows, 1, 1, self.xp.where(w >= 0, w, self._agent_word)] = 1
        return obs

    def _vector_info(self, info: dict[str, Any]) -> dict[str, Any]:
        # (values, mask) pairs -> gymnasium's vector info; values are zero where not reported;
        # a mask None means every env (the values are then copied: they may be live state).
        xp = self.xp
        out: dict[str, Any] = {}
        for key, (values, key_mask) in info.items():
            if key_mask is None:
                out[key] = xp.copy(values)
                out[f"_{key}"] = xp.full((self.num_envs,), True, "bool")
                continue
            if not xp.masked_writes and not key_mask.any():
                continue
            out[key] = values * key_mask if values.dtype != key_mask.dtype else values & key_mask
            out[f"_{key}"] = key_mask
        return out

    # checkpoints

    def get_state(self) -> dict[str, Any]:
        """The full state of every env as host (numpy) data, for a checkpoint: the state arrays,
        the drawn episodes, the counters and each env's generator state. Restoring it with
        :meth:`set_state` (into an env built with the same arguments, on any backend) continues
        the episodes exactly; the ``render()`` env is not part of it."""
        arrays = {
            name: (value if isinstance(value, np.ndarray) else value.detach().cpu().numpy()).copy()
            for name, value in vars(self).items()
            if isinstance(value, np.ndarray) or _is_tensor(value)
        }
        return {
            "class": type(self).__name__,
            "num_envs": self.num_envs,
            "single_kwargs": dict(self.single_kwargs),
            "autoreset_mode": self.autoreset_mode.value,
            "since_refill": self._since_refill,
            "ring": self.ring,
            "rngs": [rng.bit_generator.state for rng in self._rngs],
            "arrays": arrays,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores :meth:`get_state` in place (views of the state arrays stay views)."""
        want = (type(self).__name__, self.num_envs, self.single_kwargs, self.autoreset_mode.value)
        got = (state.get("class"), state.get("num_envs"), state.get("single_kwargs"),
               state.get("autoreset_mode"))
        if got != want:
            raise ValueError(
                f"state is of a different env (class, num_envs, task arguments, autoreset mode): "
                f"got {got}, this env is {want}"
            )
        current = vars(self)
        # the ring of drawn episodes is sized like the saved env's (its pending draws all kept)
        self.ring = int(state["ring"])
        self._params = self.xp.asarray(state["arrays"]["_params"], "int64")
        for name, value in state["arrays"].items():
            target = current.get(name)
            if target is not None and tuple(target.shape) != tuple(value.shape):
                raise ValueError(
                    f"state array {name!r} has shape {tuple(value.shape)}, this env's has "
                    f"{tuple(target.shape)}"
                )
            if isinstance(target, np.ndarray):
                np.copyto(target, value, casting="unsafe")  # (a constant table's dtype may
            elif _is_tensor(target):  # differ between backends)
                host = np.asarray(value).astype(_dtype_name(target))
                target.copy_(self.xp.torch.from_numpy(host))
            else:
                raise ValueError(f"state has an array {name!r} that this env does not have")
        rngs = []
        for rng_state in state["rngs"]:
            bit_generator = getattr(np.random, rng_state["bit_generator"])()
            bit_generator.state = rng_state
            rngs.append(np.random.Generator(bit_generator))
        self._rngs = rngs
        # the next step checks the draws (the saved env may have checked them less often)
        self._since_refill = max(int(state["since_refill"]), self.ring)

    def render(self) -> np.ndarray | None:
        """The picture of env 0 (``render_mode="rgb_array"``), else ``None``."""
        return None if self._render_env is None else self._render_env.render()

    def close_extras(self, **kwargs: Any) -> None:
        """Closes the env drawing the pictures."""
        if self._render_env is not None:
            self._render_env.close()


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _dtype_name(values: Any) -> str:
    name = str(values.dtype).replace("torch.", "")
    return "bool" if name in ("bool", "bool_") else name
