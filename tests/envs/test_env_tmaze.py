"""The Passive T-Maze's rules (Ni et al. 2023) and its scripted policies."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs.oracles import TMazeMemoryless, TMazeOracle
from envs.tmaze import TMazeEnv, TMazeVectorEnv

NORTH, EAST, SOUTH, WEST = range(4)


def cue(env: TMazeEnv, obs: np.ndarray) -> str | None:
    return next((w for w in env.decode(obs)[1][1] if w.startswith("cue:")), None)


def walls(env: TMazeEnv, obs: np.ndarray) -> list[list[bool]]:
    return [["wall" in cell for cell in row] for row in env.decode(obs)]


def run(env: gym.Env, policy, episodes: int) -> list[dict]:
    infos = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        policy.reset()
        while True:
            obs, _, terminated, truncated, info = env.step(policy.act(obs))
            if terminated or truncated:
                infos.append(info)
                break
    return infos


@pytest.mark.parametrize("length", [1, 2, 5])
def test_cue_only_first_then_the_corridor_then_the_junction(length: int) -> None:
    env = TMazeEnv(length=length)
    cues = set()
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        cues.add(cue(env, obs))
        assert walls(env, obs)[1][0]  # the west wall at the start
        for x in range(1, length + 1):
            obs, reward, terminated, truncated, _ = env.step(EAST)
            assert cue(env, obs) is None and reward == 0.0 and not (terminated or truncated)
            if x < length:  # in the corridor: walls north and south
                assert walls(env, obs)[0][1] and walls(env, obs)[2][1]
        # at the junction: open north and south, a wall east
        assert walls(env, obs) == [[True, False, True], [False, False, True], [True, False, True]]
    assert cues == {"cue:north", "cue:south"}


@pytest.mark.parametrize("right", [True, False])
def test_the_turn_the_cue_named_pays_one_at_step_length_plus_one(right: bool) -> None:
    env = TMazeEnv(length=4)
    obs, _ = env.reset(seed=3)
    north = cue(env, obs) == "cue:north"
    for _ in range(4):
        env.step(EAST)
    _, reward, terminated, truncated, info = env.step(NORTH if north == right else SOUTH)
    assert terminated and not truncated and env.state.t == 5
    assert reward == (1.0 if right else 0.0) and info["success"] is right


def test_steps_behind_schedule_cost_one_over_length_and_time_runs_out() -> None:
    env = TMazeEnv(length=10)
    env.reset(seed=0)
    rewards = []
    for t in range(1, 12):  # walking into the west wall: behind schedule from the first step
        _, reward, terminated, truncated, info = env.step(WEST)
        rewards.append(reward)
        assert not terminated and truncated == (t == 11)
    # every step but the last costs 1 / length (Ni et al.'s penalty, at most -1 in all)
    np.testing.assert_allclose(rewards, [-0.1] * 10 + [0.0])
    assert info["success"] is False
    env = TMazeEnv(length=10, penalty=0.0)
    env.reset(seed=0)
    assert all(env.step(WEST)[1] == 0.0 for _ in range(11))
    env = TMazeEnv(length=10)
    env.reset(seed=0)
    assert [env.step(EAST)[1] for _ in range(10)] == [0.0] * 10  # on schedule: no penalty


def test_oracle_always_succeeds_at_every_registered_length() -> None:
    for env_id in ("MemoRL/TMaze-L10-v0", "MemoRL/TMaze-L1500-v0", "MemoRL/TMaze-L3000-v0"):
        env = gym.make(env_id)
        infos = run(env, TMazeOracle(env.unwrapped.vocab), episodes=6)
        assert all(i["success"] for i in infos), env_id


def test_memoryless_is_at_chance() -> None:
    env = gym.make("MemoRL/TMaze-L10-v0")
    infos = run(env, TMazeMemoryless(env.unwrapped.vocab), episodes=400)
    rate = np.mean([i["success"] for i in infos])
    assert 0.42 <= rate <= 0.58, rate  # binomial(400, 0.5): about 3 standard deviations


def test_batched_oracle_at_length_1500() -> None:
    # all envs walk east 1500 steps in lockstep and turn by their cue: every one succeeds
    vec = TMazeVectorEnv(64, length=1500)
    obs, _ = vec.reset(seed=0)
    north = obs[:, 1, 1, vec.task.word_index["cue:north"]] == 1
    for _ in range(1500):
        obs, reward, terminated, truncated, _ = vec.step(np.full(64, EAST))
        assert not (terminated | truncated).any()
    _, reward, terminated, _, info = vec.step(np.where(north, NORTH, SOUTH))
    assert terminated.all() and (reward == 1.0).all() and info["success"].all()
    assert 10 <= north.sum() <= 54


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"length": 0}, r"length must be in \[1, 100000\], got 0"),
        ({"length": 2.5}, r"length must be an integer \[1, 100000\], got 2.5"),
        ({"penalty": -0.1}, r"penalty must be in \[0.0, 1.0\], got -0.1"),
        ({"penalty": "some"}, r"penalty must be a number in \[0.0, 1.0\], got 'some'"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TMazeEnv(**kwargs)
