"""The span penalty's options: its parameter group, where its gradient goes, the predictor's input
and the memory budget that adapts its coefficient."""

from __future__ import annotations

import math

import pytest
import torch

from policies.memory import make_memory
from policies.memory.expire_span import ALPHA_FLOOR, ALPHA_START

D_IN = 5
# a short span and ramp so that memories enter the ramp within the checked window
SMALL = {"max_span": 6, "ramp": 3.0, "num_layers": 2, "d_model": 16, "num_heads": 2, "d_ff": 32}


def _run(mem, t_len=20, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t_len, batch, D_IN, generator=g)
    starts = torch.zeros(t_len, batch, dtype=torch.bool)
    starts[0] = True
    return mem(x, mem.initial_state(batch), starts)


def _pair(build_memory, **options):
    """The same parameters with and without ``options``."""
    base = build_memory("expire_span", D_IN, alpha=1e-2, **SMALL)
    other = build_memory("expire_span", D_IN, alpha=1e-2, **SMALL, **options)
    other.load_state_dict(base.state_dict(), strict=False)
    return base, other


def test_param_groups_split_the_span_predictors_with_their_options(build_memory):
    mem = build_memory("expire_span", D_IN, span_lr_scale=0.1, span_eps=1e-3, **SMALL)
    (spans,) = mem.param_groups()
    assert {id(p) for p in spans["params"]} == {id(p) for p in mem.span_predictors.parameters()}
    assert spans["lr_scale"] == 0.1 and spans["eps"] == 1e-3


def test_penalty_limited_to_the_predictor_has_the_same_value_and_no_other_gradient(build_memory):
    base, limited = _pair(build_memory, penalty_trains_memories=False)
    _, _, aux_b = _run(base)
    y, _, aux_l = _run(limited)
    assert aux_b["loss_expire_span"] > 0  # memories reached the ramp
    torch.testing.assert_close(aux_l["loss_expire_span"], aux_b["loss_expire_span"])
    torch.testing.assert_close(y, _run(base)[0])
    aux_l["loss_expire_span"].backward()
    preds = {id(p) for p in limited.span_predictors.parameters()}
    for p in limited.parameters():
        if id(p) in preds:
            assert p.grad is not None and p.grad.abs().sum() > 0
        else:
            assert p.grad is None or p.grad.abs().sum() == 0
    # the paper's default sends the penalty into the layers below the predictor as well
    aux_b["loss_expire_span"].backward()
    assert base.proj.weight.grad.abs().sum() > 0


def test_span_input_norm_predicts_from_the_layernormed_memory(build_memory):
    mem = build_memory("expire_span", D_IN, span_input_norm=True, **SMALL)
    h = torch.randn(4, 7, SMALL["d_model"])
    pred, norm = mem.span_predictors[1], mem.layers[1].norm_att
    expected = SMALL["max_span"] * torch.sigmoid(pred(norm(h)).squeeze(-1))
    torch.testing.assert_close(mem.spans(1, h), expected)
    # the residual stream's scale no longer moves the spans
    torch.testing.assert_close(mem.spans(1, h * 3.0), mem.spans(1, h), rtol=1e-4, atol=1e-4)
    raw = build_memory("expire_span", D_IN, **SMALL)
    assert not torch.allclose(raw.spans(1, h * 3.0), raw.spans(1, h), rtol=1e-4, atol=1e-4)


def test_memory_budget_moves_the_coefficient_within_its_bounds(build_memory):
    mem = build_memory("expire_span", D_IN, memory_budget=10.0, budget_lr=0.5, alpha_max=1e-4,
                       **SMALL)
    assert float(mem.penalty_coef()) == pytest.approx(ALPHA_START)
    out = mem.after_rollout({"memory_size": 20.0})  # 100% over budget: log step +0.5
    assert out["alpha"] == pytest.approx(ALPHA_START * math.exp(0.5), rel=1e-5)
    mem.after_rollout({"memory_size": 5.0})  # 50% under: -0.25
    assert float(mem.penalty_coef()) == pytest.approx(ALPHA_START * math.exp(0.25), rel=1e-5)
    for _ in range(200):
        mem.after_rollout({"memory_size": 1000.0})
    assert float(mem.penalty_coef()) == pytest.approx(1e-4, rel=1e-5)
    for _ in range(2000):
        mem.after_rollout({"memory_size": 0.0})
    assert float(mem.penalty_coef()) == pytest.approx(ALPHA_FLOOR, rel=1e-5)
    assert mem.after_rollout({"span_mean": 3.0}) == {}  # no memory size: nothing to adapt


def test_memory_budget_penalty_equals_the_fixed_alpha_of_its_coefficient(build_memory):
    budget = build_memory("expire_span", D_IN, memory_budget=10.0, **SMALL)
    for _ in range(30):
        budget.after_rollout({"memory_size": 40.0})
    coef = float(budget.penalty_coef())
    fixed = build_memory("expire_span", D_IN, alpha=coef, **SMALL)
    fixed.load_state_dict(budget.state_dict(), strict=False)
    torch.testing.assert_close(_run(budget)[2]["loss_expire_span"],
                               _run(fixed)[2]["loss_expire_span"])
    # the coefficient is a buffer: a checkpoint carries it
    again = build_memory("expire_span", D_IN, memory_budget=10.0, **SMALL)
    again.load_state_dict(budget.state_dict())
    assert float(again.penalty_coef()) == pytest.approx(coef)


def test_fixed_alpha_has_no_budget_state(build_memory):
    mem = build_memory("expire_span", D_IN, **SMALL)
    assert "log_alpha" not in mem.state_dict()
    assert mem.after_rollout({"memory_size": 100.0}) == {}


@pytest.mark.parametrize("kwargs", [
    {"span_lr_scale": 0.0}, {"span_eps": -1.0}, {"memory_budget": 0.0}, {"budget_lr": 0.0},
    {"alpha_max": -1.0},
])
def test_bad_options_are_refused_by_name(kwargs):
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=f"{name} must be"):
        make_memory("expire_span", D_IN, **kwargs)
