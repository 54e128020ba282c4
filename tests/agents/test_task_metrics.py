"""The tasks' own measures (rooms reached, instructions executed): read from the envs' last infos
by the stepper for every kind of vector env, logged under ``charts/`` in training, and reported
by ``evaluate``, each against a loop over the single env."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import PPO
from agents.evaluation import evaluate, summarize
from agents.logger import episode_scalars
from agents.vec import EnvStepper, make_vec_env, task_metrics
from envs.oracles import PortalMemoryless

PORTAL = "MemoRL/Portal-R5-v0"
INSTRUCTION = "MemoRL/Instruction-Short-v0"


def single_env_episodes(env_id: str, seed: int, actions: np.ndarray,
                        names: tuple[str, ...]) -> list[tuple[int, dict[str, float]]]:
    """(step, measures) of every episode that env ``seed`` ends when it takes ``actions`` one
    after the other (a new episode after each end), by hand with the single env."""
    env = gym.make(env_id)
    env.reset(seed=seed)
    ended = []
    for t, a in enumerate(actions):
        _, _, term, trunc, info = env.step(int(a))
        if term or trunc:
            ended.append((t, {name: float(info[name]) for name in names}))
            env.reset()
    return ended


@pytest.mark.parametrize("env_id, names", [
    (PORTAL, ("rooms_reached",)),
    (INSTRUCTION, ("instructions_given", "instructions_done", "instructions_failed")),
])
@pytest.mark.parametrize("kind", ["sync", "batched", "torch"])
def test_stepper_reports_the_measures_of_the_single_env(env_id, names, kind) -> None:
    n, steps = 3, 500
    if kind == "torch":  # a batched env on torch: the measures come in the one packed host read
        venv = gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point",
                            autoreset_mode=AutoresetMode.SAME_STEP, device="cpu")
    else:
        venv = make_vec_env(env_id, n, vec=kind)
    assert task_metrics(venv) == names
    stepper = EnvStepper(venv, torch.device("cpu"))
    assert stepper.tensor_env == (kind == "torch")
    stepper.reset(seed=40)
    actions = np.random.default_rng(0).integers(0, venv.single_action_space.n, (steps, n))
    got: list[list[tuple[int, dict[str, float]]]] = [[] for _ in range(n)]
    for t in range(steps):
        for ep in stepper.step(torch.as_tensor(actions[t])).episodes:
            got[ep["env"]].append((t, ep["metrics"]))
    venv.close()
    for i in range(n):
        want = single_env_episodes(env_id, 40 + i, actions[:, i], names)
        assert got[i] == want, f"env {i}"
    assert sum(len(g) for g in got) >= 6  # several episodes were compared


def test_envs_without_measures_report_none() -> None:
    venv = make_vec_env("CartPole-v1", 2)
    assert task_metrics(venv) == ()
    stepper = EnvStepper(venv, torch.device("cpu"))
    stepper.reset(seed=0)
    episodes = [ep for _ in range(100) for ep in stepper.step(torch.tensor([0, 1])).episodes]
    assert episodes and not any("metrics" in ep for ep in episodes)
    assert set(episode_scalars(episodes)) == {"charts/episodic_return", "charts/episode_length",
                                              "charts/episodes"}
    import minigrid  # noqa: F401  (registers the MiniGrid ids)

    grid = SyncVectorEnv([lambda: gym.make("MiniGrid-Empty-5x5-v0")],
                         autoreset_mode=AutoresetMode.SAME_STEP)
    assert task_metrics(grid) == ()


def test_episode_scalars_average_each_measure_over_the_episodes_reporting_it() -> None:
    episodes = [
        {"return": 1.0, "length": 4.0, "env": 0, "success": 1.0, "metrics": {"a": 2.0, "b": 1.0}},
        {"return": 0.0, "length": 6.0, "env": 1, "success": 0.0, "metrics": {"a": 4.0}},
        {"return": 0.5, "length": 5.0, "env": 1},
    ]
    out = episode_scalars(episodes)
    assert out["charts/a"] == 3.0 and out["charts/b"] == 1.0
    assert out["charts/episode_length"] == 5.0  # (a measure named "length" would not replace it)


@pytest.mark.parametrize("vec", ["sync", "batched"])
def test_measures_are_logged_under_charts(tmp_path, vec) -> None:
    # 4 envs x 8 rollouts of 32 steps: every env ends an episode (the time limit is 200 steps)
    model = PPO("none", PORTAL, tensorboard_log=tmp_path, seed=1, vec=vec, n_envs=4,
                rollout_len=32, bptt_len=16, n_minibatches=2, n_epochs=1,
                policy_kwargs={"features_dim": 16})
    model.learn(8 * 4 * 32, progress_bar=False)
    acc = EventAccumulator(str(model.log_dir))
    acc.Reload()
    events = acc.Scalars("charts/rooms_reached")
    ended = acc.Scalars("charts/episodes")
    assert [e.step for e in events] == [e.step for e in ended] and len(events) >= 1
    assert all(0.0 <= e.value <= 5.0 for e in events)


class ScriptedPolicy:
    """The Portal's memoryless scripted policy, one per env (each with its own random moves,
    seeded by the env's index), behind the acting interface ``evaluate`` uses."""

    def __init__(self, vocab: list[str]) -> None:
        self.vocab = vocab

    def eval(self) -> ScriptedPolicy:
        return self

    def initial_state(self, n: int, device: Any = None) -> list[PortalMemoryless]:
        return [PortalMemoryless(self.vocab, seed=i) for i in range(n)]

    def act(self, obs: torch.Tensor, state: list[PortalMemoryless], starts: torch.Tensor,
            deterministic: bool = True) -> SimpleNamespace:
        actions = []
        for i, policy in enumerate(state):
            if starts[i]:
                policy.reset()
            actions.append(policy.act(obs[i].numpy()))
        return SimpleNamespace(actions=torch.tensor(actions), state=state, aux={})

    def to_env_actions(self, actions: torch.Tensor) -> torch.Tensor:
        return actions


def test_evaluate_reports_rooms_reached_as_a_hand_loop_over_the_single_env() -> None:
    env = gym.make(PORTAL)
    vocab = env.unwrapped.vocab
    model = SimpleNamespace(device=torch.device("cpu"), observation_space=env.observation_space,
                            action_space=env.action_space, env_id=PORTAL,
                            policy=ScriptedPolicy(vocab))
    n_envs, quota, seed = 3, 4, 500
    out = evaluate(model, PORTAL, n_envs * quota, n_envs=n_envs, seed=seed)
    # by hand: env i seeded seed + i plays its first `quota` episodes with its own policy
    rooms, success = [], []
    for i in range(n_envs):
        policy = PortalMemoryless(vocab, seed=i)
        obs, _ = env.reset(seed=seed + i)
        for _ in range(quota):
            policy.reset()
            done = False
            while not done:
                obs, _, term, trunc, info = env.step(policy.act(obs))
                done = term or trunc
            rooms.append(info["rooms_reached"])
            success.append(float(info["success"]))
            obs, _ = env.reset()
    assert set(out["metrics"]) == {"rooms_reached"}
    np.testing.assert_array_equal(out["metrics"]["rooms_reached"], rooms)
    np.testing.assert_array_equal(out["success"], success)
    assert len(set(rooms)) > 1  # episodes with different outcomes were compared
    means = summarize(out)
    assert means["metrics"]["rooms_reached"] == pytest.approx(np.mean(rooms))
    assert means["memory_size"] is None and means["episodes"] == n_envs * quota


def test_evaluate_reports_measures_acting_deterministically_and_by_sampling() -> None:
    model = PPO("gru", INSTRUCTION, tensorboard_log=None, n_envs=2, n_minibatches=2,
                policy_kwargs={"features_dim": 16, "hidden_dim": 16})
    names = {"instructions_given", "instructions_done", "instructions_failed"}
    for deterministic in (True, False):
        out = evaluate(model, INSTRUCTION, 4, n_envs=2, deterministic=deterministic)
        assert set(out["metrics"]) == names
        assert all(v.shape == (4,) and np.isfinite(v).all() for v in out["metrics"].values())
    corridor = evaluate(PPO("none", "MemoRL/Corridor-L10-v0", tensorboard_log=None, n_envs=2,
                            n_minibatches=2), "MemoRL/Corridor-L10-v0", 2, n_envs=2)
    np.testing.assert_array_equal(corridor["metrics"]["length"], [10, 10])  # the corridor's own


def test_evaluate_agent_prints_the_measures(script, tmp_path, capsys) -> None:
    model = PPO("none", PORTAL, tensorboard_log=None, n_envs=2, n_minibatches=2,
                policy_kwargs={"features_dim": 16})
    model.save(tmp_path / "portal.pt")
    for flags in ([], ["--stochastic"]):
        code = script("evaluate_agent").main([str(tmp_path / "portal.pt"), "--episodes", "6",
                                              "--n-envs", "3", "--seed", "7", *flags])
        assert code == 0
        line = capsys.readouterr().out.splitlines()[1]
        assert line.startswith("task measures (mean over the episodes): rooms_reached ")
        if not flags:  # deterministic: the same as evaluate() with those seeds
            want = evaluate(model, PORTAL, 6, n_envs=3, seed=7)["metrics"]["rooms_reached"]
            assert line.endswith(f"rooms_reached {want.mean():.3f}")
