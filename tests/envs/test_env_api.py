"""API checks every registered task must pass; parametrised over the registration table."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs import ENV_TABLE, SHORT_NAMES, register_envs, registered_ids, resolve_env_id
from envs.task import decode_obs

IDS = registered_ids()
ROOT = Path(__file__).resolve().parents[2]


def rollout(env: gym.Env, seed: int, actions: list[int]) -> list[tuple]:
    """Observations, rewards and flags of ``actions`` from ``reset(seed)``, resetting at the end."""
    obs, info = env.reset(seed=seed)
    out = [(obs.copy(), 0.0, False, False, sorted(info.items()))]
    for a in actions:
        obs, r, te, tr, info = env.step(a)
        out.append((obs.copy(), r, te, tr, sorted(info.items())))
        if te or tr:
            obs, info = env.reset()
            out.append((obs.copy(), 0.0, False, False, sorted(info.items())))
    return out


def same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_check_env(env_id: str) -> None:
    gym_check_env(gym.make(env_id).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", IDS)
def test_sb3_check_env(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no other warning: the spaces suit SB3
        # SB3 takes any 3-d uint8 Box for a possible image; ours is a (3, 3, V) word grid that
        # the project's encoders (and SB3's flattening extractor) read as binary features.
        warnings.filterwarnings("ignore", message=".*is an image but the upper and lower bounds")
        warnings.filterwarnings("ignore", message="The minimal resolution for an image")
        sb3_check_env(gym.make(env_id).unwrapped)


@pytest.mark.parametrize("env_id", IDS)
def test_spaces_and_vocab(env_id: str) -> None:
    env = gym.make(env_id)
    u = env.unwrapped
    v = len(u.vocab)
    assert env.observation_space == gym.spaces.Box(0, 1, (3, 3, v), np.uint8)
    assert isinstance(env.action_space, gym.spaces.Discrete) and env.action_space.n >= 4
    assert len(set(u.vocab)) == v and {"agent", "wall"} <= set(u.vocab)
    obs, _ = env.reset(seed=0)
    cells = u.decode(obs)
    assert "agent" in cells[1][1]
    # decode is the inverse of the word bags: re-encoding the words gives the observation back
    again = np.zeros_like(obs)
    for r in range(3):
        for c in range(3):
            for w in cells[r][c]:
                again[r, c, u.word_index[w]] = 1
    assert np.array_equal(again, obs)
    assert decode_obs(obs, u.vocab) == cells


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_actions_same_trajectory(env_id: str) -> None:
    env = gym.make(env_id)
    actions = np.random.default_rng(0).integers(env.action_space.n, size=300).tolist()
    first = rollout(env, 7, actions)
    again = rollout(gym.make(env_id), 7, actions)
    assert same(first, again)


@pytest.mark.parametrize("env_id", IDS)
def test_different_seeds_different_layouts(env_id: str) -> None:
    env = gym.make(env_id)
    layouts = set()
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        grid, _ = env.unwrapped.draw(env.unwrapped.state)
        layouts.add((obs.tobytes(), grid.encode().tobytes()))
    assert len(layouts) >= 2


@pytest.mark.parametrize("env_id", IDS)
def test_episode_end_reports_success_and_the_tasks_measures(env_id: str) -> None:
    env = gym.make(env_id)
    u = env.unwrapped
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    while True:
        _, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        if terminated or truncated:
            break
        assert "success" not in info and set(info) == set(u.step_info)
    assert isinstance(info["success"], bool) and info["is_success"] == info["success"]
    assert set(info) == {*u.step_info, *u.metrics, "success", "is_success"}
    for key in u.metrics:  # numbers a logger can average
        assert isinstance(info[key], (int, np.integer)) and not isinstance(info[key], bool), key


@pytest.mark.parametrize("env_id", IDS)
def test_pickle_round_trip_continues_identically(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    env.reset(seed=3)
    actions = np.random.default_rng(1).integers(env.action_space.n, size=60).tolist()
    for a in actions[:20]:
        env.step(a)
    clone = pickle.loads(pickle.dumps(env))
    assert np.array_equal(clone.observe(clone.state), env.observe(env.state))
    for a in actions[20:]:
        x, y = env.step(a), clone.step(a)
        assert np.array_equal(x[0], y[0]) and x[1:] == y[1:]
        if x[2] or x[3]:
            break


@pytest.mark.parametrize("env_id", IDS)
def test_spec_to_json(env_id: str) -> None:
    spec = gym.make(env_id).spec
    loaded = json.loads(spec.to_json())
    assert loaded["id"] == env_id
    assert gym.spec(env_id).kwargs == next(e.kwargs for e in ENV_TABLE if e.id == env_id)


@pytest.mark.parametrize("env_id", IDS)
def test_rgb_array_frame(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array", tile_size=8)
    env.reset(seed=0)
    env.step(1)
    frame = env.render()
    u = env.unwrapped
    grid, (x, y) = u.draw(u.state)
    assert frame.dtype == np.uint8
    assert frame.shape == (grid.height * 8, grid.width * 8, 3)
    # the agent's 3x3 view is highlighted: brighter than the same cells drawn plainly
    plain = grid.render(8, (x, y), 0, highlight_mask=None)
    view = (slice((y - 1) * 8, (y + 2) * 8), slice((x - 1) * 8, (x + 2) * 8))
    assert frame[view].astype(int).sum() > plain[view].astype(int).sum()


@pytest.mark.parametrize("env_id", IDS)
def test_invalid_actions_raise(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    n = env.action_space.n
    for bad in (n, -1, 1.5, "north", None, True):
        with pytest.raises(ValueError, match="action"):
            env.step(bad)
    env.step(np.int64(1))  # numpy integers are fine
    env.step(np.array(0))


def test_step_before_reset_raises() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        gym.make("MemoRL/Corridor-L10-v0").unwrapped.step(0)


def test_bad_render_mode_raises() -> None:
    from envs.corridor import CorridorEnv

    with pytest.raises(ValueError, match="render_mode"):
        CorridorEnv(render_mode="ascii")


def test_resolve_env_id() -> None:
    for short, env_id in SHORT_NAMES.items():
        assert resolve_env_id(short) == env_id
        assert env_id in IDS
    assert resolve_env_id("MemoRL/Portal-R5-v0") == "MemoRL/Portal-R5-v0"
    assert resolve_env_id("CartPole-v1") == "CartPole-v1"  # any registered gymnasium id
    with pytest.raises(ValueError, match="corridor"):
        resolve_env_id("corridoor")


def test_registration_is_idempotent() -> None:
    before = {i: gym.spec(i) for i in IDS}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_envs()
        import importlib

        importlib.reload(envs)
    assert {i: gym.spec(i) for i in IDS} == before


def test_table_lists_every_memorl_id() -> None:
    memorl = {i for i in gym.registry if i.startswith("MemoRL/")}
    assert memorl == set(IDS)
    assert all(e.vector_entry_point is None or ":" in e.vector_entry_point for e in ENV_TABLE)


def test_make_with_module_prefix_in_fresh_interpreter() -> None:
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('envs:MemoRL/Corridor-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "print(obs.shape)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(3, 3, 6)"


def test_the_single_env_runs_without_the_batched_machinery() -> None:
    # the rules' single env (envs.task) and the tasks' rules need neither the vector env nor torch
    code = (
        "import sys, gymnasium as gym\n"
        "import envs.task\n"
        "assert 'envs.vector' not in sys.modules, 'envs.task imports the vector env'\n"
        "env = gym.make('MemoRL/TMaze-L10-v0')\n"
        "env.reset(seed=0)\n"
        "print(sorted(m for m in ('torch', 'envs.vector') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['envs.vector']"  # (the task module names its vector env)


def test_sync_vector_env() -> None:
    vec = gym.make_vec("MemoRL/Corridor-L10-v0", num_envs=3, vectorization_mode="sync")
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3, 3, 3, 6)
    for _ in range(15):
        obs, rew, te, tr, info = vec.step(vec.action_space.sample())
    assert obs.shape == (3, 3, 3, 6) and rew.shape == (3,)
