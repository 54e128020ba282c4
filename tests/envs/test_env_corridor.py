"""The Corridor task's rules (paper section 5.2) and its scripted policies."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs.corridor import CorridorEnv
from envs.oracles import CorridorMemoryless, CorridorOracle, make_scripted_policy

NORTH, EAST, SOUTH, WEST = range(4)


def words_in_view(env: CorridorEnv, obs: np.ndarray) -> set[str]:
    return {w for row in env.decode(obs) for cell in row for w in cell}


def agent_pos(env: CorridorEnv) -> tuple[int, int]:
    return env.draw(env.state)[1]


def ball_colour(env: CorridorEnv) -> str:
    return env.draw(env.state)[0].get(0, 2).color


def run_policy(env: gym.Env, policy, episodes: int, seed0: int = 0) -> list[dict]:
    infos = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed0 + ep)
        policy.reset()
        while True:
            obs, _, terminated, truncated, info = env.step(policy.act(obs))
            if terminated or truncated:
                infos.append(info)
                break
    return infos


def test_lengths_within_bounds_and_both_ends_drawn() -> None:
    env = CorridorEnv(min_length=3, max_length=6)
    seen = set()
    for seed in range(60):
        _, info = env.reset(seed=seed)
        assert 3 <= info["length"] <= 6
        assert env.draw(env.state)[0].width == info["length"] + 2
        assert info["max_steps"] == 2 * info["length"] + 20 == env.time_limit(env.state)
        seen.add(info["length"])
    assert seen == {3, 4, 5, 6}


def test_ball_visible_only_at_start_doors_only_at_end() -> None:
    env = CorridorEnv(min_length=5, max_length=12)
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        length = info["length"]
        for x in range(1, length + 1):
            assert agent_pos(env) == (x, 2)
            seen = words_in_view(env, obs)
            assert ("ball" in seen) == (x == 1), (seed, x)
            assert ("door" in seen) == (x >= length - 1), (seed, x)
            assert (ball_colour(env) in seen) == (x == 1 or x >= length - 1)
            if x < length:
                obs, *_ = env.step(EAST)


@pytest.mark.parametrize("match", [True, False])
def test_door_rewards_and_termination(match: bool) -> None:
    env = CorridorEnv(min_length=4, max_length=4)
    obs, info = env.reset(seed=5)
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(EAST)
        assert (reward, terminated, truncated) == (0.0, False, False)
    east = env.step(EAST)  # the corridor's east end is a wall: the agent stays
    assert agent_pos(env) == (4, 2) and east[1] == 0.0 and not east[2]
    north_colour = env.draw(env.state)[0].get(4, 1).color
    go_north = (north_colour == ball_colour(env)) == match
    _, reward, terminated, truncated, info = env.step(NORTH if go_north else SOUTH)
    assert terminated and not truncated
    assert reward == (1.0 if match else 0.0)
    assert info["success"] is match and info["length"] == 4


def test_walls_and_ball_block() -> None:
    env = CorridorEnv(min_length=5, max_length=5)
    env.reset(seed=0)
    for action in (WEST, NORTH, SOUTH):
        _, reward, terminated, _, _ = env.step(action)
        assert agent_pos(env) == (1, 2) and reward == 0.0 and not terminated


def test_truncation_at_time_limit() -> None:
    env = CorridorEnv(min_length=10, max_length=10)
    env.reset(seed=0)
    for t in range(1, 2 * 10 + 20 + 1):
        _, _, terminated, truncated, info = env.step(WEST)
        assert not terminated
        assert truncated == (t == 40)
    assert info == {"success": False, "is_success": False, "length": 10}


def test_oracle_always_succeeds() -> None:
    env = gym.make("MemoRL/Corridor-v0")
    infos = run_policy(env, make_scripted_policy(env, memory=True), episodes=40)
    assert all(i["success"] for i in infos)
    env = gym.make("MemoRL/Corridor-Short-v0")
    assert all(i["success"] for i in run_policy(env, CorridorOracle(env.unwrapped.vocab), 100))


def test_memoryless_is_at_chance() -> None:
    env = gym.make("MemoRL/Corridor-Short-v0")
    infos = run_policy(env, CorridorMemoryless(env.unwrapped.vocab), episodes=400)
    rate = np.mean([i["success"] for i in infos])
    # binomial(400, 0.5): standard deviation 0.025; the band is about 3 of them
    assert 0.42 <= rate <= 0.58, rate


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"min_length": 2}, "min_length"),
        ({"min_length": 0}, "min_length"),
        ({"min_length": 3.5}, "min_length"),
        ({"min_length": 10, "max_length": 9}, "max_length"),
        ({"max_length": 20_000}, "max_length"),
        ({"tile_size": 0}, "tile_size"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CorridorEnv(**kwargs)
