"""Recurrent Memory Transformer (RMT) memory: memory tokens carried from segment to segment.

Recurrent Memory Transformer, section 3. Each segment of ``S`` steps runs through a transformer
as ``[read memory; segment; write memory]``, the same ``m`` memory tokens placed at both ends.
Every step attends causally to the read tokens and the segment so far (never to the write tokens
or later steps); the read tokens see only their own block; the write tokens see the read tokens,
the whole segment and their own block. The write tokens' outputs become the next segment's memory,
so gradients flow across segments through the memory (BPTT over as many segments as the training
sequence holds; MRBP in the agents for longer ones). The first segment reads a learned memory.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import register_memory
from .segment import Block, SegmentMemory, check_transformer_args

__all__ = ["RMTMemory"]


@register_memory("rmt")
class RMTMemory(SegmentMemory):
    """RMT memory behind the memory contract; see the module docstring.

    State: ``memory`` (B, num_memory_tokens, d_model), ``segment`` (B, segment_len, input_dim),
    ``phase`` (B,) int64. ``aux["memory_size"]``: memory tokens plus segment steps attended, mean
    per step.
    """

    def __init__(
        self,
        input_dim: int,
        *,
        num_memory_tokens: int = 4,
        segment_len: int = 8,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        ff_mult: int = 2,
    ) -> None:
        """
        Args:
            input_dim: size of each input step.
            num_memory_tokens: memory tokens ``m`` (read and write blocks each hold ``m``).
            segment_len: steps per segment ``S``; the memory is rewritten every ``S`` steps.
            d_model: width of the transformer (also the output size and the memory token size).
            num_layers: transformer layers ``N``.
            num_heads: attention heads per layer (must divide ``d_model``).
            ff_mult: feed-forward hidden size as a multiple of ``d_model``.
        """
        check_transformer_args(
            d_model=d_model, num_heads=num_heads, num_layers=num_layers, ff_mult=ff_mult,
            segment_len=segment_len,
        )
        if int(num_memory_tokens) != num_memory_tokens or num_memory_tokens < 1:
            raise ValueError(
                f"num_memory_tokens must be an integer >= 1, got {num_memory_tokens!r}"
            )
        super().__init__(
            input_dim, d_model, memory_len=num_memory_tokens, segment_len=segment_len,
            d_model=d_model,
        )
        self.num_layers = num_layers
        self.num_heads = num_heads
        m, s = num_memory_tokens, segment_len
        self.embed = nn.Linear(input_dim, d_model)
        self.memory_init = nn.Parameter(torch.randn(m, d_model))
        # absolute positions of [read; segment; write]: they also tell read from write tokens
        self.positions = nn.Parameter(0.02 * torch.randn(2 * m + s, d_model))
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, ff_mult) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.register_buffer("static_mask", self._static_mask(m, s), persistent=False)

    @staticmethod
    def _static_mask(m: int, s: int) -> Tensor:
        """(2m+S, 2m+S) bool, True = may attend: read block sees itself; step j sees the read
        block and steps <= j; the write block sees everything but nothing after it."""
        n = 2 * m + s
        mask = torch.zeros(n, n, dtype=torch.bool)
        mask[:m, :m] = True
        mask[m : m + s, :m] = True
        mask[m : m + s, m : m + s] = torch.ones(s, s, dtype=torch.bool).tril()
        mask[m + s :, :] = True
        return mask

    def initial_memory(self) -> Tensor:
        return self.memory_init

    def process_segment(
        self, memory: Tensor, inputs: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        m = self.memory_len
        tokens = torch.cat([memory, self.embed(inputs), memory], dim=1) + self.positions
        always = valid.new_ones(valid.shape[0], m)
        keys = torch.cat([always, valid, always], dim=1)
        mask = self.static_mask.unsqueeze(0) & keys.unsqueeze(1)  # (B, L, L)
        h = tokens
        for block in self.blocks:
            h = block(h, mask)
        h = self.norm(h)
        return h[:, m:-m], h[:, -m:]

    # acting cache: each layer's keys and values of the open segment's steps, "kv_l" (B, S, 2d)

    def encode_open(self, memory: Tensor, segment: Tensor, phase: Tensor) -> dict[str, Tensor]:
        m, s = self.memory_len, self.segment_len
        tokens = torch.cat([memory, self.embed(segment)], dim=1) + self.positions[: m + s]
        valid = torch.arange(s, device=segment.device) < phase.unsqueeze(1)  # (B, S)
        keys = torch.cat([valid.new_ones(valid.shape[0], m), valid], dim=1)
        mask = self.static_mask[: m + s, : m + s].unsqueeze(0) & keys.unsqueeze(1)
        cache, h = {}, tokens
        for l, block in enumerate(self.blocks):
            h, kv = block.forward_keys(h, mask)
            cache[f"kv_{l}"] = kv[:, m:]
        return cache

    def step(
        self, memory: Tensor, x: Tensor, pos: Tensor, cache: dict[str, Tensor], write: bool
    ) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        m, s = self.memory_len, self.segment_len
        b = x.shape[0]
        # the step's token between its segment's read tokens and (at a segment end) write tokens;
        # the keys are [read; cached steps (S slots); step; write]
        step = self.embed(x) + self.positions.index_select(0, m + pos)
        parts = [memory + self.positions[:m], step.unsqueeze(1)]
        if write:
            parts.append(memory + self.positions[m + s :])
        h = torch.cat(parts, dim=1)
        slot = torch.arange(s, device=x.device)
        earlier = slot < pos.unsqueeze(1)  # (B, S): cached steps of the segment
        yes, no = earlier.new_ones(b, 1), earlier.new_zeros(b, 1)
        read_row = torch.cat([yes.expand(b, m), torch.zeros_like(earlier), no, no.expand(b, m)],
                             dim=1)
        step_row = torch.cat([yes.expand(b, m), earlier, yes, no.expand(b, m)], dim=1)
        rows = [read_row.unsqueeze(1).expand(-1, m, -1), step_row.unsqueeze(1)]
        if write:
            write_row = torch.cat([yes.expand(b, m), earlier, yes, yes.expand(b, m)], dim=1)
            rows.append(write_row.unsqueeze(1).expand(-1, m, -1))
        mask = torch.cat(rows, dim=1)
        if not write:
            mask = mask[..., : m + s + 1]
        kept = earlier.unsqueeze(-1)
        now = (slot == pos.unsqueeze(1)).unsqueeze(-1)
        new = {}
        for l, block in enumerate(self.blocks):
            steps = cache[f"kv_{l}"]

            def keys(kv: Tensor, steps: Tensor = steps) -> Tensor:
                return torch.cat([kv[:, :m], steps, kv[:, m:]], dim=1)

            h, kv = block.forward_keys(h, mask, keys=keys)
            new[f"kv_{l}"] = steps * kept + kv[:, m : m + 1] * now
        h = self.norm(h)
        return h[:, m], (h[:, m + 1 :] if write else None), new

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_layers={self.num_layers}, num_heads={self.num_heads}"
