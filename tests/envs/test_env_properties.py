"""Property tests: random seeds and action sequences keep every task's invariants."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs import registered_ids
from envs.task import object_words

# The full-size Portal and Instruction maps are as quick as the short ones; all ids are covered.
IDS = registered_ids()


def map_words(env) -> set[str]:
    """The words that objects on the map can have (walls, doors, balls, colours, characters)."""
    return {w for w in env.vocab if ":" not in w and w != "agent"}


def naive_obs(env) -> np.ndarray:
    """The observation's map cells built from scratch from the drawn minigrid map, cell by cell
    (the words of each object), and the agent in the centre."""
    obs = np.zeros(env.observation_space.shape, np.uint8)
    grid, (x, y) = env.draw(env.state)
    for row in range(3):
        for col in range(3):
            obj = grid.get(x + col - 1, y + row - 1)
            for w in object_words(obj) if obj is not None else []:
                obs[row, col, env.word_index[w]] = 1
    obs[1, 1, env.word_index["agent"]] = 1
    return obs


@pytest.mark.parametrize("env_id", IDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), actions=st.lists(st.integers(0, 11), max_size=150))
def test_random_play_keeps_invariants(env_id: str, seed: int, actions: list[int]) -> None:
    env = gym.make(env_id, disable_env_checker=True).unwrapped
    n = env.action_space.n
    low, high = env.reward_range
    obs, _ = env.reset(seed=seed)
    for a in actions:
        assert obs.shape == env.observation_space.shape and obs.dtype == np.uint8
        assert set(np.unique(obs)) <= {0, 1}
        naive = naive_obs(env)
        # the map's words as drawn; the centre adds only words no object has (heard, a room)
        heard = obs[1, 1] & ~naive[1, 1]
        naive[1, 1] |= heard
        assert np.array_equal(obs, naive)
        assert not any(heard[env.word_index[w]] for w in map_words(env)), env.decode(obs)[1][1]
        grid, pos = env.draw(env.state)
        assert grid.get(*pos) is None, (pos, grid.get(*pos))  # the agent stands on the floor
        obs, reward, terminated, truncated, info = env.step(a % n)
        assert low - 1e-9 <= reward <= high + 1e-9
        assert not (terminated and truncated)
        if terminated or truncated:
            assert isinstance(info["success"], bool)
            obs, _ = env.reset()
