"""The trainer's vector envs: batched (numpy and torch) and SyncVectorEnv envs are interchangeable
(same seeds give the same rollouts, updates and parameters), the choice of kind, its errors, and
an exact resume with batched envs."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from agents import PPO
from agents.config import PPOConfig
from agents.vec import EnvStepper, make_vec_env
from envs.corridor import CorridorVectorEnv

ENV = "MemoRL/Corridor-L10-v0"
# short corridors (time limit 2 * length + 20) and rollouts of 4 x 24 steps: episodes end by the
# doors and by the time limit (truncations: the final-observation bootstrap)
KWARGS = {"min_length": 3, "max_length": 5}
SMALL = dict(n_envs=4, rollout_len=24, bptt_len=12, n_minibatches=2, n_epochs=2, seed=5,
             policy_kwargs={"features_dim": 16, "hidden_dim": 16})
TOTAL = 4 * 24 * 4


def _host(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def record_run(env: Any, **options: Any) -> tuple[list[dict[str, np.ndarray]], PPO]:
    """A short PPO run; every step's observation, episode starts, action, reward and flags, and
    the final observations of the truncated envs, as recorded around ``EnvStepper.step``."""
    kwargs = KWARGS if isinstance(env, str) else None
    model = PPO("gru", env, tensorboard_log=None, checkpoint_path=None, env_kwargs=kwargs,
                **SMALL, **options)
    stepper = model.stepper
    steps: list[dict[str, np.ndarray]] = []
    real_step = stepper.step

    def step(actions: torch.Tensor) -> Any:
        rec = {"obs": _host(stepper.obs), "starts": _host(stepper.episode_starts),
               "actions": _host(actions)}
        res = real_step(actions)
        rec.update(rewards=_host(res.rewards), terminated=_host(res.terminated),
                   truncated=_host(res.truncated), episodes=res.episodes)
        rec["final_obs"] = None if res.final_obs is None else _host(res.final_obs)
        rec["truncated_idx"] = None if res.truncated_idx is None else _host(res.truncated_idx)
        steps.append(rec)
        return res

    stepper.step = step  # type: ignore[method-assign]
    model.learn(TOTAL, progress_bar=False)
    return steps, model


def assert_same_runs(a: tuple[list, PPO], b: tuple[list, PPO]) -> None:
    steps_a, model_a = a
    steps_b, model_b = b
    assert len(steps_a) == len(steps_b) == TOTAL // SMALL["n_envs"]
    for t, (x, y) in enumerate(zip(steps_a, steps_b, strict=True)):
        for key in ("obs", "starts", "actions", "rewards", "terminated", "truncated"):
            assert x[key].dtype == y[key].dtype, (t, key)
            np.testing.assert_array_equal(x[key], y[key], err_msg=f"step {t}: {key}")
        assert x["episodes"] == y["episodes"], t
        for key in ("final_obs", "truncated_idx"):
            assert (x[key] is None) == (y[key] is None), (t, key)
            if x[key] is not None:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"step {t}: {key}")
    for (name, p), q in zip(model_a.policy.named_parameters(), model_b.policy.parameters(),
                            strict=True):
        assert torch.equal(p, q), name


@pytest.fixture(scope="module")
def sync_run() -> tuple[list, PPO]:
    return record_run(ENV, vec="sync", device="cpu")


def test_default_vec_is_batched_for_our_tasks_and_sync_otherwise() -> None:
    venv = make_vec_env(ENV, 2)
    assert isinstance(venv, CorridorVectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert venv.device is None  # numpy on a CPU training device
    assert isinstance(make_vec_env("FrozenLake-v1", 2), SyncVectorEnv)
    assert isinstance(make_vec_env(ENV, 2, vec="sync"), SyncVectorEnv)
    assert isinstance(make_vec_env(gym.make(ENV), 2), SyncVectorEnv)
    assert isinstance(PPO("none", ENV, tensorboard_log=None, n_envs=2, n_minibatches=2).env,
                      CorridorVectorEnv)


def test_batched_and_sync_runs_are_identical(sync_run) -> None:
    steps, model = record_run(ENV, vec="batched", device="cpu")
    assert isinstance(model.env, CorridorVectorEnv)
    truncations = sum(int(s["truncated"].sum()) for s in steps)
    terminations = sum(int(s["terminated"].sum()) for s in steps)
    assert truncations >= 2 and terminations >= 4  # both endings (and their bootstrap) covered
    assert_same_runs((steps, model), sync_run)


@pytest.mark.parametrize("masked", [False, True], ids=["torch-cpu", "accelerator-path"])
def test_torch_batched_env_runs_are_identical(sync_run, masked: bool) -> None:
    # A batched env on torch: observations, rewards and flags arrive as tensors and are used as
    # they are; "accelerator-path" runs the env's sync-free GPU code on the CPU (full-width
    # masked writes, every info key always present).
    venv = CorridorVectorEnv(SMALL["n_envs"], **KWARGS, device="cpu",
                             autoreset_mode=AutoresetMode.SAME_STEP)
    venv.xp.force_masked = masked
    steps, model = record_run(venv, device="cpu")
    assert model.stepper.tensor_env
    assert_same_runs((steps, model), sync_run)


def test_tensor_observations_are_not_copied_through_the_host(monkeypatch) -> None:
    venv = CorridorVectorEnv(2, 3, 6, device="cpu", autoreset_mode="SameStep")
    stepper = EnvStepper(venv, torch.device("cpu"))
    stepper.reset(seed=0)
    seen = {}
    real = venv.step

    def step(actions: Any) -> Any:
        assert isinstance(actions, torch.Tensor)  # actions are not sent through numpy
        out = real(actions)
        seen["obs"] = out[0]
        return out

    monkeypatch.setattr(venv, "step", step)
    res = stepper.step(torch.tensor([1, 3]))
    assert res.obs is seen["obs"]  # the env's own tensor, not a copy
    assert res.rewards.dtype == torch.float32 and res.terminated.dtype == torch.bool


def test_resume_with_batched_envs_is_exact(tmp_path) -> None:
    opts = dict(vec="batched", device="cpu", checkpoint_every=1)
    full = PPO("gru", ENV, tensorboard_log=None, checkpoint_path=tmp_path / "a.pt",
               env_kwargs=KWARGS, **SMALL, **opts)
    full.learn(TOTAL, progress_bar=False)
    part = PPO("gru", ENV, tensorboard_log=None, checkpoint_path=tmp_path / "b.pt",
               env_kwargs=KWARGS, **SMALL, **opts)
    part.learn(TOTAL, progress_bar=False, callback=lambda m: m.n_updates < 2)
    resumed = PPO.load(tmp_path / "b.pt", device="cpu")
    assert isinstance(resumed.env, CorridorVectorEnv) and resumed.num_timesteps == TOTAL // 2
    resumed.learn(TOTAL, progress_bar=False, reset_num_timesteps=False)
    for (name, p), q in zip(full.policy.named_parameters(), resumed.policy.parameters(),
                            strict=True):
        assert torch.equal(p, q), name
    np.testing.assert_array_equal(full.stepper.obs, resumed.stepper.obs)


def test_bad_vec_options_raise() -> None:
    with pytest.raises(ValueError, match="vec must be one of: auto, batched, sync, async, got 'x'"):
        PPOConfig(vec="x").validate()
    with pytest.raises(ValueError, match="vec must be one of"):
        make_vec_env(ENV, 2, vec="fast")
    with pytest.raises(ValueError, match="'FrozenLake-v1' has no batched implementation"):
        make_vec_env("FrozenLake-v1", 2, vec="batched")
    with pytest.raises(ValueError, match="vec='batched' needs an env id"):
        make_vec_env(gym.make(ENV), 2, vec="batched")
    with pytest.raises(ValueError, match="has no batched implementation"):
        PPO("none", "FrozenLake-v1", tensorboard_log=None, vec="batched", n_envs=2,
            n_minibatches=2)
