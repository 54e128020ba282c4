"""The trainer's side of the memories' own coefficients: parameter groups at their own learning
rate (annealed with the rest) and the coefficients a memory adapts after every update."""

from __future__ import annotations

import math

import pytest

from agents import PPO
from policies.memory.expire_span import ALPHA_START

SMALL = {"n_envs": 4, "rollout_len": 16, "bptt_len": 16, "n_minibatches": 2, "n_epochs": 1}


def test_span_group_learning_rate_follows_the_schedule_at_its_multiple():
    model = PPO("expire_span", "MemoRL/Corridor-L10-v0", tensorboard_log=None, seed=0,
                policy_kwargs={"span_lr_scale": 0.25, "span_eps": 1e-3}, **SMALL)
    rest, spans = model.optimizer.param_groups  # every other parameter, the span predictors
    assert spans["eps"] == 1e-3 and rest["eps"] == 1e-5
    assert len(rest["params"]) + len(spans["params"]) == len(list(model.policy.parameters()))
    span_ids = {id(p) for p in model.policy.memory.span_predictors.parameters()}
    assert {id(p) for p in spans["params"]} == span_ids
    model.learn(3 * 4 * 16, progress_bar=False)  # the rate decays over these steps
    assert rest["lr"] < model.config.lr
    assert spans["lr"] == pytest.approx(0.25 * rest["lr"])


def test_memory_budget_coefficient_is_adapted_and_logged_every_update():
    model = PPO("expire_span", "MemoRL/Corridor-L10-v0", tensorboard_log=None, seed=0,
                policy_kwargs={"memory_budget": 1.0, "budget_lr": 0.1}, **SMALL)
    seen = []
    model.learn(3 * 4 * 16, progress_bar=False,
                callback=lambda m: seen.append(m.last_stats["memory/alpha"]))
    assert len(seen) == 3
    # the memory used is far above a budget of 1: the coefficient grows every update, by the
    # step the rollout's memory size gives
    assert ALPHA_START < seen[0] < seen[1] < seen[2]
    assert float(model.policy.memory.log_alpha) == pytest.approx(math.log(seen[-1]))
