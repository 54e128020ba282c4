"""A causal transformer over a per-layer cache of past hidden states, shared by the Expire-Span and
Transformer-XL memories.

Each layer ``l`` keeps the hidden states that entered it at earlier steps (the memories ``h_i``
of Expire-Span section 3, the cache of Transformer-XL). A call over a block of ``T`` steps lets each
step attend to the cache and, causally, to the steps of the block before it (block-parallel, as in
Expire-Span section 4.2 "Block Parallel"); a call of one step is the acting path, the same code.

State (batch-first, one set of keys per layer ``l``):

* ``mem_l``   (B, M_l, d_model) float: cached layer inputs;
* ``age_l``   (B, M_l) int64: how many steps ago each memory was made (1 = the previous step);
* ``valid_l`` (B, M_l) bool: False marks an empty slot (zero padding along M means "empty").

Acting cache (:mod:`.acting`): a call without gradients attaches to each ``mem_l`` it returns the
keys and values of its memories in layer ``l`` (and, for Expire-Span, their spans), computed once
when a memory enters the cache; the next such call reuses them instead of re-normalising and
re-projecting the whole cache in every layer. Calls with gradients recompute them from ``mem_l``.

Cache size: on CPU the cache is trimmed after every call to the largest number of live memories
in the batch (Expire-Span's memory saving is real; one host read per call for Expire-Span). With
``fixed_capacity`` (the default on accelerators) it always holds ``capacity()`` slots, so every
call has the same shapes and reads nothing back to the host (graph capture); both give the same
outputs.

The base class is the fixed-span transformer (Transformer-XL: a step sees the previous ``L``
steps). Expire-Span overrides the hooks that decide which memories a query sees and how much
(:meth:`CachedTransformerMemory._key_spans`, :meth:`CachedTransformerMemory._attention_mask`),
which survive the call (:meth:`CachedTransformerMemory._alive`), the cache capacity and the
auxiliary outputs; resets, relative positions, random shortening and cache compaction live here.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .acting import Stamp, acting_call, attach_cache, cache_stamp, cached
from .base import Memory, State

# helpers


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def relative_position_scores(q: Tensor, rel: Tensor, dist: Tensor) -> Tensor:
    """Shaw-style term ``q_t . p_{t-i}`` for distances below ``rel``'s length, 0 beyond.

    ``q`` (B, H, T, dh), ``rel`` (P, H, dh), ``dist`` (B, T, K) int. Returns (B, H, T, K).
    Memories at distance >= P get no position term (Expire-Span 4.2 "Position Embedding": the term
    is kept only for recent memories, so its cost does not grow with the span).
    """
    window = rel.shape[0]
    qp = torch.einsum("bhtd,phd->bhtp", q, rel)  # (B, H, T, P)
    idx = dist.clamp(0, window - 1).unsqueeze(1).expand(-1, q.shape[1], -1, -1)
    return qp.gather(-1, idx) * (dist < window).unsqueeze(1).to(q.dtype)


def block_position_scores(q: Tensor, rel: Tensor, dist: Tensor, cache_len: int) -> Tensor:
    """:func:`relative_position_scores` for a call's ``[cache; block]`` keys, where the block's
    distances are ``t - j``: equal on the cache and on the causal part ``j <= t`` of the block
    (above the diagonal, keys no query may see, it holds other values of ``q . p``).

    The block part is Toeplitz, so it is a shifted view of ``q . p`` (Transformer-XL's relative
    shift) instead of a gather, and the cache part is gathered only for the first ``P`` queries
    (the later ones are too far from every cached memory).
    """
    b, h, t, _ = q.shape
    window = rel.shape[0]
    qp = torch.einsum("bhtd,phd->bhtp", q, rel)  # (B, H, T, P)
    # block: x[t, r] = qp[t, T - 1 - r] (0 beyond the window), then row t shifted by T - 1 - t
    near = qp[..., : min(window, t)].flip(-1)
    x = torch.cat([qp.new_zeros(b, h, t, 1 + max(t - window, 0)), near], dim=-1)  # (B,H,T,T+1)
    block = x.view(b, h, t + 1, t)[:, :, 1:]  # (B, H, T, T): [t, j] = qp[t, t - j] for j <= t
    if cache_len == 0:
        return block
    n = min(window, t)
    cache_dist = dist[:, :n, :cache_len]  # (B, n, M)
    idx = cache_dist.clamp(0, window - 1).unsqueeze(1).expand(-1, h, -1, -1)
    near_cache = qp[:, :, :n].gather(-1, idx) * (cache_dist < window).unsqueeze(1).to(q.dtype)
    cache = nn.functional.pad(near_cache, (0, 0, 0, t - n))
    return torch.cat([cache, block], dim=-1)


#: Bias of the keys a query may not see: ``exp`` of it underflows to exactly 0 in float32 and
#: float16 (unless a score exceeds the visible ones by about as much); an arithmetic mask instead
#: of ``-inf`` with ``torch.where``, several times slower on CPU.
HIDDEN = -1e4


def attention_bias(visible: Tensor, soft_mask: Tensor | None, dtype: torch.dtype) -> Tensor:
    """Additive attention bias (B, T, K): ``log m`` where visible, :data:`HIDDEN` elsewhere.

    ``softmax(s + log m)`` is the masked, renormalised attention ``m a / sum_j m_j a_j`` of
    Expire-Span 4.1 in one fused softmax, gradients through ``m`` included. ``m`` is clamped to the
    smallest normal float before the log only so that invisible pairs (``m = 0``) send a zero
    rather than a NaN gradient; visible pairs have ``m > 0``.
    """
    hidden = visible.to(dtype).sub(1.0)  # 0 where visible, -1 elsewhere
    if soft_mask is None:
        return hidden * -HIDDEN
    tiny = torch.finfo(soft_mask.dtype).tiny
    return torch.add(soft_mask.clamp_min(tiny).log(), hidden, alpha=-HIDDEN)


def masked_attention_weights(scores: Tensor, visible: Tensor, soft_mask: Tensor | None) -> Tensor:
    """Softmax over visible keys, then multiplied by ``soft_mask`` and renormalised.

    ``a'_{t,i} = m_{t,i} a_{t,i} / sum_j m_{t,j} a_{t,j}`` (Expire-Span eq. in 4.1). ``scores``
    (B, H, T, K); ``visible`` (B, T, K) bool; ``soft_mask`` (B, T, K) in [0, 1] or None. Every
    query must see at least one key with ``m > 0`` (its own step).
    """
    bias = attention_bias(visible, soft_mask, scores.dtype)
    return torch.softmax(scores + bias.unsqueeze(1), dim=-1)


# layers


class CachedAttentionLayer(nn.Module):
    """Pre-norm layer: multi-head attention over ``[cache; block]``, then a feed-forward block."""

    def __init__(
        self, d_model: int, num_heads: int, d_ff: int, dropout: float, position_window: int
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.d_head = d_model // num_heads
        self.norm_att = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.rel = (
            nn.Parameter(torch.randn(position_window, num_heads, self.d_head) * 0.02)
            if position_window > 0
            else None
        )
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def keys_values(self, h: Tensor) -> Tensor:
        """Keys and values ``(B, N, 2 * d_model)`` of layer inputs ``h`` (B, N, d_model): what a
        memory contributes to the attention of later steps (what the acting cache keeps)."""
        return self.kv(self.norm_att(h))

    def heads(self, kv: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (B, N, 2D) as heads: two (B, H, N, dh) views."""
        return kv.unflatten(-1, (2, self.num_heads, self.d_head)).permute(2, 0, 3, 1, 4)

    def packed_heads(self, kv: Tensor) -> Tensor:
        """Keys and values (B, N, 2D) as (B, H, N, 2 dh): per head, the key then the value (the
        acting cache's layout: one tensor to append to and to compact)."""
        b, n, _ = kv.shape
        return kv.view(b, n, 2, self.num_heads, self.d_head).permute(0, 3, 1, 2, 4).reshape(
            b, self.num_heads, n, 2 * self.d_head
        )

    def forward(
        self, h: Tensor, hn: Tensor, k: Tensor, v: Tensor, dist: Tensor, bias: Tensor
    ) -> Tensor:
        """``h`` (B, T, D) block inputs and ``hn`` their normalised form; ``k``, ``v``
        (B, H, M + T, dh) keys and values of ``[cache; block]``; ``dist`` (B, T, M + T) distances
        and ``bias`` (B, T, M + T) the additive mask (:func:`attention_bias`). Returns the
        outputs (B, T, D)."""
        b, t, d = h.shape
        heads, dh = self.num_heads, self.d_head
        q = self.q(hn).view(b, t, heads, dh).transpose(1, 2) * (1.0 / math.sqrt(dh))
        scores = q @ k.transpose(-1, -2)  # (B, H, T, K)
        if self.rel is not None and t == 1:  # one query: gather its terms, O(K H)
            scores = scores + relative_position_scores(q, self.rel, dist)
        elif self.rel is not None:
            scores = scores + block_position_scores(q, self.rel, dist, k.shape[2] - t)
        # the bias added in place: the scores are needed by nothing else in the backward pass
        w = self.drop(torch.softmax(scores.add_(bias.unsqueeze(1)), dim=-1))
        o = (w @ v).transpose(1, 2).reshape(b, t, d)
        h = h + self.drop(self.out(o))
        return h + self.drop(self.ff(self.norm_ff(h)))


def _kept_suffix(keep: Tensor) -> int | None:
    """``j`` when every row of ``keep`` (B, K) drops exactly its first ``j`` memories and keeps
    the rest (the sliding window of Transformer-XL once its cache is full): compaction is then a
    slice. None otherwise. A few host reads, on CPU only."""
    if keep.device.type != "cpu":
        return None
    columns = keep.all(dim=0)  # (K,)
    first = keep.shape[1] - int(columns.sum())
    if bool(columns[first:].all()) and not bool(keep[:, :first].any()):
        return first
    return None


class _Layout(NamedTuple):
    """Where the steps of a call stand relative to the cache and to each other."""

    sees_cache: Tensor  # (B, T) bool: no reset in the block up to the step
    block_dist: Tensor  # (B, T, T) int: t - j
    block_vis: Tensor  # (B, T, T) bool: j <= t in the same episode
    keep_block: Tensor  # (B, T) bool: the step is in the block's last episode


class _Candidates(NamedTuple):
    """One layer's ``[cache; block]`` memories before compaction."""

    mem: Tensor  # (B, K, D) layer inputs
    dist: Tensor  # (B, K) distances to the next call's first step
    keep: Tensor  # (B, K) bool: the memory survives the call
    acting: dict[str, Tensor] | None  # acting calls: "kv" (B, H, K, 2 dh), "span" (B, K)


# memory


class CachedTransformerMemory(Memory):
    """Causal transformer whose state is a per-layer cache of past hidden states.

    The base keeps every memory a query may see (no span); subclasses restrict it through the
    hooks. Output: the final layer's hidden states after a LayerNorm, ``output_dim = d_model``.
    """

    #: Whether memories expire before the capacity is reached (Expire-Span): the cache is then
    #: trimmed to the largest live count of the batch instead of ``min(capacity, M)``.
    expiring: bool = False

    def __init__(
        self,
        input_dim: int,
        *,
        max_span: int,
        num_layers: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float,
        position_window: int,
        random_shortening: bool,
        fixed_capacity: bool | None = None,
    ) -> None:
        _check_int("max_span", max_span, 1)
        _check_int("num_layers", num_layers, 1)
        _check_int("d_model", d_model, 1)
        _check_int("num_heads", num_heads, 1)
        _check_int("d_ff", d_ff, 1)
        _check_int("position_window", position_window, 0)
        if d_model % num_heads:
            raise ValueError(f"d_model must be divisible by num_heads={num_heads}, got {d_model}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if fixed_capacity is not None and not isinstance(fixed_capacity, bool):
            raise ValueError(
                f"fixed_capacity must be True, False or None (fixed on accelerators), got "
                f"{fixed_capacity!r}"
            )
        super().__init__(input_dim, d_model)
        self.max_span = max_span
        self.num_layers = num_layers
        self.d_model = d_model
        self.num_heads = num_heads
        self.position_window = position_window
        self.random_shortening = bool(random_shortening)
        self.fixed_capacity = fixed_capacity
        self.proj = nn.Linear(input_dim, d_model)
        self.layers = nn.ModuleList(
            CachedAttentionLayer(d_model, num_heads, d_ff, dropout, position_window)
            for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(d_model)

    # hooks

    def capacity(self) -> int:
        """Most memories a layer's cache can hold between calls."""
        return self.max_span

    def _key_spans(self, layer: int, h: Tensor) -> Tensor | None:
        """Span of each memory ``h`` (B, N, D) of ``layer``: (B, N), or None (no spans).

        Every call with gradients calls it on the whole ``[cache; block]`` with the current
        parameters, so a span is never stale and its predictor is trained by every memory,
        however old (see :mod:`.expire_span`); acting calls call it on the block only and keep
        the cache's spans in the acting cache.
        """
        return None

    def _attention_mask(self, dist: Tensor, span: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Which keys each query may see (bool (B, T, K)) and an optional soft mask in [0, 1]."""
        return dist <= self.max_span, None

    def _alive(self, next_dist: Tensor, span: Tensor | None) -> Tensor:
        """Whether a memory at distance ``next_dist`` from the next call's first step is kept."""
        return next_dist <= self.max_span

    def _layer_aux(
        self, visible: Tensor, soft: Tensor | None, span: Tensor | None,
        *, layer: int, keys: Tensor,
    ) -> dict[str, Tensor]:
        """Auxiliary terms of one layer (losses, diagnostics), from its (B, T, K) masks and the
        memories ``keys`` (B, K, D) they mask."""
        return {}

    def _combine_aux(self, per_layer: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The call's auxiliary outputs from the per-layer terms (default: none)."""
        return {}

    def _cache_modules(self, layer: int) -> list[nn.Module]:
        """The modules whose parameters the acting cache of ``layer`` is computed with."""
        block = self.layers[layer]
        return [block.norm_att, block.kv]

    # contract

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        device = self.device if device is None else device
        dtype = self.proj.weight.dtype
        m = self.capacity() if self._fixed(torch.device(device)) else 0
        state: State = {}
        for l in range(self.num_layers):
            state[f"mem_{l}"] = torch.zeros(batch_size, m, self.d_model, device=device, dtype=dtype)
            state[f"age_{l}"] = torch.zeros(batch_size, m, device=device, dtype=torch.long)
            state[f"valid_{l}"] = torch.zeros(batch_size, m, device=device, dtype=torch.bool)
        return state

    def state_spec(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        cap, dtype = self.capacity(), self.proj.weight.dtype
        spec: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        for l in range(self.num_layers):
            spec[f"mem_{l}"] = ((cap, self.d_model), dtype)
            spec[f"age_{l}"] = ((cap,), torch.long)
            spec[f"valid_{l}"] = ((cap,), torch.bool)
        return spec

    def forward(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State, dict[str, Tensor]]:
        t_len, b, _ = x.shape
        if t_len == 0:
            raise ValueError("x must hold at least one step, got T=0")
        device = x.device
        stamp = self._stamp() if acting_call(self) else None
        lay = self._layout(episode_starts.to(torch.bool))
        steps = torch.arange(t_len, device=device)
        limit = None
        if self.training and self.random_shortening:
            # Expire-Span 4.2 "Regularization": l ~ U(0, L) per batch, no attention beyond it
            limit = torch.rand((), device=device) * self.max_span

        h = self.proj(x).transpose(0, 1)  # (B, T, D)
        layer_aux: list[dict[str, Tensor]] = []
        attended = torch.zeros((), dtype=torch.long, device=device)  # visible pairs, all layers
        candidates = []
        for l, layer in enumerate(self.layers):
            mem, age, valid = state[f"mem_{l}"], state[f"age_{l}"], state[f"valid_{l}"]
            hn = layer.norm_att(h)
            kv_new = layer.kv(hn)  # (B, T, 2D)
            keys = torch.cat([mem, h], dim=1)  # (B, K, D)
            cache = None if stamp is None else self._acting_cache(l, state, stamp)
            if cache is None:  # from the stored hidden states (every call with gradients)
                k, v = layer.heads(torch.cat([layer.keys_values(mem), kv_new], dim=1))
                span = self._key_spans(l, keys)  # (B, K) or None
            else:  # acting: the cache's keys, values and spans as they were computed
                kvh = torch.cat([cache["kv"], layer.packed_heads(kv_new)], dim=2)
                k, v = kvh[..., : layer.d_head], kvh[..., layer.d_head :]
                span_new = self._key_spans(l, h)
                span = None if span_new is None else torch.cat([cache["span"], span_new], 1)
            # per query and key: distance, and whether the key exists and is of the episode
            if t_len == 1:
                dist = nn.functional.pad(age, (0, 1)).unsqueeze(1)  # (B, 1, K)
                exists = nn.functional.pad(valid & lay.sees_cache, (0, 1), value=True)
                vis = exists.unsqueeze(1)
            else:
                dist = torch.cat([steps[None, :, None] + age[:, None, :], lay.block_dist], dim=2)
                vis = torch.cat([valid[:, None, :] & lay.sees_cache[:, :, None], lay.block_vis],
                                dim=2)
            allowed, soft = self._attention_mask(dist, span)
            vis = vis & allowed
            attended = attended + vis.sum()
            layer_aux.append(self._layer_aux(vis, soft, span, layer=l, keys=keys))
            att_vis = vis if limit is None else vis & (dist <= limit)
            h_next = layer(h, hn, k, v, dist, attention_bias(att_vis, soft, h.dtype))

            # memories that survive the call: cache rows without a reset, block steps of the
            # last episode; distances as seen from the next call's first step
            if t_len == 1:
                next_dist, keep = dist[:, 0] + 1, exists
            else:
                next_dist = torch.cat([age + t_len, (t_len - steps).expand(b, -1)], dim=1)
                keep = torch.cat([valid & lay.sees_cache[:, -1:], lay.keep_block], dim=1)
            keep = keep & self._alive(next_dist, None if span is None else span.detach())
            acting = None
            if stamp is not None:
                acting = {"kv": kvh} if span is None else {"kv": kvh, "span": span}
            candidates.append(_Candidates(keys, next_dist, keep, acting))
            h = h_next

        y = self.norm_out(h).transpose(0, 1)  # (T, B, D)
        # memories attended per step and layer: every visible key but the step itself (distance
        # 0, always visible)
        size = attended.to(x.dtype) / (b * t_len * self.num_layers) - 1.0
        aux = {"memory_size": size, **self._combine_aux(layer_aux)}
        return y, self._compact(candidates, stamp), aux

    def _layout(self, starts: Tensor) -> _Layout:
        """The call's layout from ``starts`` (T, B) bool."""
        t_len, b = starts.shape
        if t_len == 1:  # the acting step: nothing inside the block to relate
            ones = torch.ones(b, 1, dtype=torch.bool, device=starts.device)
            return _Layout(~starts.t(), starts.new_zeros(b, 1, 1, dtype=torch.long),
                           ones.unsqueeze(-1), ones)
        # episode index inside the block: a query sees the cache only before the row's first
        # reset, and block keys only of its own episode
        seg = starts.t().long().cumsum(dim=1)  # (B, T)
        steps = torch.arange(t_len, device=starts.device)
        block_dist = (steps[:, None] - steps[None, :]).expand(b, -1, -1)  # (B, T, T): t - j
        block_vis = (block_dist >= 0) & (seg[:, :, None] == seg[:, None, :])
        return _Layout(seg == 0, block_dist, block_vis, seg == seg[:, -1:])

    def _stamp(self) -> Stamp:
        params = [p for l in range(self.num_layers) for m in self._cache_modules(l)
                  for p in m._parameters.values() if p is not None]
        return cache_stamp(self, params)

    def _acting_cache(self, layer: int, state: State, stamp: Stamp) -> dict[str, Tensor]:
        """The acting cache of ``layer``: its memories' keys and values (B, H, M, 2 dh) and
        spans (B, M), from the cache attached to ``mem_l`` when valid, else from ``mem_l``."""
        got = cached(state, f"mem_{layer}", stamp)
        if got is not None:
            return got
        mem = state[f"mem_{layer}"]
        block = self.layers[layer]
        cache = {"kv": block.packed_heads(block.keys_values(mem))}
        span = self._key_spans(layer, mem)
        if span is not None:
            cache["span"] = span
        return cache

    def _fixed(self, device: torch.device) -> bool:
        """Whether the cache keeps ``capacity()`` slots on ``device`` (``fixed_capacity``; by
        default on accelerators, where the trim's host read would stop the device)."""
        return device.type != "cpu" if self.fixed_capacity is None else self.fixed_capacity

    def _sizes(self, candidates: list[_Candidates]) -> list[int]:
        """Slots per layer after the call."""
        if self._fixed(candidates[0].keep.device):
            return [self.capacity()] * len(candidates)
        if self.expiring:
            # expiry shrinks the cache: trim to the largest live count (one host read per call)
            counts = torch.stack([c.keep.sum(dim=1).amax() for c in candidates])
            return counts.tolist()
        return [min(self.capacity(), c.keep.shape[1]) for c in candidates]

    def _compact(self, candidates: list[_Candidates], stamp: Stamp | None) -> State:
        """Move kept memories to the front of each row (in time order) and trim or pad the rows
        to their size; an acting call (``stamp``) attaches each layer's acting cache."""
        state: State = {}
        rows: dict[tuple[int, int], Tensor] = {}  # first flat index of each row, per shape
        for l, (c, size) in enumerate(zip(candidates, self._sizes(candidates), strict=True)):
            keep, dist, mem, acting = c.keep, c.dist, c.mem, c.acting
            if size > keep.shape[1]:  # fixed capacity: a smaller state was passed in
                pad = size - keep.shape[1]
                keep = nn.functional.pad(keep, (0, pad))
                dist = nn.functional.pad(dist, (0, pad))
                mem = nn.functional.pad(mem, (0, 0, 0, pad))
                if acting is not None:
                    acting = {n: nn.functional.pad(t, (0, 0, 0, pad) if t.dim() == 4 else (0, pad))
                              for n, t in acting.items()}
            b, k = keep.shape
            # (Transformer-XL's sliding window; with learned spans, Expire-Span rarely keeps a
            # suffix in every row, and the check would cost more than it saves)
            first = None if self._fixed(keep.device) or self.expiring else _kept_suffix(keep)
            if first is not None:  # every row keeps the same last memories: a slice, no copy
                state[f"mem_{l}"] = mem[:, first:]
                state[f"age_{l}"] = dist[:, first:]
                state[f"valid_{l}"] = keep[:, first:]
                if acting is not None:
                    attach_cache(state, f"mem_{l}", stamp,
                                 {n: t[:, :, first:] if t.dim() == 4 else t[:, first:]
                                  for n, t in acting.items()})
                continue
            order = torch.argsort((~keep).to(torch.int32), dim=1, stable=True)[:, :size]
            # rows of the flattened batch: index_select copies whole rows, several times faster
            # on CPU than an element-wise gather along dim 1
            flat = (order + self._row_starts(rows, b, k, keep.device)).reshape(-1)
            valid = keep.reshape(-1).index_select(0, flat).view(b, size)
            kept = mem.reshape(b * k, -1).index_select(0, flat).view(b, size, -1)
            state[f"mem_{l}"] = kept * valid.unsqueeze(-1)
            ages = dist.reshape(-1).index_select(0, flat).view(b, size)
            state[f"age_{l}"] = ages * valid
            state[f"valid_{l}"] = valid
            if acting is not None:
                kv = acting["kv"]
                heads = kv.shape[1]
                # (b, h, j) -> row (b * H + h) * K + order[b, j] of the flattened keys
                starts = self._row_starts(rows, b * heads, k, keep.device).view(b, heads, 1)
                flat_bh = (starts + order.unsqueeze(1)).reshape(-1)
                cache = {"kv": kv.reshape(b * heads * k, -1).index_select(0, flat_bh).view(
                    b, heads, size, -1)}
                if "span" in acting:
                    cache["span"] = acting["span"].reshape(-1).index_select(0, flat).view(b, size)
                attach_cache(state, f"mem_{l}", stamp, cache)
        return state

    @staticmethod
    def _row_starts(
        known: dict[tuple[int, int], Tensor], n: int, k: int, device: torch.device
    ) -> Tensor:
        """(n, 1): the first flat index of each of ``n`` rows of length ``k`` (made once)."""
        if (n, k) not in known:
            known[n, k] = torch.arange(n, device=device).unsqueeze(1) * k
        return known[n, k]

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, max_span={self.max_span}, num_layers={self.num_layers}, "
            f"num_heads={self.num_heads}, position_window={self.position_window}, "
            f"random_shortening={self.random_shortening}, fixed_capacity={self.fixed_capacity}"
        )
