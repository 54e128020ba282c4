"""Transformer-XL memory: the Expire-Span transformer with a fixed span and no expiry.

Each step attends to itself and to the previous ``L`` steps of its episode (``C_t = {t-L, ...,
t-1}``, Expire-Span section 3 "Fixed-spans"); the cache keeps exactly the last ``L`` memories per
layer. The paper's baseline: the only difference with Expire-Span is how memories are kept.
"""

from __future__ import annotations

from .base import register_memory
from .transformer import CachedTransformerMemory


@register_memory("trxl")
class TransformerXLMemory(CachedTransformerMemory):
    """Causal transformer over a cache of the last ``max_span`` hidden states of each layer.

    State per layer ``l``: ``mem_l`` (B, M_l, d_model), ``age_l`` (B, M_l), ``valid_l`` (B, M_l),
    with ``M_l <= max_span``. ``aux["memory_size"]`` is ``min(L, steps seen in the episode)``
    averaged over steps.
    """

    def __init__(
        self,
        input_dim: int,
        *,
        max_span: int = 200,
        num_layers: int = 2,
        d_model: int = 64,
        num_heads: int = 4,
        d_ff: int = 256,
        dropout: float = 0.0,
        position_window: int = 32,
        random_shortening: bool = False,
        fixed_capacity: bool | None = None,
    ) -> None:
        """
        Args:
            input_dim: size of each input step.
            max_span: the fixed span ``L``: memories older than ``L`` steps are dropped.
            num_layers: transformer layers (paper's RL agents: 2).
            d_model: hidden units (also the output size; paper's RL agents: 64).
            num_heads: attention heads; must divide ``d_model``.
            d_ff: hidden units of each layer's feed-forward block.
            dropout: dropout on attention weights and residual branches, in [0, 1).
            position_window: relative position terms only for memories fewer than this many steps
                back; 0 disables them.
            random_shortening: in training mode, draw ``l ~ U(0, L)`` per call and attend to
                nothing farther than ``l`` steps back (off by default: the plain baseline).
            fixed_capacity: True: keep ``max_span`` cache slots per layer from the first step
                (static shapes, for graph capture); False: grow the cache to ``max_span``;
                None: True on accelerators, False on CPU. The same outputs either way.
        """
        super().__init__(
            input_dim,
            max_span=max_span,
            num_layers=num_layers,
            d_model=d_model,
            num_heads=num_heads,
            d_ff=d_ff,
            dropout=dropout,
            position_window=position_window,
            random_shortening=random_shortening,
            fixed_capacity=fixed_capacity,
        )
