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

The base class is the fixed-span transformer (Transformer-XL: a step sees the previous ``L``
steps). Expire-Span overrides the hooks that decide which memories a query sees and how much
(:meth:`CachedTransformerMemory._key_spans`, :meth:`CachedTransformerMemory._attention_mask`),
which survive the call (:meth:`CachedTransformerMemory._alive`), the cache capacity and the
auxiliary outputs; resets, relative positions, random shortening and cache compaction live here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

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


def masked_attention_weights(scores: Tensor, visible: Tensor, soft_mask: Tensor | None) -> Tensor:
    """Softmax over visible keys, then multiplied by ``soft_mask`` and renormalised.

    ``a'_{t,i} = m_{t,i} a_{t,i} / sum_j m_{t,j} a_{t,j}`` (Expire-Span eq. in 4.1). ``scores``
    (B, H, T, K); ``visible`` (B, T, K) bool; ``soft_mask`` (B, T, K) in [0, 1] or None. Every
    query must see at least one key with ``m > 0`` (its own step).
    """
    s = scores.masked_fill(~visible.unsqueeze(1), float("-inf"))
    w = torch.exp(s - s.amax(dim=-1, keepdim=True).detach())
    if soft_mask is not None:
        w = w * soft_mask.unsqueeze(1)
    return w / w.sum(dim=-1, keepdim=True)


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

    def forward(
        self, h: Tensor, mem: Tensor, dist: Tensor, visible: Tensor, soft_mask: Tensor | None
    ) -> Tensor:
        """``h`` (B, T, D) block inputs; ``mem`` (B, M, D) cache; ``dist``/``visible``/``soft_mask``
        (B, T, M + T) per query and key. Returns the block outputs (B, T, D)."""
        b, t, d = h.shape
        hn = self.norm_att(torch.cat([mem, h], dim=1))  # (B, K, D)
        q = self.q(hn[:, mem.shape[1] :]).view(b, t, self.num_heads, self.d_head).transpose(1, 2)
        k, v = self.kv(hn).view(b, -1, 2, self.num_heads, self.d_head).permute(2, 0, 3, 1, 4)
        q = q / math.sqrt(self.d_head)
        scores = q @ k.transpose(-1, -2)  # (B, H, T, K)
        if self.rel is not None:
            scores = scores + relative_position_scores(q, self.rel, dist)
        w = self.drop(masked_attention_weights(scores, visible, soft_mask))
        o = (w @ v).transpose(1, 2).reshape(b, t, d)
        h = h + self.drop(self.out(o))
        return h + self.drop(self.ff(self.norm_ff(h)))


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
        super().__init__(input_dim, d_model)
        self.max_span = max_span
        self.num_layers = num_layers
        self.d_model = d_model
        self.num_heads = num_heads
        self.position_window = position_window
        self.random_shortening = bool(random_shortening)
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

    def _key_spans(self, layer: int, keys: Tensor) -> Tensor | None:
        """Span of each key ``keys`` (B, K, D) (``[cache; block]``) of ``layer``: (B, K), or None.

        Called on every call with the current parameters, so a span is never stale and its
        predictor is trained by every memory, however old (see :mod:`.expire_span`).
        """
        return None

    def _attention_mask(self, dist: Tensor, span: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Which keys each query may see (bool (B, T, K)) and an optional soft mask in [0, 1]."""
        return dist <= self.max_span, None

    def _alive(self, next_dist: Tensor, span: Tensor | None) -> Tensor:
        """Whether a memory at distance ``next_dist`` from the next call's first step is kept."""
        return next_dist <= self.max_span

    def _layer_aux(
        self, dist: Tensor, visible: Tensor, soft: Tensor | None, span: Tensor | None,
        *, layer: int, keys: Tensor,
    ) -> dict[str, Tensor]:
        """Auxiliary terms of one layer (losses, diagnostics), from its (B, T, K) masks and the
        memories ``keys`` (B, K, D) they mask."""
        return {}

    def _combine_aux(self, per_layer: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The call's auxiliary outputs from the per-layer terms (default: none)."""
        return {}

    # contract

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        device = self.device if device is None else device
        dtype = self.proj.weight.dtype
        state: State = {}
        for l in range(self.num_layers):
            state[f"mem_{l}"] = torch.zeros(batch_size, 0, self.d_model, device=device, dtype=dtype)
            state[f"age_{l}"] = torch.zeros(batch_size, 0, device=device, dtype=torch.long)
            state[f"valid_{l}"] = torch.zeros(batch_size, 0, device=device, dtype=torch.bool)
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
        # episode index inside the block: a query sees the cache only before the row's first
        # reset, and block keys only of its own episode
        seg = episode_starts.to(torch.bool).t().long().cumsum(dim=1)  # (B, T)
        sees_cache = seg == 0  # (B, T)
        steps = torch.arange(t_len, device=device)
        block_dist = (steps[:, None] - steps[None, :]).expand(b, -1, -1)  # (B, T, T): t - j
        block_vis = (block_dist >= 0) & (seg[:, :, None] == seg[:, None, :])
        # memories that survive the call: cache rows without a reset, block steps of the last
        # episode; distances as seen from the next call's first step
        keep_cache = sees_cache[:, -1:]  # (B, 1)
        keep_block = seg == seg[:, -1:]  # (B, T)
        limit = None
        if self.training and self.random_shortening:
            # Expire-Span 4.2 "Regularization": l ~ U(0, L) per batch, no attention beyond it
            limit = torch.rand((), device=device) * self.max_span

        h = self.proj(x).transpose(0, 1)  # (B, T, D)
        layer_aux: list[dict[str, Tensor]] = []
        attended = x.new_zeros(())
        candidates = []
        for l, layer in enumerate(self.layers):
            mem, age, valid = state[f"mem_{l}"], state[f"age_{l}"], state[f"valid_{l}"]
            dist = torch.cat([steps[None, :, None] + age[:, None, :], block_dist], dim=2)
            vis = torch.cat([valid[:, None, :] & sees_cache[:, :, None], block_vis], dim=2)
            keys = torch.cat([mem, h], dim=1)  # (B, K, D)
            span = self._key_spans(l, keys)  # (B, K) or None
            allowed, soft = self._attention_mask(dist, span)
            vis = vis & allowed
            attended = attended + (vis & (dist > 0)).sum(dim=2).to(x.dtype).mean()
            layer_aux.append(self._layer_aux(dist, vis, soft, span, layer=l, keys=keys))
            att_vis = vis if limit is None else vis & (dist <= limit)
            h_next = layer(h, mem, dist, att_vis, soft)

            next_dist = torch.cat([age + t_len, t_len - steps.expand(b, -1)], dim=1)  # (B, K)
            keep = torch.cat([valid & keep_cache, keep_block], dim=1)
            keep = keep & self._alive(next_dist, None if span is None else span.detach())
            candidates.append((keys, next_dist, keep))
            h = h_next

        y = self.norm_out(h).transpose(0, 1)  # (T, B, D)
        aux = {"memory_size": (attended / self.num_layers).detach(), **self._combine_aux(layer_aux)}
        return y, self._compact(candidates), aux

    def _compact(self, candidates: list[tuple[Tensor, Tensor, Tensor]]) -> State:
        """Move kept memories to the front of each row (in time order) and trim M.

        ``candidates`` holds per layer the keys (B, K, D), their distances to the next call's
        first step (B, K) and whether each is kept (B, K).
        """
        if self.expiring:
            # expiry shrinks the cache: trim to the largest live count (one host read per call)
            counts = torch.stack([keep.sum(dim=1).amax() for _, _, keep in candidates])
            sizes = counts.tolist()
        else:
            sizes = [min(self.capacity(), keep.shape[1]) for _, _, keep in candidates]
        state: State = {}
        for l, ((mem, dist, keep), size) in enumerate(zip(candidates, sizes, strict=True)):
            order = torch.argsort((~keep).to(torch.int32), dim=1, stable=True)[:, :size]
            valid = keep.gather(1, order)
            state[f"mem_{l}"] = mem.gather(1, order[..., None].expand(-1, -1, mem.shape[2]))
            state[f"mem_{l}"] = state[f"mem_{l}"] * valid[..., None].to(mem.dtype)
            state[f"age_{l}"] = dist.gather(1, order) * valid
            state[f"valid_{l}"] = valid
        return state

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, max_span={self.max_span}, num_layers={self.num_layers}, "
            f"num_heads={self.num_heads}, position_window={self.position_window}, "
            f"random_shortening={self.random_shortening}"
        )
