"""TensorBoard logs hold the documented tags; progress lines appear when not on a terminal; env
arguments are checked."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import PPO
from agents.vec import make_vec_env

SMALL = dict(n_envs=2, rollout_len=32, bptt_len=16, n_minibatches=2, n_epochs=1, log_every=1)

REQUIRED = [
    "charts/episodic_return", "charts/success_rate", "charts/episode_length",
    "losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
    "losses/clipfrac", "memory/memory_size", "time/fps",
]


def tags_of(log_dir) -> set[str]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_tensorboard_tags(tmp_path, capsys):
    model = PPO("gru", "MemoRL/Corridor-L10-v0", tensorboard_log=tmp_path, seed=1,
                policy_kwargs={"features_dim": 16, "hidden_dim": 16}, **SMALL)
    # 3 x 64 steps: episodes (time limit 40) end, so the charts/ tags exist
    model.learn(3 * 64, progress_bar=True)
    assert model.log_dir.parent == tmp_path
    assert model.log_dir.name.startswith("MemoRL-Corridor-L10-v0__gru__1__")
    tags = tags_of(model.log_dir)
    missing = [t for t in REQUIRED if t not in tags]
    assert not missing, f"missing tags {missing}; have {sorted(tags)}"
    assert (model.log_dir / "checkpoint.pt").exists()
    err = capsys.readouterr().err  # pytest's stderr is not a terminal: plain lines
    assert "update 3 step 192/192" in err and "fps=" in err


def test_memory_aux_losses_are_logged(tmp_path):
    name = "expire_span"
    pytest.importorskip("policies.memory.expire_span")
    model = PPO(name, "MemoRL/Corridor-L10-v0", tensorboard_log=tmp_path,
                policy_kwargs={"features_dim": 16, "d_model": 16, "num_layers": 1, "num_heads": 2,
                               "d_ff": 32},
                **SMALL)
    model.learn(64, progress_bar=False)
    tags = tags_of(model.log_dir)
    assert any(t.startswith("losses/loss_") for t in tags), sorted(tags)
    assert "memory/memory_size" in tags


def test_env_arguments():
    import gymnasium as gym

    with pytest.raises(ValueError, match="unknown env 'MemoRL/Coridor-v0'.*Corridor"):
        make_vec_env("MemoRL/Coridor-v0", 2)
    venv = gym.vector.SyncVectorEnv([lambda: gym.make("MemoRL/Corridor-L10-v0")] * 2)
    with pytest.raises(ValueError, match="SAME_STEP"):
        make_vec_env(venv, 2)
    same = gym.vector.SyncVectorEnv([lambda: gym.make("MemoRL/Corridor-L10-v0")] * 3,
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    model = PPO("none", same, tensorboard_log=None, n_minibatches=1)
    assert model.config.n_envs == 3
    model.learn(3 * 128, progress_bar=False)
    assert model.num_timesteps == 3 * 128
    # a single gymnasium.Env is copied n_envs times
    single = PPO("none", gym.make("MemoRL/Corridor-L10-v0"), tensorboard_log=None, n_envs=2,
                 n_minibatches=2)
    assert single.env.num_envs == 2
