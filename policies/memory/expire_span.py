"""Expire-Span memory (Sukhbaatar et al., "Not All Memories are Created Equal", section 4).

Each layer predicts how long each memory ``h_i`` should live::

    e_i = L * sigmoid(w . h_i + b)                         (one span per layer, shared by heads)
    m_{t,i} = clamp(1 + (e_i - (t - i)) / R, 0, 1)         (soft mask, ramp of length R)
    a'_{t,i} = m_{t,i} a_{t,i} / sum_j m_{t,j} a_{t,j}     (masked, renormalised attention)

The spans are not part of the state: every call with gradients recomputes ``e_i`` for the whole
``[cache; block]`` from the cached layer inputs ``h_i`` with the current ``(w, b)``. A memory
reaches its ramp long after it was made, usually in a later training sequence whose starting
state is detached; recomputing the span there is what lets the task loss (through the mask) and
the span penalty train ``(w, b)`` on old memories (section 4.2 "Loss Computation"). The span
penalty ``alpha * sum_i e_i / T`` is counted for memories while they are inside the ramp
(``0 < m < 1``), when the task loss also pushes on them. While acting (no gradients, parameters
fixed) a memory's span cannot change, so it is computed once, when the memory enters the cache,
and kept in the acting cache (:mod:`.acting`).

A memory with ``m = 0`` for the next call's first step under the current parameters is deleted
from the cache, so the cache holds fewer than ``L + R`` memories per layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import register_memory
from .transformer import CachedTransformerMemory

#: where a memory budget's coefficient starts, and the smallest it sets
ALPHA_START, ALPHA_FLOOR = 1e-9, 1e-10


def expire_soft_mask(dist: Tensor, span: Tensor, ramp: float) -> Tensor:
    """``m_{t,i} = clamp(1 + (e_i - (t - i)) / R, 0, 1)``.

    ``dist`` (B, T, K) int distances ``t - i``; ``span`` (B, K) spans ``e_i``. Returns (B, T, K).
    """
    # (float - int promotes to the float's dtype: no separate conversion)
    return (1.0 + (span.unsqueeze(1) - dist) / ramp).clamp(0.0, 1.0)


@register_memory("expire_span")
class ExpireSpanMemory(CachedTransformerMemory):
    """Causal transformer whose memories expire after a learned, per-memory span.

    State per layer ``l``: ``mem_l`` (B, M_l, d_model), ``age_l`` (B, M_l), ``valid_l`` (B, M_l);
    the spans are recomputed from ``mem_l`` on every call with gradients (:meth:`spans`); acting
    calls keep them in the acting cache. ``aux``:
    ``loss_expire_span`` (already multiplied by ``alpha``), ``memory_size`` (mean memories
    attended per step and layer), ``span_mean`` (mean span of this call's new memories) and
    ``spans`` (T, B) (span of each step's memory in the last layer, for plots).
    """

    expiring = True

    def __init__(
        self,
        input_dim: int,
        *,
        max_span: int = 200,
        ramp: float = 16.0,
        alpha: float = 5e-6,
        num_layers: int = 2,
        d_model: int = 64,
        num_heads: int = 4,
        d_ff: int = 256,
        dropout: float = 0.0,
        init_span_fraction: float = 0.1,
        position_window: int = 32,
        random_shortening: bool = True,
        fixed_capacity: bool | None = None,
        span_lr_scale: float = 1.0,
        span_eps: float | None = None,
        penalty_trains_memories: bool = True,
        span_input_norm: bool = False,
        memory_budget: float | None = None,
        budget_lr: float = 0.02,
        alpha_max: float = 5e-5,
    ) -> None:
        """
        Args:
            input_dim: size of each input step.
            max_span: the maximum span ``L``; spans lie in ``[0, L]`` (paper's corridor: 200).
            ramp: length ``R`` of the soft mask's ramp, in steps (paper's RL tasks: 16).
            alpha: coefficient of the span penalty (paper's corridor: 5e-6). Under Adam its size
                matters little while the task gives no gradient (before an RL agent's first
                rewards): the penalty is then the only consistent push on the spans and shrinks
                them all at the learning rate's pace; ``scripts/train_agent.py`` trains the full
                corridor with 0, or see the trainer's ``aux_start_step``.
            num_layers: transformer layers (paper's RL agents: 2).
            d_model: hidden units (also the output size; paper's RL agents: 64).
            num_heads: attention heads; must divide ``d_model``.
            d_ff: hidden units of each layer's feed-forward block.
            dropout: dropout on attention weights and residual branches, in [0, 1).
            init_span_fraction: initial spans as a fraction of ``L``, in (0, 1): the span
                predictor's bias starts at ``logit(init_span_fraction)``, negative below 1/2, so
                training starts with a small memory (section 4.2 "Training with Small Initial
                Spans").
            position_window: relative position terms only for memories fewer than this many steps
                back (section 4.2 "Position Embedding"); 0 disables them.
            random_shortening: in training mode, draw ``l ~ U(0, L)`` per call and attend to
                nothing farther than ``l`` steps back (section 4.2 "Regularization").
            fixed_capacity: True: keep ``capacity()`` cache slots per layer (static shapes, no host
                read per call, for graph capture); False: trim the cache to the live memories
                after each call (faster on CPU); None: True on accelerators, False on CPU. The
                same outputs either way.
            span_lr_scale: the span predictors' learning rate as a multiple of the optimizer's
                (their own parameter group, :meth:`param_groups`).
            span_eps: the span predictors' optimizer epsilon (None: the optimizer's). Adam and
                RMSprop divide a gradient by its running RMS plus eps, so a small but consistent
                gradient (the span penalty's, before the task rewards anything) moves the spans
                at the full learning rate however small alpha is; with an eps above the
                penalty's gradient the step shrinks with the gradient, as plain gradient
                descent's would.
            penalty_trains_memories: whether the span penalty's gradient also reaches the
                memories ``h_i`` (and so every layer below the span predictor); False trains only
                the predictor's ``(w, b)`` with it (the paper: "w and b are the only new
                parameters").
            span_input_norm: predict each span from the layer's LayerNormed memory (the input
                its attention sees) instead of the raw residual stream, whose scale drifts in
                training and moves ``w . h`` with it.
            memory_budget: a target memory size (memories attended per step and layer, the
                paper's efficiency measure, ``R - 1 + mean span``) instead of a fixed ``alpha``:
                the penalty's coefficient starts near 0 (1e-9) and follows the memory used,
                multiplied after every update (:meth:`after_rollout`) by
                ``exp(budget_lr * (memory_size - memory_budget) / memory_budget)``, within
                ``[1e-10, alpha_max]``. The task learns with long spans first and the memory is
                brought under the budget after, where a fixed ``alpha`` shrinks every span
                before the first reward (docs/results/span_penalty.md). None: the fixed alpha.
            budget_lr: the step of the coefficient's log per update, relative to the budget.
            alpha_max: the largest coefficient the budget may set.
        """
        if isinstance(ramp, bool) or not isinstance(ramp, (int, float)) or not ramp > 0:
            raise ValueError(f"ramp must be a number > 0, got {ramp!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
        if not 0.0 < init_span_fraction < 1.0:
            raise ValueError(f"init_span_fraction must be in (0, 1), got {init_span_fraction!r}")
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
        if not span_lr_scale > 0:
            raise ValueError(f"span_lr_scale must be a number > 0, got {span_lr_scale!r}")
        self.span_lr_scale = float(span_lr_scale)
        if span_eps is not None and not span_eps > 0:
            raise ValueError(f"span_eps must be None or a number > 0, got {span_eps!r}")
        self.span_eps = span_eps
        self.penalty_trains_memories = bool(penalty_trains_memories)
        self.span_input_norm = bool(span_input_norm)
        if memory_budget is not None and not memory_budget > 0:
            raise ValueError(f"memory_budget must be None or a number > 0, got {memory_budget!r}")
        if not budget_lr > 0:
            raise ValueError(f"budget_lr must be a number > 0, got {budget_lr!r}")
        if not alpha_max > 0:
            raise ValueError(f"alpha_max must be a number > 0, got {alpha_max!r}")
        self.memory_budget = memory_budget
        self.budget_lr = float(budget_lr)
        self.alpha_max = float(alpha_max)
        if memory_budget is not None:
            # the budget's coefficient (its log); a buffer, so checkpoints keep it
            self.register_buffer(
                "log_alpha", torch.tensor(math.log(ALPHA_START), dtype=torch.float64)
            )
        self.ramp = float(ramp)
        self.alpha = float(alpha)
        self.span_predictors = nn.ModuleList(nn.Linear(d_model, 1) for _ in range(num_layers))
        bias = math.log(init_span_fraction / (1.0 - init_span_fraction))
        for pred in self.span_predictors:
            nn.init.normal_(pred.weight, std=0.02)
            nn.init.constant_(pred.bias, bias)

    def penalty_coef(self) -> float | Tensor:
        """The span penalty's coefficient in use: ``alpha``, or the memory budget's (a 0-d
        tensor on the memory's device, so the loss reads no host value)."""
        if self.memory_budget is None:
            return self.alpha
        return self.log_alpha.exp()

    def after_rollout(self, diagnostics: dict[str, float]) -> dict[str, float]:
        if self.memory_budget is None or "memory_size" not in diagnostics:
            return {}
        excess = (diagnostics["memory_size"] - self.memory_budget) / self.memory_budget
        low, high = math.log(ALPHA_FLOOR), math.log(self.alpha_max)
        self.log_alpha.fill_(min(max(float(self.log_alpha) + self.budget_lr * excess, low), high))
        return {"alpha": math.exp(float(self.log_alpha))}

    def param_groups(self) -> list[dict]:
        """The span predictors as a parameter group of their own (``lr_scale``, ``eps``); the
        policy puts every other parameter in its default group."""
        group = {"params": list(self.span_predictors.parameters()), "lr_scale": self.span_lr_scale}
        if self.span_eps is not None:
            group["eps"] = self.span_eps
        return [group]

    def capacity(self) -> int:
        # a memory survives a call only while its distance to the next step is < e + R <= L + R
        return math.ceil(self.max_span + self.ramp) - 1

    def spans(self, layer: int, h: Tensor) -> Tensor:
        """``e = L * sigmoid(w . h + b)`` of ``layer`` for memories ``h`` (..., d_model): (...)."""
        if self.span_input_norm:
            h = self.layers[layer].norm_att(h)
        return self.max_span * torch.sigmoid(self.span_predictors[layer](h).squeeze(-1))

    def _key_spans(self, layer: int, h: Tensor) -> Tensor:
        return self.spans(layer, h)

    def _cache_modules(self, layer: int) -> list[nn.Module]:
        return [*super()._cache_modules(layer), self.span_predictors[layer]]

    def _attention_mask(self, dist: Tensor, span: Tensor | None) -> tuple[Tensor, Tensor | None]:
        soft = expire_soft_mask(dist, span, self.ramp)
        return soft > 0, soft

    def _alive(self, next_dist: Tensor, span: Tensor | None) -> Tensor:
        # the same expression as the mask, before its clamp (m > 0 exactly when it is > 0): kept
        # while m > 0 for the next call's first step under the current parameters
        return 1.0 + (span - next_dist) / self.ramp > 0

    def _layer_aux(
        self, visible: Tensor, soft: Tensor | None, span: Tensor | None,
        *, layer: int, keys: Tensor,
    ) -> dict[str, Tensor]:
        t = visible.shape[1]
        new_spans = span[:, -t:]
        if not self.penalty_trains_memories and torch.is_grad_enabled():
            # the same spans, with the penalty's gradient reaching the span predictor only
            span = self.spans(layer, keys.detach())
        # each memory's span is charged once over its ramp: a pair (t, i) in the ramp adds
        # e_i / R, and a memory spends R steps in its ramp; so the penalty does not depend on
        # how the sequence is cut into calls
        in_ramp = (visible & (soft < 1)).sum(dim=1)  # (B, K): queries that see key i in its ramp
        return {"ramp_sum": (span * in_ramp).sum(), "new_spans": new_spans}

    def _combine_aux(self, per_layer: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        spans = torch.stack([a["new_spans"] for a in per_layer], dim=-1).detach()  # (B, T, L)
        b, t, _ = spans.shape
        penalty = torch.stack([a["ramp_sum"] for a in per_layer]).sum() / (self.ramp * t * b)
        coef = self.penalty_coef()
        if isinstance(coef, Tensor):
            coef = coef.to(penalty.dtype)
        return {
            "loss_expire_span": coef * penalty,
            "span_mean": spans.mean(),
            "spans": spans[..., -1].t(),
            **{f"span_mean_layer{i}": spans[..., i].mean() for i in range(spans.shape[-1])},
            # (T, B, num_layers): each step's span in every layer, for pictures of what is kept
            "spans_per_layer": spans.transpose(0, 1),
        }

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ramp={self.ramp}, alpha={self.alpha}"
