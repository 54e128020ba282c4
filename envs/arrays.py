"""One array layer for the tasks' rules: one env in Python scalars, or a batch in numpy or torch.

A task's rules are written once, as code over the fields of a state (:class:`One` or
:class:`Batch`), with Python operators (``+ & == >> ...``) and the few functions of an array
namespace (``xp.where``, ``xp.minimum``, ``xp.at``, ...). The same code then runs

- on :class:`Scalar`: one env, its fields Python ints, bools and floats (and 1-d numpy arrays for
  a per-env vector such as a map): the single gymnasium env, at Python speed;
- on :class:`Numpy` or :class:`Torch`: ``N`` envs, every field an array whose *last* axis is
  the env (a map is ``(cells, N)``), so the same expressions broadcast: the batched vector env.

Rules that touch only some envs (a door walked into, an episode that starts) take a sub-state,
``sub = s.select(cond)``, work on it and write it back with ``s.update(sub)``: one env runs the
block or not; host arrays gather and scatter the selected envs; accelerators (``Torch.masked``)
run it over every env with masked writes, so a step never waits for the host.

Randomness is keyed, never drawn from a generator: a draw is a 32-bit hash of ``(key, t, slot)``
(:meth:`Scalar.base`, :meth:`Scalar.draw`), computed with the same bits by Python ints, numpy
``uint32`` and torch ``int64`` (products split so that no value exceeds ``2**49``), so single and
batched envs make the same choices without replaying numpy's generator.

Why our own layer and not ``array-api-compat`` (measured with ``scripts/bench_envs.py
--array-layer``, ``docs/results/envs_array_layer.md``): it has no namespace for one env in Python
scalars, which keeps the single env fast (a numpy call on one element costs about 1 us); on numpy
it calls the same functions; on torch its ``take`` is slower than the ``index_select`` lookups
here, and torch's own advanced indexing slower still (20x for a table of views).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["MASK32", "Batch", "Numpy", "One", "Scalar", "Torch", "backend", "mix"]

MASK32 = (1 << 32) - 1
_C1, _C2 = 0x7FEB352D, 0x846CA68B  # the multipliers of a 32-bit avalanche finaliser


def mix(x: int) -> int:
    """The 32-bit finaliser (xor-shift, multiply, xor-shift, multiply, xor-shift) of an int."""
    x ^= x >> 16
    x = (x * _C1) & MASK32
    x ^= x >> 15
    x = (x * _C2) & MASK32
    return x ^ (x >> 16)


# (0-d arrays: a ufunc takes them twice as fast as numpy scalars, on small arrays)
_U16, _U15, _U1, _U2 = (np.array(c, np.uint32) for c in (16, 15, _C1, _C2))
_S32 = np.array(32)


def _mix_u32(x: np.ndarray) -> np.ndarray:
    # numpy uint32 products wrap modulo 2**32 by themselves (in place)
    x ^= x >> _U16
    x *= _U1
    x ^= x >> _U15
    x *= _U2
    x ^= x >> _U16
    return x


def _mul32(x: Any, c: int) -> Any:
    # (x * c) mod 2**32 on int64 tensors, c split in 16-bit halves: no product exceeds 2**48
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def _mix_i64(x: Any) -> Any:
    x = x ^ (x >> 16)
    x = _mul32(x, _C1)
    x = x ^ (x >> 15)
    x = _mul32(x, _C2)
    return x ^ (x >> 16)


def _env_major(shape: tuple[int, ...]) -> bool:
    # A long per-env vector (a map) is stored env-major (Fortran order), so that a sub-state's
    # gather of some envs copies contiguous runs (10x faster); short ones (a value per
    # character) stay field-major, where elementwise work and sums over them run fastest.
    return len(shape) == 2 and shape[0] > 16


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


_STEP_MIX = tuple(mix(t) for t in range(4096))  # (mix(t) of the steps of most episodes)


class Scalar:
    """One env: Python scalars, 1-d numpy arrays for per-env vectors (the single gymnasium env)."""

    masked = False
    device = None

    def table(self, values: Any) -> Any:
        """A constant lookup table: a tuple of Python values (1-d) or a read-only array."""
        a = np.array(values)
        return tuple(a.tolist()) if a.ndim == 1 else _readonly(a)

    def column(self, values: Any) -> np.ndarray:
        """A constant per-env vector ``(K,)`` (``(K, 1)`` on batches, to broadcast over envs)."""
        return _readonly(np.array(values, np.int64))

    array = column  # a constant table looked up with index arrays (a tuple cannot be)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        """``a`` where ``cond`` else ``b`` (elementwise on a per-env vector)."""
        if isinstance(cond, np.ndarray):
            return np.where(cond, a, b)
        return a if cond else b

    def minimum(self, a: Any, b: Any) -> Any:
        return np.minimum(a, b) if isinstance(a, np.ndarray) else min(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return np.maximum(a, b) if isinstance(a, np.ndarray) else max(a, b)

    def not_(self, a: Any) -> Any:
        return ~a if isinstance(a, np.ndarray) else not a

    def float(self, a: Any) -> float:
        """``a`` as float64."""
        return float(a)

    def at(self, vector: np.ndarray, index: Any, plus: Any = None) -> Any:
        """``vector[index + plus]`` of each env (``index`` per env, or per env and a leading
        axis; ``plus``: none, or a constant column added to it, e.g. a window of cells)."""
        if plus is not None:
            index = index + plus
        return vector[index] if isinstance(index, np.ndarray) else int(vector[index])

    def first_true(self, mask: np.ndarray) -> int:
        """Index of the first true entry along the leading axis (0 where none)."""
        return int(mask.argmax())

    def rows(self, a: Any) -> Any:
        """The entries of ``a`` along its leading axis, to unpack: Python values for one env,
        its rows (a value per env each) for a batch."""
        return a.tolist()

    def amin(self, a: Any, axis: int) -> Any:
        """The least entry of ``a`` along ``axis`` (a Python int for one env's vector)."""
        least = a.min(axis)
        return least.item() if least.ndim == 0 else least

    def view(self, table: np.ndarray, index: Any) -> np.ndarray:
        """An observation from a table: ``table[index]`` for an index per env (a whole
        ``(3, 3, V)`` view), or the ``(3, 3, V)`` of 9 cell ids ``(9, ...)`` per env."""
        if isinstance(index, np.ndarray):
            return table[index].reshape(3, 3, -1)
        return table[index].copy()

    def set_word(self, obs: np.ndarray, word: Any) -> None:
        """Adds word ``word`` (an index per env) to the centre cell."""
        obs[1, 1, word] = 1

    def hash(self, key: Any, t: Any) -> Any:
        """``mix(key ^ mix(t))``: an episode's key from its seed's key and its number; as
        :meth:`base`, the part of the draws of step ``t`` that its slots share."""
        return mix(key ^ mix(t & MASK32))

    def base(self, key: Any, t: Any) -> Any:
        """:meth:`hash`, the part of the draws of step ``t`` that its slots share."""
        return mix(key ^ (_STEP_MIX[t] if t < len(_STEP_MIX) else mix(t & MASK32)))

    def draw(self, base: Any, slot: Any) -> Any:
        """A uniform 32-bit draw for ``slot`` (an int, or a column of slots)."""
        if isinstance(slot, np.ndarray):  # (a dozen Python mixes beat numpy's calls)
            out = []
            for x in slot.tolist():  # (mix(base ^ x), inlined)
                x ^= base
                x ^= x >> 16
                x = (x * _C1) & MASK32
                x ^= x >> 15
                x = (x * _C2) & MASK32
                out.append(x ^ (x >> 16))
            return np.array(out)
        return mix(base ^ slot)

    def any(self, mask: Any) -> bool:
        """Whether ``mask`` holds anywhere (for one env: whether it holds)."""
        return mask if mask is True or mask is False else np.count_nonzero(mask) > 0

    def below(self, h: Any, n: Any) -> Any:
        """A uniform integer in ``[0, n)`` from a draw ``h`` (``n <= 2**30``)."""
        if isinstance(h, np.ndarray):
            return (h.astype(np.int64) * n) >> 32
        return (int(h) * n) >> 32


class Numpy(Scalar):
    """``N`` envs in numpy arrays on the host, the env axis last."""

    through = True  # (sub-states read and write 2-d fields in their parent's arrays: _Sub.at)

    def __init__(self) -> None:
        self._cols: dict[int, np.ndarray] = {}
        self._offsets: dict[tuple[int, int, bool], tuple[int, np.ndarray]] = {}
        self._centres: dict[tuple[int, int], np.ndarray] = {}  # (set_word's)
        self.step_mix: np.ndarray | None = None  # mix(t) for every t an episode reaches

    def table(self, values: Any) -> np.ndarray:
        return _readonly(np.array(values))

    array = table

    def column(self, values: Any) -> np.ndarray:
        return _readonly(np.array(values, np.int64)[:, None])

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return np.where(cond, a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        return np.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return np.maximum(a, b)

    def not_(self, a: Any) -> Any:
        return ~a

    def float(self, a: Any) -> Any:
        return a.astype(np.float64)

    def copy(self, a: Any) -> Any:
        return a.copy()

    def rows(self, a: Any) -> Any:
        return a

    def cols(self, n: int) -> Any:
        """``[0, n)``: the env index of each column."""
        cols = self._cols.get(n)
        if cols is None:
            cols = self._cols[n] = self.asarray(np.arange(n), "int64")
        return cols

    def at(self, vector: Any, index: Any, plus: Any = None) -> Any:
        flat, stride, offset = self.flat(vector)
        index = index + offset if stride == 1 else index * stride + offset
        if plus is not None:
            index = index + (plus if stride == 1 else plus * stride)
        return flat.take(index)

    def flat(self, vector: Any) -> tuple[Any, int, Any]:
        """A contiguous ``(K, n)`` field as one flat view, with the flat index of its entry
        ``(k, j)``, ``k * stride + offset[j]``: ``(view, stride, offset)`` (a flat take or put is
        several times faster than a 2-d fancy index)."""
        major = vector.flags.f_contiguous
        key = (*vector.shape, major)
        offsets = self._offsets.get(key)
        if offsets is None:
            k, n = vector.shape
            offsets = self._offsets[key] = (1, np.arange(n) * k) if major else (n, np.arange(n))
        return (vector.T if major else vector).reshape(-1), *offsets

    def take_flat(self, flat: Any, stride: int, offset: Any, index: Any,
                  plus: Any = None) -> Any:
        """:meth:`at` on a field's :meth:`flat` view (``offset``: of the envs wanted)."""
        index = index + offset if stride == 1 else index * stride + offset
        if plus is not None:
            index = index + (plus if stride == 1 else plus * stride)
        return flat.take(index)

    def put_at(self, vector: Any, index: Any, value: Any, where: Any = None) -> None:
        """``vector[index[j], j] = value[j]`` for each env ``j`` where ``where`` (in place)."""
        self.put_flat(*self.flat(vector), index, value, where)

    def put_flat(self, flat: Any, stride: int, offset: Any, index: Any, value: Any,
                 where: Any = None) -> None:
        """:meth:`put_at` on a field's :meth:`flat` view (``offset``: of the envs written)."""
        flat_index = index + offset if stride == 1 else index * stride + offset
        if where is not None:
            hits = np.count_nonzero(where)
            if hits == 0:
                return
            if not hits == np.size(where) == flat_index.size:  # (else: everywhere)
                if where.shape != flat_index.shape:
                    where = np.broadcast_to(where, flat_index.shape)
                at = where.nonzero()  # (the entries written only: few, as a rule)
                if np.ndim(value):  # (np.broadcast_to costs more than the rest)
                    value = (value if np.shape(value) == flat_index.shape
                             else np.broadcast_to(value, flat_index.shape))[at]
                flat[flat_index[at]] = value
                return
        flat[flat_index] = value

    def first_true(self, mask: Any) -> Any:
        return mask.argmax(0)

    def view(self, table: Any, index: Any) -> Any:
        if index.ndim == 1:
            return table.take(index, axis=0)
        return table.take(index.T, axis=0).reshape(index.shape[1], 3, 3, -1)

    def set_word(self, obs: Any, word: Any) -> None:
        # (a flat index, the centre cell's words of each env precomputed: twice as fast)
        n, v = obs.shape[0], obs.shape[-1]
        centres = self._centres.get((n, v))
        if centres is None:
            centres = self._centres[n, v] = np.arange(n) * (9 * v) + 4 * v
        obs.reshape(-1)[centres + word] = 1

    def hash(self, key: Any, t: Any) -> Any:
        return _mix_u32(key.astype(np.uint32) ^ _mix_u32(t.astype(np.uint32))).astype(np.int64)

    # (one ufunc call each, casting its int64 operand to uint32 or uint32 to int64 itself)
    def base(self, key: Any, t: Any) -> Any:
        mixed = _mix_u32(np.asarray(t, np.uint32)) if self.step_mix is None else self.step_mix[t]
        return _mix_u32(np.bitwise_xor(key, mixed, dtype=np.uint32, casting="unsafe"))

    def draw(self, base: Any, slot: Any) -> Any:
        return _mix_u32(np.bitwise_xor(base, slot, dtype=np.uint32, casting="unsafe"))

    def below(self, h: Any, n: Any) -> Any:
        return np.multiply(h, n, dtype=np.int64) >> _S32

    # arrays

    def asarray(self, x: Any, dtype: str) -> Any:
        """``x`` (host data or an array of this backend) as an array of this backend."""
        return np.asarray(x, dtype)

    def full(self, shape: tuple[int, ...], value: Any, dtype: str) -> Any:
        order = "F" if _env_major(shape) else "C"
        if value == 0:
            return np.zeros(shape, dtype, order)
        a = np.empty(shape, dtype, order)  # (np.full's Python wrapper costs more than the fill)
        a.fill(value)
        return a

    def tile(self, column: Any, n: int) -> Any:
        """A ``(K, n)`` array of a ``(K, 1)`` column."""
        return np.tile(column.T, (n, 1)).T if _env_major(column.shape) else column.repeat(n, 1)

    def gather(self, field: Any, rows: Any) -> Any:
        """The columns ``rows`` of a field (a copy, in the field's layout); (``take`` is twice as
        fast as ``[:, rows]``, ``[..., rows]`` several times slower)."""
        if field.ndim == 1:
            return field[rows]
        if field.flags.f_contiguous:  # (env-major: the gathered envs' runs)
            return field.T.take(rows, 0).T
        return field.take(rows, axis=-1)

    def scatter(self, field: Any, rows: Any, value: Any) -> None:
        """``field[..., rows] = value`` in place."""
        field[(rows,) if field.ndim == 1 else (slice(None), rows)] = value

    def copy_rows(self, field: Any, rows: Any, source: Any) -> None:
        """``field[..., rows] = source[..., rows]`` in place."""
        if field.ndim == 1 and source.ndim == 1:
            field[rows] = source[rows]
        else:
            self.scatter(field, rows, self.gather(source, rows))

    def nonzero(self, mask: Any) -> Any:
        return mask.nonzero()[0]

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def any(self, mask: Any) -> bool:
        return bool(np.count_nonzero(mask))


class Torch(Numpy):
    """``N`` envs in torch tensors on ``device``. On accelerators (or with ``force_masked``, to
    run that code path on the CPU in tests) sub-states are masked, never gathered: no host sync."""

    def __init__(self, device: Any) -> None:
        import torch

        super().__init__()
        self.torch = torch
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must be None, 'numpy' or a torch device ('cpu', 'cuda'), "
                             f"got {device!r}") from err
        self.force_masked = False

    through = False  # (sub-states gather the fields they use)

    @property
    def masked(self) -> bool:  # type: ignore[override]
        return self.device.type != "cpu" or self.force_masked

    def table(self, values: Any) -> Any:
        return _Lookup(self.torch.as_tensor(np.array(values), device=self.device))

    array = table

    def column(self, values: Any) -> Any:
        return self.asarray(np.array(values, np.int64)[:, None], "int64")

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        t = self.torch
        if not isinstance(a, t.Tensor) and not isinstance(b, t.Tensor):  # (float64, as numpy)
            dtype = t.float64 if isinstance(a, float) else None
            a = t.as_tensor(a, device=self.device, dtype=dtype)
        return t.where(cond, a, b)

    def minimum(self, a: Any, b: Any) -> Any:
        return self.torch.minimum(a, b) if self.torch.is_tensor(b) else a.clamp(max=b)

    def maximum(self, a: Any, b: Any) -> Any:
        return self.torch.maximum(a, b) if self.torch.is_tensor(b) else a.clamp(min=b)

    def float(self, a: Any) -> Any:
        return a.to(self.torch.float64)

    def copy(self, a: Any) -> Any:
        return a.clone()

    def first_true(self, mask: Any) -> Any:
        return mask.to(self.torch.uint8).argmax(0)

    def amin(self, a: Any, axis: int) -> Any:
        return a.amin(axis)

    def at(self, vector: Any, index: Any, plus: Any = None) -> Any:
        return vector[index if plus is None else index + plus, self.cols(vector.shape[-1])]

    def put_at(self, vector: Any, index: Any, value: Any, where: Any = None) -> None:
        cols = self.cols(vector.shape[-1])
        if where is not None:
            value = self.torch.where(where, value, vector[index, cols])
        vector[index, cols] = value

    def view(self, table: Any, index: Any) -> Any:
        return table[index if index.ndim == 1 else index.T].reshape(index.shape[-1], 3, 3, -1)

    def set_word(self, obs: Any, word: Any) -> None:
        obs[self.cols(obs.shape[0]), 1, 1, word] = 1

    def hash(self, key: Any, t: Any) -> Any:
        return _mix_i64(key ^ _mix_i64(t & MASK32))

    base = hash

    def draw(self, base: Any, slot: Any) -> Any:
        return _mix_i64(base ^ slot)

    def below(self, h: Any, n: Any) -> Any:
        return (h * n) >> 32

    def asarray(self, x: Any, dtype: str) -> Any:
        x = x if isinstance(x, self.torch.Tensor) else self.torch.as_tensor(np.asarray(x))
        return x.to(device=self.device, dtype=getattr(self.torch, dtype))

    def full(self, shape: tuple[int, ...], value: Any, dtype: str) -> Any:
        return self.torch.full(shape, value, dtype=getattr(self.torch, dtype), device=self.device)

    def tile(self, column: Any, n: int) -> Any:
        return column.expand(-1, n).clone()

    def nonzero(self, mask: Any) -> Any:
        return mask.nonzero().reshape(-1)

    def gather(self, field: Any, rows: Any) -> Any:
        return field.index_select(field.ndim - 1, rows)

    def copy_rows(self, field: Any, rows: Any, source: Any) -> None:
        self.scatter(field, rows, self.gather(source, rows))

    def scatter(self, field: Any, rows: Any, value: Any) -> None:
        field[..., rows] = value

    def any(self, mask: Any) -> bool:
        return bool(mask.any())

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy() if isinstance(x, self.torch.Tensor) else np.asarray(x)


class _Lookup:
    """A constant torch table, looked up with ``index_select`` (torch's advanced indexing is
    several times slower, twenty times for a table of views)."""

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor

    def __getitem__(self, index: Any) -> Any:
        t = self.tensor
        return t.index_select(0, index.reshape(-1)).reshape(*index.shape, *t.shape[1:]) \
            if isinstance(index, type(t)) else t[index]


def backend(device: Any = None) -> Numpy:
    """The array namespace of a batch: numpy for ``None``/``"numpy"``, else torch on ``device``."""
    return Numpy() if device is None or device == "numpy" else Torch(device)


def is_array(x: Any) -> bool:
    """Whether ``x`` is a numpy array or a torch tensor."""
    torch = sys.modules.get("torch")
    return isinstance(x, np.ndarray) or (torch is not None and isinstance(x, torch.Tensor))


def _dtype(value: Any) -> str:
    return "bool" if isinstance(value, (bool, np.bool_)) else \
        "float64" if isinstance(value, float) else "int64"


class One:
    """The fields of one env (attributes), in the :class:`Scalar` namespace ``xp``."""

    def __init__(self, xp: Scalar, tables: Any) -> None:
        self.xp, self.T = xp, tables

    def full(self, value: Any) -> Any:
        """``value`` for the one env (a copy of a constant vector)."""
        return value.copy() if isinstance(value, np.ndarray) else value

    def select(self, cond: Any) -> One | None:
        """This state if ``cond`` holds, else ``None``: see :meth:`Batch.select`."""
        return self if cond else None

    def update(self, sub: One) -> None:
        """Nothing to write back: a sub-state of one env is the env itself."""

    def rounds(self, name: str, limit: int) -> Iterable[One]:
        """This state, as long as field ``name`` has a true entry (at most ``limit`` times): see
        :meth:`Batch.rounds`."""
        if not np.count_nonzero(getattr(self, name)):  # (faster than any on a few entries)
            return ()  # (the usual case, without a generator)
        return self._rounds(name, limit)

    def _rounds(self, name: str, limit: int) -> Iterator[One]:
        yield self
        for _ in range(limit - 1):
            if not np.count_nonzero(getattr(self, name)):
                return
            yield self

    def at(self, name: str, index: Any, plus: Any = None) -> Any:
        """``xp.at`` of the per-env vector ``name``: see :meth:`Batch.at`."""
        vector = getattr(self, name)
        if plus is not None:
            index = index + plus
        return vector[index] if isinstance(index, np.ndarray) else int(vector[index])

    def put(self, name: str, index: Any, value: Any, where: Any = None) -> None:
        """``field[index] = value`` in the per-env vector ``name`` (where ``where`` holds)."""
        array = getattr(self, name)
        if where is None or where is True:
            array[index] = value
        elif isinstance(where, np.ndarray):
            array[np.asarray(index)[where]] = value if np.ndim(value) == 0 else value[where]
        elif where:
            array[index] = value


class Batch:
    """The fields of ``n`` envs (attributes), arrays with the env axis last, in namespace ``xp``.

    A sub-state (:meth:`select`) reads its fields from its parent when first used (a gather of
    its envs on host backends; the parent's array itself when masked) and keeps what the rules
    assign to it (``sub.x = ...``, :meth:`put`) until :meth:`update` writes it back. Rules never
    modify a field's array in place except through :meth:`put` (or one they just assigned).
    """

    _mask: Any = None

    def __init__(self, xp: Numpy, tables: Any, n: int) -> None:
        self.xp, self.T, self.n = xp, tables, n
        self._dirty: set[str] = set()  # (a sub-state's: the fields to write back)

    def full(self, value: Any) -> Any:
        """``value`` for every env of this state: an ``(n,)`` array, or a constant vector
        ``(K, 1)`` (:meth:`Scalar.column`) as a ``(K, n)`` array of its own."""
        if isinstance(value, (bool, int, float, np.generic)):
            return self.xp.full((self.n,), value, _dtype(value))
        return self.xp.tile(value, self.n)

    def select(self, cond: Any) -> Batch | None:
        """The sub-state of the envs where ``cond`` (``(n,)`` bool) holds, or ``None`` if none
        does (never ``None`` when masked)."""
        xp = self.xp
        if xp.masked:
            return _Sub(self, None, cond if self._mask is None else self._mask & cond)
        rows = xp.nonzero(cond)
        return _Sub(self, rows, None) if rows.shape[0] else None

    def rounds(self, name: str, limit: int) -> Iterator[Batch]:
        """Rounds of work on the envs where the ``(K, n)`` bool field ``name`` has a true entry:
        a sub-state of those envs per round, until none has one or after ``limit`` rounds (the
        rounds clear the entries they handle; a loop over them must not ``break``). Host
        backends select each round's envs among the previous round's (a subset: entries are
        only cleared) and write the rounds back when the loop ends, all but field ``name``
        (left as it was: a per-round value); masked ones run ``limit`` rounds over every env,
        each written back as it ends."""
        if self.xp.masked:
            for _ in range(limit):
                sub = self.select(getattr(self, name).any(0))
                yield sub  # type: ignore[misc]  (never None when masked)
                self.update(sub)  # type: ignore[arg-type]
            return
        chain: list[Batch] = [self]
        for _ in range(limit):
            sub = chain[-1].select(getattr(chain[-1], name).any(0))
            if sub is None:
                break
            yield sub
            chain.append(sub)
        for i in range(len(chain) - 1, 0, -1):
            chain[i]._dirty.discard(name)  # (read by the next round only, from its parent)
            chain[i - 1].update(chain[i])  # type: ignore[arg-type]

    def update(self, sub: _Sub) -> None:
        """Writes what the rules assigned to ``sub`` back into this state."""
        xp, rows, mine = self.xp, sub._rows, self.__dict__
        for name in sub._dirty:
            value = sub.__dict__[name]
            old = mine.get(name)
            if old is None:
                try:
                    old = getattr(self, name)  # (a sub-state's gather)
                except AttributeError:  # a field's first value: allocated here
                    shape = value.shape[:-1] if is_array(value) else ()
                    dtype = str(value.dtype).replace("torch.", "") if is_array(value) else None
                    old = xp.full((*shape, self.n), 0, dtype or _dtype(value))
                    setattr(self, name, old)
            if rows is None:
                setattr(self, name, xp.where(sub._mask, value, old))
                continue
            if isinstance(old, (int, float)):  # (a constant assigned to this sub-state)
                old = self.full(old)
                setattr(self, name, old)
            xp.scatter(old, rows, value)
            self._dirty.add(name)

    def at(self, name: str, index: Any, plus: Any = None) -> Any:
        """``xp.at(field, index, plus)`` of the per-env vector ``name``; a sub-state on the host
        reads it from its parent's array (no gather of the whole field)."""
        return self.xp.at(getattr(self, name), index, plus)

    def put(self, name: str, index: Any, value: Any, where: Any = None) -> None:
        """``field[index] = value`` in the per-env vector ``name`` (``index`` per env), at the
        envs (or entries) where ``where`` holds; a sub-state on the host writes it into its
        parent's array, unless it has the field already (read or assigned)."""
        if self._mask is not None:
            where = self._mask if where is None else where & self._mask
        else:
            self._dirty.add(name)
        self.xp.put_at(getattr(self, name), index, value, where)

    def fields(self) -> dict[str, Any]:
        """The fields, by name."""
        return {k: v for k, v in vars(self).items() if k not in _META}


class _Sub(Batch):
    """Some envs of a parent state: fields read from it on first use, assignments tracked."""

    def __init__(self, parent: Batch, rows: Any, mask: Any) -> None:
        d = self.__dict__
        d["xp"], d["T"] = parent.xp, parent.T
        d["n"] = parent.n if rows is None else int(rows.shape[0])
        d["_parent"], d["_rows"], d["_mask"], d["_dirty"] = parent, rows, mask, set()
        d["_flats"] = {}  # (see _through)

    def __getattr__(self, name: str) -> Any:
        if name[0] == "_":  # (no field's name: special methods, copy and pickle probes)
            raise AttributeError(name)
        d = self.__dict__
        value = getattr(d["_parent"], name)
        if d["_rows"] is not None:
            value = d["xp"].gather(value, d["_rows"])  # a copy, owned by this sub-state
            d["_flats"].pop(name, None)  # (from now on, at and put use the copy)
        d[name] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        d[name] = value
        d["_flats"].pop(name, None)
        self._dirty.add(name)

    def at(self, name: str, index: Any, plus: Any = None) -> Any:
        through = self.__dict__["_flats"].get(name) or self._through(name)
        if through is None:
            return super().at(name, index, plus)
        _, flat, stride, offset = through
        return self.xp.take_flat(flat, stride, offset, index, plus)

    def put(self, name: str, index: Any, value: Any, where: Any = None) -> None:
        through = self.__dict__["_flats"].get(name) or self._through(name)
        if through is None:
            super().put(name, index, value, where)
            return
        owner, flat, stride, offset = through
        owner._dirty.add(name)  # (an ancestor sub-state's own copy: written back by it)
        self.xp.put_flat(flat, stride, offset, index, value, where)

    def _through(self, name: str) -> tuple[Batch, Any, int, Any] | None:
        # Field `name` in the nearest state up the chain that holds it (the root, or a
        # sub-state that read or assigned it): that state, the field's flat view there and
        # the flat offsets of this sub-state's envs; None where this state must use its own
        # copy (masked, torch, the field here already, or not a contiguous 2-d array).
        d = self.__dict__
        hit = d["_flats"].get(name)
        if hit is not None:
            return hit
        rows = d["_rows"]
        if rows is None or name in d or not d["xp"].through:
            return None
        parent = d["_parent"]
        up = parent._through(name) if isinstance(parent, _Sub) else None
        if up is None:
            vector = getattr(parent, name)
            if not isinstance(vector, np.ndarray) or vector.ndim != 2 \
                    or not (vector.flags.c_contiguous or vector.flags.f_contiguous):
                return None
            up = (parent, *d["xp"].flat(vector))
        owner, flat, stride, offset = up
        hit = d["_flats"][name] = (owner, flat, stride, offset[rows])
        return hit


_META = frozenset({"xp", "T", "n", "_parent", "_rows", "_mask", "_dirty", "_flats"})
