"""Checkpoints: save/load gives identical actions; a run killed with SIGKILL after a checkpoint
and resumed ends with the same parameters as an uninterrupted run; bad files give clear errors;
non-finite losses are skipped, then stop the run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import agents.update as update_mod
from agents import A2C, PPO, CheckpointError, NonFiniteLossError

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(n_envs=2, rollout_len=16, bptt_len=8, n_minibatches=2, n_epochs=2,
             policy_kwargs={"features_dim": 16, "hidden_dim": 16})
ENV = "MemoRL/Corridor-L10-v0"


def test_save_load_identical_actions(tmp_path):
    model = PPO("gru", ENV, tensorboard_log=None, checkpoint_path=None, seed=3, **SMALL)
    model.learn(64, progress_bar=False)
    path = model.save(tmp_path / "m.pt")
    loaded = PPO.load(path, device="cpu")
    obs = np.stack([model.env.observation_space.sample() for _ in range(1)])[0]
    state_a = state_b = None
    for step in range(6):
        torch.manual_seed(step)
        a, state_a = model.predict(obs, state_a, deterministic=False)
        torch.manual_seed(step)
        b, state_b = loaded.predict(obs, state_b, deterministic=False)
        np.testing.assert_array_equal(a, b)
    for k in state_a:
        torch.testing.assert_close(state_a[k], state_b[k])
    # a single observation gives a single action
    single, _ = loaded.predict(obs[0], deterministic=True)
    assert np.ndim(single) == 0
    for p, q in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        assert torch.equal(p, q)


SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, torch
    torch.set_num_threads(1)
    from agents import PPO
    mode, ckpt, out = sys.argv[1], sys.argv[2], sys.argv[3]
    small = dict(n_envs=2, rollout_len=16, bptt_len=8, n_minibatches=2, n_epochs=2, seed=7,
                 checkpoint_every=1, policy_kwargs={"features_dim": 16, "hidden_dim": 16})
    total = 16 * 2 * 5
    if mode == "resume":
        model = PPO.load(ckpt, device="cpu")
        model.learn(total, progress_bar=False, reset_num_timesteps=False)
    else:
        model = PPO("gru", "MemoRL/Corridor-L10-v0", tensorboard_log=os.path.dirname(ckpt),
                    checkpoint_path=ckpt, **small)

        def die(m):
            if mode == "kill" and m.n_updates == 2:
                os.kill(os.getpid(), signal.SIGKILL)

        model.learn(total, progress_bar=False, callback=die)
    torch.save({k: v for k, v in model.policy.state_dict().items()}, out)
    """
)


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )


def test_sigkill_and_resume_matches_uninterrupted_run(tmp_path):
    full = run_script("full", str(tmp_path / "full" / "ck.pt"), str(tmp_path / "full.pt"))
    assert full.returncode == 0, full.stderr
    killed = run_script("kill", str(tmp_path / "kill" / "ck.pt"), str(tmp_path / "never.pt"))
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "never.pt").exists()
    assert (tmp_path / "kill" / "ck.pt").exists()
    mid = torch.load(tmp_path / "kill" / "ck.pt", weights_only=False)
    assert mid["counters"]["n_updates"] == 2
    resumed = run_script("resume", str(tmp_path / "kill" / "ck.pt"), str(tmp_path / "res.pt"))
    assert resumed.returncode == 0, resumed.stderr
    a, b = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "res.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the interrupted run did train: its checkpoint differs from the final parameters
    assert any(not torch.equal(mid["model"][k], a[k]) for k in a)


def test_bad_checkpoints_are_refused(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="nope.pt.*does not exist"):
        PPO.load(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt.*corrupt"):
        PPO.load(garbage)
    model = PPO("gru", ENV, tensorboard_log=None, **SMALL)
    good = model.save(tmp_path / "good.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pt.*corrupt"):
        PPO.load(cut)
    with pytest.raises(CheckpointError, match="written by PPO.*PPO.load"):
        A2C.load(good)
    other = torch.load(good, weights_only=False)
    other["model"] = {"bogus": torch.zeros(1)}
    torch.save(other, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="mismatch.pt.*does not match"):
        PPO.load(tmp_path / "mismatch.pt")
    # the temp file of the atomic write is gone
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_nonfinite_updates_are_skipped_then_stop(tmp_path, monkeypatch):
    model = PPO("gru", ENV, tensorboard_log=None, checkpoint_path=tmp_path / "ck.pt",
                max_nonfinite=2, checkpoint_every=1, **SMALL)
    model.learn(32, progress_bar=False)  # one good update, one checkpoint
    good = {k: v.clone() for k, v in model.policy.state_dict().items()}
    stamp = (tmp_path / "ck.pt").stat().st_mtime_ns
    real = update_mod.make_loss_fn

    def poisoned(policy, cfg, **kw):
        fn = real(policy, cfg, **kw)

        def loss_fn(batch, out, fraction):
            loss, stats = fn(batch, out, fraction)
            return loss * float("nan"), stats

        return loss_fn

    monkeypatch.setattr(update_mod, "make_loss_fn", poisoned)
    with pytest.raises(NonFiniteLossError, match="2 updates in a row.*ck.pt"):
        model.learn(32 * 10, progress_bar=False, reset_num_timesteps=False)
    for k, v in model.policy.state_dict().items():
        assert torch.equal(v, good[k]), k
    assert (tmp_path / "ck.pt").stat().st_mtime_ns == stamp
