"""Memformer memory: fixed memory slots read by cross-attention, written by slot attention.

Memformer, section 3. Each segment of ``S`` steps runs through a causal encoder whose every layer
reads the memory slots by cross-attention (section 3.3; causal so that a step acts on the
segment so far). At the segment's end the memory writer (section 3.4.1, eqs. 4-8) updates every
slot ``i`` from the slot itself and the segment's final hidden states ``x``:

    q_i = W_Q m_i,  keys [W_K m_i; W_K x],  A_i = softmax([q_i . keys] / (sqrt(d_head) * tau))
    m_i' = A_i [m_i; W_V x]                  (per head; slot i never sees slot j)

with a temperature ``tau < 1`` sharpening the write. Biased memory normalisation (section 3.4.3)
follows: ``m_i <- (m_i' + b_i) / ||m_i' + b_i||``; the initial memory is ``b_i / ||b_i||``, the
state every slot drifts to when nothing new is written. Trained with MRBP in the agents.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import register_memory
from .segment import Block, SegmentMemory, check_transformer_args

__all__ = ["MemformerMemory", "SlotWriter"]


class SlotWriter(nn.Module):
    """Slot attention writer with biased memory normalisation (Memformer eqs. 4-8, section 3.4.3).

    Each slot attends over itself and the segment only; the self value is the slot itself, so a
    slot that attends only to itself keeps its content (up to the bias).
    """

    def __init__(self, num_slots: int, d_model: int, num_heads: int, tau: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.tau = tau
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)  # shared by slots and steps (eqs. 4-5)
        self.value = nn.Linear(d_model, d_model)
        # random directions: equal biases would keep the slots identical forever. The bias's norm
        # sets how fast a slot forgets (section 3.4.3): start near 1, the norm of a slot, so that
        # a write keeps a fair share of the old content
        self.bias = nn.Parameter(torch.randn(num_slots, d_model) / math.sqrt(d_model))

    def initial_memory(self) -> Tensor:
        """The normalised bias, (num_slots, d_model)."""
        return F.normalize(self.bias, dim=-1)

    def attention(self, memory: Tensor, hidden: Tensor, valid: Tensor) -> Tensor:
        """Write attention (B, H, num_slots, 1 + S): column 0 is the slot itself."""
        b, k, d = memory.shape
        h, dh = self.num_heads, d // self.num_heads
        # slots have unit norm; scale them to the norm of layer-normed hidden states (sqrt(d))
        # so that the shared key projection sees both on one scale
        slots = memory * math.sqrt(d)
        q = self.query(slots).view(b, k, h, dh)
        k_self = self.key(slots).view(b, k, h, dh)
        k_x = self.key(hidden).view(b, -1, h, dh)
        scale = 1.0 / (math.sqrt(dh) * self.tau)
        self_logits = (q * k_self).sum(-1).transpose(1, 2).unsqueeze(-1)  # (B, H, k, 1)
        x_logits = torch.einsum("bkhe,bshe->bhks", q, k_x)  # (B, H, k, S)
        x_logits = x_logits.masked_fill(~valid[:, None, None, :], float("-inf"))
        return torch.softmax(torch.cat([self_logits, x_logits], dim=-1) * scale, dim=-1)

    def forward(self, memory: Tensor, hidden: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """``memory`` (B, k, d), ``hidden`` (B, S, d), ``valid`` (B, S) bool. Returns the next
        memory (B, k, d), unit-norm slots, and the write attention (B, H, k, 1 + S)."""
        b, k, d = memory.shape
        h, dh = self.num_heads, d // self.num_heads
        attn = self.attention(memory, hidden, valid)
        v_x = self.value(hidden).view(b, -1, h, dh)
        mem_h = memory.view(b, k, h, dh).transpose(1, 2)  # (B, H, k, dh)
        new = attn[..., :1] * mem_h + torch.einsum("bhks,bshe->bhke", attn[..., 1:], v_x)
        new = new.transpose(1, 2).reshape(b, k, d)
        return F.normalize(new + self.bias, dim=-1), attn


@register_memory("memformer")
class MemformerMemory(SegmentMemory):
    """Memformer memory behind the memory contract; see the module docstring.

    State: ``memory`` (B, num_slots, d_model) unit-norm slots, ``segment`` (B, segment_len,
    input_dim), ``phase`` (B,) int64. ``aux["memory_size"]``: slots plus segment steps attended,
    mean per step. ``tau`` can be changed on a built memory (``memory.tau = 0.3``).
    """

    def __init__(
        self,
        input_dim: int,
        *,
        num_slots: int = 4,
        segment_len: int = 8,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        ff_mult: int = 2,
        tau: float = 0.5,
    ) -> None:
        """
        Args:
            input_dim: size of each input step.
            num_slots: memory slots ``k``.
            segment_len: steps per segment ``S``; the memory is rewritten every ``S`` steps.
            d_model: width of the encoder (also the output size and the slot size).
            num_layers: encoder layers, each with a cross-attention reading the memory.
            num_heads: attention heads (must divide ``d_model``), also used by the writer.
            ff_mult: feed-forward hidden size as a multiple of ``d_model``.
            tau: temperature of the write attention, in (0, 1]; the paper uses ``tau < 1``, which
                sharpens the write onto fewer slots or steps.
        """
        check_transformer_args(
            d_model=d_model, num_heads=num_heads, num_layers=num_layers, ff_mult=ff_mult,
            segment_len=segment_len,
        )
        if int(num_slots) != num_slots or num_slots < 1:
            raise ValueError(f"num_slots must be an integer >= 1, got {num_slots!r}")
        _check_tau(tau)
        super().__init__(
            input_dim, d_model, memory_len=num_slots, segment_len=segment_len, d_model=d_model
        )
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.embed = nn.Linear(input_dim, d_model)
        self.positions = nn.Parameter(0.02 * torch.randn(segment_len, d_model))
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, ff_mult, cross=True) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.writer = SlotWriter(num_slots, d_model, num_heads, tau)
        causal = torch.ones(segment_len, segment_len, dtype=torch.bool).tril()
        self.register_buffer("causal", causal, persistent=False)
        diagonal = torch.eye(segment_len, dtype=torch.bool)
        self.register_buffer("diagonal", diagonal, persistent=False)

    @property
    def tau(self) -> float:
        """Temperature of the write attention."""
        return self.writer.tau

    @tau.setter
    def tau(self, value: float) -> None:
        _check_tau(value)
        self.writer.tau = float(value)

    def initial_memory(self) -> Tensor:
        return self.writer.initial_memory()

    def encode(self, memory: Tensor, inputs: Tensor, valid: Tensor) -> Tensor:
        """Final hidden states (B, S, d_model) of a segment reading ``memory`` in every layer."""
        # a step sees steps <= itself that hold a step; the diagonal keeps empty slots finite
        mask = (self.causal & valid.unsqueeze(1)) | self.diagonal  # (B, S, S)
        h = self.embed(inputs) + self.positions
        for block in self.blocks:
            h = block(h, mask, memory)
        return self.norm(h)

    def process_segment(
        self, memory: Tensor, inputs: Tensor, valid: Tensor
    ) -> tuple[Tensor, Tensor]:
        hidden = self.encode(memory, inputs, valid)
        written, _ = self.writer(memory, hidden, valid)
        return hidden, written

    # acting cache: each layer's keys and values of the open segment's steps, "kv_l" (B, S, 2d),
    # and their final hidden states "hidden" (B, S, d), which the writer reads at the segment's end

    def encode_open(self, memory: Tensor, segment: Tensor, phase: Tensor) -> dict[str, Tensor]:
        valid = torch.arange(self.segment_len, device=segment.device) < phase.unsqueeze(1)
        mask = (self.causal & valid.unsqueeze(1)) | self.diagonal  # (B, S, S)
        cache, h = {}, self.embed(segment) + self.positions
        for l, block in enumerate(self.blocks):
            h, cache[f"kv_{l}"] = block.forward_keys(h, mask, memory)
        cache["hidden"] = self.norm(h)
        return cache

    def step(
        self, memory: Tensor, x: Tensor, pos: Tensor, cache: dict[str, Tensor], write: bool
    ) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        s = self.segment_len
        slot = torch.arange(s, device=x.device)
        earlier = slot < pos.unsqueeze(1)  # (B, S): cached steps of the segment
        # the step sees its segment's earlier steps and itself: keys [cached steps; step]
        mask = torch.cat([earlier, earlier.new_ones(x.shape[0], 1)], dim=1).unsqueeze(1)
        kept = earlier.unsqueeze(-1)
        now = (slot == pos.unsqueeze(1)).unsqueeze(-1)
        h = (self.embed(x) + self.positions.index_select(0, pos)).unsqueeze(1)  # (B, 1, d)
        new = {}
        for l, block in enumerate(self.blocks):
            steps = cache[f"kv_{l}"]

            def keys(kv: Tensor, steps: Tensor = steps) -> Tensor:
                return torch.cat([steps, kv], dim=1)

            h, kv = block.forward_keys(h, mask, memory, keys=keys)
            new[f"kv_{l}"] = steps * kept + kv * now
        hidden = self.norm(h)  # (B, 1, d)
        new["hidden"] = cache["hidden"] * kept + hidden * now
        written = None
        if write:  # at a segment's end every slot holds a step
            written, _ = self.writer(memory, new["hidden"], torch.ones_like(earlier))
        return hidden[:, 0], written, new

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_layers={self.num_layers}, num_heads={self.num_heads}, "
            f"tau={self.tau}"
        )


def _check_tau(tau: float) -> None:
    if not (isinstance(tau, (int, float)) and 0.0 < tau <= 1.0):
        raise ValueError(f"tau must be in (0, 1], got {tau!r}")
