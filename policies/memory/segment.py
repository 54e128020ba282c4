"""Segment bookkeeping shared by the segment-recurrent memories (RMT and Memformer).

Each env's stream of steps is cut into segments of ``S`` steps counted from the env's episode
start. Inside a segment every step reads a memory (tokens or slots) and the segment so far; when
the segment's ``S``-th step has run, a write turns the memory and the whole segment into the next
segment's memory. Envs are at different phases, so the state holds, besides the memory, the
segment still open (its raw inputs, ``(B, S, D_in)``, zero after the ``phase`` steps it holds) and
the phase. A step in the middle of a segment recomputes the open segment's (at most ``S``) steps:
one call over ``T`` steps, ``T`` one-step calls and any chunking give the same outputs.

Acting cache (:mod:`.acting`): a one-step call without gradients keeps what the open segment's
steps contribute to its later ones (each layer's keys and values, and what the write needs), so a
step runs alone instead of recomputing its open segment; the write runs only at segment ends.

A call is laid out as ``(B, K, S)`` slots: segment 0 of an env is the one open at the call's
start (possibly empty), and every step at position 0 opens the next one. The memory then runs
one loop over the ``K`` segments (``K ~ T / S + 1``), each vectorised over the batch with masks.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .acting import acting_call, attach_cache, cache_stamp, cached
from .base import Memory, State

__all__ = ["Block", "MultiheadAttention", "SegmentLayout", "SegmentMemory", "segment_layout"]


# layout


class SegmentLayout(NamedTuple):
    """Where each step of a call falls: segment ``k`` of env ``b`` is row ``[b, k]``."""

    inputs: Tensor  # (B, K, S, D_in) raw inputs per slot, zero where empty
    valid: Tensor  # (B, K, S) bool: the slot holds a step
    reset: Tensor  # (B, K) bool: the segment opens an episode (read the initial memory)
    complete: Tensor  # (B, K) bool: the segment holds all S steps (its end is a write)
    seg: Tensor  # (T, B) int64: segment of each step
    pos: Tensor  # (T, B) int64: position of each step in its segment
    carried: Tensor  # (B, S, D_in): the open segment after the call, zero after `phase`
    phase: Tensor  # (B,) int64: steps in the open segment after the call


def segment_layout(
    x: Tensor, episode_starts: Tensor, carried: Tensor, phase: Tensor, segment_len: int
) -> SegmentLayout:
    """Lay the ``T`` steps of ``x`` (T, B, D_in) out in segments of ``segment_len`` slots.

    ``carried`` (B, S, D_in) and ``phase`` (B,) describe the segment open before the call. One
    host read (the number of segments ``K``), the rest runs on ``x``'s device.
    """
    t_len, batch, _ = x.shape
    s = segment_len
    dev = x.device
    starts = episode_starts.to(device=dev, dtype=torch.bool)
    phase = phase.to(device=dev, dtype=torch.long)
    t_idx = torch.arange(t_len, device=dev).unsqueeze(1).expand(t_len, batch)
    last_start = torch.cummax(torch.where(starts, t_idx, torch.full_like(t_idx, -1)), dim=0).values
    pos = torch.where(last_start >= 0, (t_idx - last_start) % s, (phase + t_idx) % s)
    # segment 0 is the one open at the call's start; it is empty (and skipped) when phase == 0
    seg = torch.cumsum((pos == 0).long(), dim=0) - (phase == 0).long()
    k_len = int(seg.max()) + 1
    b_idx = torch.arange(batch, device=dev).unsqueeze(0).expand(t_len, batch)
    slot = torch.arange(s, device=dev)

    inputs = x.new_zeros(batch, k_len, s, x.shape[-1]).index_put((b_idx, seg, pos), x)
    valid = torch.zeros(batch, k_len, s, dtype=torch.bool, device=dev)
    valid = valid.index_put((b_idx, seg, pos), torch.ones_like(starts))
    held = slot.unsqueeze(0) < phase.unsqueeze(1)  # (B, S) slots of the carried segment
    first = torch.where(held.unsqueeze(-1), carried.to(x.dtype), inputs[:, 0])
    inputs = torch.cat([first.unsqueeze(1), inputs[:, 1:]], dim=1)
    valid = torch.cat([(valid[:, 0] | held).unsqueeze(1), valid[:, 1:]], dim=1)
    opens = torch.zeros(batch, k_len, dtype=torch.long, device=dev)
    reset = opens.index_put((b_idx, seg), starts.long(), accumulate=True) > 0
    complete = valid[:, :, s - 1]

    new_phase = (pos[-1] + 1) % s
    last = inputs[torch.arange(batch, device=dev), seg[-1]]  # (B, S, D_in)
    keep = (slot.unsqueeze(0) < new_phase.unsqueeze(1)).unsqueeze(-1)
    new_carried = torch.where(keep, last, torch.zeros_like(last))
    return SegmentLayout(inputs, valid, reset, complete, seg, pos, new_carried, new_phase)


# attention


class MultiheadAttention(nn.Module):
    """Multi-head attention of ``query`` (B, Lq, d) over ``source`` (B, Lk, d) with a bool mask
    (True = may attend), broadcastable to (B, Lq, Lk)."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def _heads(self, t: Tensor) -> Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, query: Tensor, source: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.attend(self.q(query), self.kv(source), mask)

    def attend(self, q: Tensor, kv: Tensor, mask: Tensor | None = None) -> Tensor:
        """Attention of projected queries ``q`` (B, Lq, d) over projected keys and values ``kv``
        (B, Lk, 2d) (what :attr:`kv` makes of the source; an acting cache keeps them)."""
        qh = self._heads(q)
        k, v = (self._heads(t) for t in kv.chunk(2, dim=-1))
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # broadcast over heads
        y = F.scaled_dot_product_attention(qh, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(q.shape))


class Block(nn.Module):
    """Pre-norm transformer layer: masked self-attention, optional cross-attention reading a
    memory (every token reads every memory slot), feed-forward."""

    def __init__(self, d_model: int, num_heads: int, ff_mult: int, cross: bool = False) -> None:
        super().__init__()
        self.norm_self = nn.LayerNorm(d_model)
        self.self_attn = MultiheadAttention(d_model, num_heads)
        self.cross = cross
        if cross:
            self.norm_cross = nn.LayerNorm(d_model)
            self.norm_memory = nn.LayerNorm(d_model)
            self.cross_attn = MultiheadAttention(d_model, num_heads)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model), nn.GELU(), nn.Linear(ff_mult * d_model, d_model)
        )

    def forward(self, h: Tensor, mask: Tensor, memory: Tensor | None = None) -> Tensor:
        """``h`` (B, L, d), ``mask`` (B or 1, L, L) bool, ``memory`` (B, M, d) when ``cross``."""
        return self.forward_keys(h, mask, memory)[0]

    def forward_keys(
        self, h: Tensor, mask: Tensor, memory: Tensor | None = None,
        keys: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward` that also returns the self-attention's keys and values of ``h``
        (B, L, 2d). ``keys`` maps them to the keys and values attended (e.g. with cached ones of
        earlier tokens around them, which ``mask`` (B, L, Lk) then covers); default: themselves.
        """
        a = self.norm_self(h)
        kv = self.self_attn.kv(a)
        h = h + self.self_attn.attend(self.self_attn.q(a), kv if keys is None else keys(kv), mask)
        if self.cross:
            h = h + self.cross_attn(self.norm_cross(h), self.norm_memory(memory))
        return h + self.ff(self.norm_ff(h)), kv


# the shared memory loop


def check_transformer_args(
    *, d_model: int, num_heads: int, num_layers: int, ff_mult: int, segment_len: int
) -> None:
    """Refuse out-of-range transformer hyperparameters with the name, value and allowed range."""
    for name, value in (
        ("d_model", d_model),
        ("num_heads", num_heads),
        ("num_layers", num_layers),
        ("ff_mult", ff_mult),
        ("segment_len", segment_len),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if d_model % num_heads:
        raise ValueError(f"num_heads must divide d_model={d_model}, got num_heads={num_heads}")


class SegmentMemory(Memory):
    """A memory of ``memory_len`` vectors of size ``d_model`` read by every step of a segment and
    rewritten at each segment's end. Subclasses define :meth:`initial_memory` and
    :meth:`process_segment`; this class does the bookkeeping (phases, resets, open segment).

    State: ``memory`` (B, memory_len, d_model), ``segment`` (B, S, input_dim) the open segment's
    raw inputs (zero after ``phase``), ``phase`` (B,) int64 steps in the open segment.
    """

    def __init__(self, input_dim: int, output_dim: int, *, memory_len: int, segment_len: int,
                 d_model: int) -> None:
        super().__init__(input_dim, output_dim)
        self.memory_len = memory_len
        self.segment_len = segment_len
        self.d_model = d_model

    @abc.abstractmethod
    def initial_memory(self) -> Tensor:
        """The memory of a fresh episode, (memory_len, d_model), differentiable."""

    @abc.abstractmethod
    def process_segment(
        self, memory: Tensor, inputs: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Run one segment: ``memory`` (B, memory_len, d_model) read, ``inputs`` (B, S, input_dim)
        and ``valid`` (B, S) bool (a prefix of the slots). Returns each slot's output
        (B, S, output_dim), where slot ``j`` depends only on the memory and slots ``<= j``, and the
        written memory (B, memory_len, d_model), used only when the segment is complete."""

    @abc.abstractmethod
    def encode_open(self, memory: Tensor, segment: Tensor, phase: Tensor) -> dict[str, Tensor]:
        """The acting cache of the open segments: what later steps of a segment need of its
        earlier ones (per-layer keys and values, ...), from the memory they read (B, M, d), their
        raw inputs ``segment`` (B, S, input_dim) and ``phase`` (B,) (slots ``< phase`` hold
        steps). Entries of slots ``>= phase`` are never read."""

    @abc.abstractmethod
    def step(
        self, memory: Tensor, x: Tensor, pos: Tensor, cache: dict[str, Tensor], write: bool
    ) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """One acting step of every env: ``memory`` (B, M, d) read by the step's segment, ``x``
        (B, input_dim) the step at position ``pos`` (B,) of its segment, ``cache`` the acting
        cache of the segment's earlier steps. Returns the step's output (B, output_dim), the
        written memory (B, M, d) when ``write`` (used where ``pos`` is the segment's last slot;
        None otherwise), and the cache with the step in slot ``pos``."""

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        device = self.device if device is None else device
        memory = self.initial_memory().detach().to(device)
        return {
            "memory": memory.unsqueeze(0).expand(batch_size, -1, -1).clone(),
            "segment": torch.zeros(batch_size, self.segment_len, self.input_dim, device=device),
            "phase": torch.zeros(batch_size, dtype=torch.long, device=device),
        }

    def forward(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State, dict[str, Tensor]]:
        if x.dim() != 3 or episode_starts.shape != x.shape[:2]:
            raise ValueError(
                f"x must be (T, B, D) and episode_starts (T, B); got x {tuple(x.shape)}, "
                f"episode_starts {tuple(episode_starts.shape)}"
            )
        acting = acting_call(self)
        if x.shape[0] == 0:  # nothing to run: the state is unchanged
            y = x.new_zeros(0, x.shape[1], self.output_dim)
            return y, dict(state), {"memory_size": x.new_zeros(())}
        if acting and x.shape[0] == 1:
            return self._act(x[0], state, episode_starts[0].to(torch.bool))
        lay = segment_layout(x, episode_starts, state["segment"], state["phase"], self.segment_len)
        init = self.initial_memory().unsqueeze(0)  # (1, M, d)
        memory = state["memory"]
        outs = []
        for k in range(lay.valid.shape[1]):
            read = torch.where(lay.reset[:, k, None, None], init, memory)
            y, written = self.process_segment(read, lay.inputs[:, k], lay.valid[:, k])
            outs.append(y)
            # empty (padding) segments keep the memory: neither reset nor complete
            memory = torch.where(lay.complete[:, k, None, None], written, read)
        out = torch.stack(outs, dim=1)  # (B, K, S, D_out)
        b_idx = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
        y = out[b_idx, lay.seg, lay.pos]  # (T, B, D_out)
        new_state = {"memory": memory, "segment": lay.carried, "phase": lay.phase}
        attended = (self.memory_len + lay.pos + 1).to(x.dtype)
        return y, new_state, {"memory_size": attended.mean().detach()}

    def _act(
        self, x: Tensor, state: State, reset: Tensor
    ) -> tuple[Tensor, State, dict[str, Tensor]]:
        """One step without gradients on the acting cache of the open segment: the step runs
        alone against its segment's cached earlier steps (instead of the whole open segment
        again), and the write runs only when some env's segment ends (always on accelerators, so
        that nothing is read back to the host). ``x`` (B, input_dim), ``reset`` (B,) bool."""
        stamp = cache_stamp(self, self.parameters())
        s = self.segment_len
        pos = state["phase"] * ~reset  # (B,): the step's slot; 0 on an episode start
        init = self.initial_memory().unsqueeze(0)
        read = torch.where(reset[:, None, None], init, state["memory"])
        cache = cached(state, "segment", stamp)
        if cache is None:  # from the stored open segments
            cache = self.encode_open(state["memory"], state["segment"], state["phase"])
        complete = pos == s - 1
        write = x.device.type != "cpu" or bool(complete.any())
        y, written, cache = self.step(read, x, pos, cache, write)
        memory = read if written is None else torch.where(complete[:, None, None], written, read)
        phase = (pos + 1) % s
        slot = torch.arange(s, device=x.device)
        kept = (slot < pos.unsqueeze(1)).unsqueeze(-1)  # (B, S, 1) earlier steps of the segment
        now = (slot == pos.unsqueeze(1)).unsqueeze(-1)
        segment = (state["segment"] * kept + x.unsqueeze(1) * now) * (phase > 0).view(-1, 1, 1)
        new_state = {"memory": memory, "segment": segment, "phase": phase}
        attach_cache(new_state, "segment", stamp, cache, sources=("memory", "phase"))
        attended = (self.memory_len + pos + 1).to(x.dtype)
        return y.unsqueeze(0), new_state, {"memory_size": attended.mean()}

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, memory_len={self.memory_len}, "
            f"segment_len={self.segment_len}, d_model={self.d_model}"
        )
