"""Evaluation counts each env's first episodes, not the first episodes to end."""

from __future__ import annotations

import numpy as np
import pytest

from agents import PPO
from agents.evaluation import evaluate, success_rate


@pytest.fixture(scope="module")
def model():
    return PPO("gru", "MemoRL/Corridor-v0", n_envs=2, n_minibatches=2, tensorboard_log=None, seed=0)


def test_each_env_contributes_its_first_episodes(model):
    """Three envs playing two episodes each give, env by env, what each env gives alone: the
    result does not depend on which episodes happen to end first (long corridors end late)."""
    together = evaluate(model, "MemoRL/Corridor-v0", 6, n_envs=3, seed=100)
    alone = [evaluate(model, "MemoRL/Corridor-v0", 2, n_envs=1, seed=100 + i) for i in range(3)]
    for key in ("success", "return", "length"):
        np.testing.assert_array_equal(together[key], np.concatenate([a[key] for a in alone]))
    assert len(set(together["length"])) > 1  # episodes of different lengths were compared


def test_episodes_are_split_over_the_envs(model):
    out = evaluate(model, "MemoRL/Corridor-v0", 5, n_envs=2, seed=7, env_kwargs={"max_length": 5})
    assert out["success"].shape == out["length"].shape == (5,)
    assert success_rate(model, "MemoRL/Corridor-v0", 5, n_envs=2, seed=7,
                        env_kwargs={"max_length": 5}) == out["success"].mean()
    # more envs than episodes: one episode from each of the first 3 envs
    assert evaluate(model, "MemoRL/Corridor-v0", 3, n_envs=8, seed=7)["length"].shape == (3,)


@pytest.mark.parametrize("kwargs, message", [
    ({"episodes": 0}, "episodes must be an integer >= 1, got 0"),
    ({"n_envs": 0}, "n_envs must be an integer >= 1, got 0"),
])
def test_bad_counts_are_refused(model, kwargs, message):
    args = {"episodes": 4, "n_envs": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        evaluate(model, "MemoRL/Corridor-v0", args["episodes"], n_envs=args["n_envs"])
