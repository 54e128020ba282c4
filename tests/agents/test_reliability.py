"""No run loses work, no bad input gets past the door: run directories that never collide, locks
against a second writer, stale temp files removed, a full disk while checkpointing, the
divergence guard, a checkpoint used with another env, and predict() inputs."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import agents.checkpoint as checkpoint_mod
import agents.rundir as rundir_mod
from agents import PPO, CheckpointError, RunLockedError
from agents.evaluation import evaluate
from agents.rundir import RunLock

ENV = "MemoRL/Corridor-L10-v0"
SMALL = dict(n_envs=2, rollout_len=16, bptt_len=8, n_minibatches=2, n_epochs=1, seed=3,
             policy_kwargs={"features_dim": 16, "hidden_dim": 16})
UPDATE = 2 * 16  # steps per update


def tiny(**kw) -> PPO:
    return PPO("gru", ENV, **{"tensorboard_log": None, **SMALL, **kw})


def one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


# run directories and locks


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir_mod.time, "time", lambda: 1_700_000_000.0)
    a, b = tiny(tensorboard_log=tmp_path), tiny(tensorboard_log=tmp_path)
    a.learn(UPDATE, progress_bar=False)
    b.learn(UPDATE, progress_bar=False)
    name = "MemoRL-Corridor-L10-v0__gru__3__1700000000"
    assert (a.log_dir.name, b.log_dir.name) == (name, f"{name}-2")
    for model in (a, b):
        assert model.checkpoint_path == model.log_dir / "checkpoint.pt"
        assert model.checkpoint_path.is_file()
        assert len(list(model.log_dir.glob("events.out.tfevents.*"))) == 1  # no mixed logs


def test_a_second_writer_of_a_run_is_refused(tmp_path):
    first = tiny(tensorboard_log=tmp_path, checkpoint_every=1)
    first.learn(UPDATE, progress_bar=False)
    ckpt = first.checkpoint_path
    before = ckpt.read_bytes()
    seen = {}

    def resume_meanwhile(model):  # a second resume of the same checkpoint, while it trains
        second = PPO.load(ckpt, device="cpu")
        with pytest.raises(RunLockedError) as info:
            second.learn(4 * UPDATE, progress_bar=False, reset_num_timesteps=False)
        seen["message"] = one_line(info.value)
        seen["bytes"] = ckpt.read_bytes()
        return False

    again = PPO.load(ckpt, device="cpu")
    again.learn(4 * UPDATE, progress_bar=False, reset_num_timesteps=False,
                callback=resume_meanwhile)
    import os

    assert "is in use by another run" in seen["message"]
    assert f"process {os.getpid()}" in seen["message"]
    assert str(first.log_dir) in seen["message"]
    assert seen["bytes"] != before  # the running resume's own checkpoint (update 2), untouched
    assert PPO.load(ckpt, device="cpu").n_updates == 2  # by the refused writer
    # a lock held elsewhere on the checkpoint alone is refused too, naming the checkpoint
    lock = RunLock(None, ckpt)
    lock.acquire()
    try:
        with pytest.raises(RunLockedError, match=f"checkpoint '{ckpt}' is in use"):
            PPO.load(ckpt, device="cpu").learn(5 * UPDATE, progress_bar=False,
                                               reset_num_timesteps=False)
    finally:
        lock.release()
    PPO.load(ckpt, device="cpu").learn(3 * UPDATE, progress_bar=False,
                                       reset_num_timesteps=False)  # released: fine


def test_stale_temp_files_are_removed_at_the_start(tmp_path):
    ckpt = tmp_path / "ck.pt"
    stale = tmp_path / ".ck.pt.a1b2c3.tmp"
    other = tmp_path / ".other.pt.a1b2c3.tmp"  # another checkpoint's: not ours to remove
    stale.write_bytes(b"half a checkpoint")
    other.write_bytes(b"x")
    tiny(checkpoint_path=ckpt).learn(UPDATE, progress_bar=False)
    assert not stale.exists() and other.exists() and ckpt.is_file()
    assert not list(tmp_path.glob(".ck.pt.*.tmp"))


# a failing disk


@pytest.mark.parametrize("failure", [
    OSError(errno.ENOSPC, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed "
                 "writing file data/3: file write failed\nframe #0: c10::Error ..."),
])
def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_one(
        tmp_path, monkeypatch, failure):
    model = tiny(checkpoint_path=tmp_path / "ck.pt", checkpoint_every=1)
    model.learn(UPDATE, progress_bar=False)
    good = (tmp_path / "ck.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")  # some bytes make it, then the disk is full
        raise failure

    monkeypatch.setattr(checkpoint_mod.torch, "save", full_disk)
    with pytest.raises(CheckpointError) as info:
        model.learn(3 * UPDATE, progress_bar=False, reset_num_timesteps=False)
    msg = one_line(info.value)
    assert f"cannot write checkpoint '{tmp_path / 'ck.pt'}'" in msg
    assert ("No space left on device" in msg) == isinstance(failure, OSError)
    assert ("disk full?" in msg) == isinstance(failure, RuntimeError)
    assert msg.endswith("the previous checkpoint is kept")
    assert (tmp_path / "ck.pt").read_bytes() == good  # the previous checkpoint, intact
    assert not list(tmp_path.glob(".ck.pt.*.tmp"))  # no temp file left
    monkeypatch.setattr(checkpoint_mod.torch, "save", real_save)
    assert PPO.load(tmp_path / "ck.pt", device="cpu").n_updates == 1


# resume: where a loaded run goes on, and TensorBoard without overlap


class Crash(Exception):
    pass


def test_a_resumed_run_has_no_overlapping_tensorboard_steps(tmp_path):
    model = tiny(tensorboard_log=tmp_path, checkpoint_every=2, log_every=1)

    def crash(m):  # update 3 is logged, its checkpoint never written: a crash
        if m.n_updates == 3:
            raise Crash

    with pytest.raises(Crash):
        model.learn(5 * UPDATE, progress_bar=False, callback=crash)
    resumed = PPO.load(model.checkpoint_path, device="cpu")
    assert resumed.num_timesteps == 2 * UPDATE and resumed.log_dir == model.log_dir
    resumed.learn(5 * UPDATE, progress_bar=False, reset_num_timesteps=False)
    acc = EventAccumulator(str(model.log_dir))
    acc.Reload()
    events = acc.Scalars("losses/policy_loss")
    assert [e.step for e in events] == [UPDATE * i for i in range(1, 6)]  # step 96 once
    assert len(list(model.log_dir.glob("events.out.tfevents.*"))) == 2


def test_a_copied_checkpoint_goes_on_next_to_the_copy(tmp_path):
    model = tiny(tensorboard_log=tmp_path / "runs", checkpoint_every=1)
    model.learn(UPDATE, progress_bar=False)
    original = model.checkpoint_path.read_bytes()
    copy = tmp_path / "elsewhere" / "copy.pt"
    copy.parent.mkdir()
    copy.write_bytes(original)
    resumed = PPO.load(copy, device="cpu")
    assert (resumed.checkpoint_path, resumed.log_dir) == (copy, copy.parent)
    resumed.learn(2 * UPDATE, progress_bar=False, reset_num_timesteps=False)
    assert model.checkpoint_path.read_bytes() == original  # the original run is left alone
    assert PPO.load(copy, device="cpu").n_updates == 2
    assert list(copy.parent.glob("events.out.tfevents.*"))
    assert PPO.load(copy, device="cpu").total_timesteps == 2 * UPDATE


# validation of loads and of predict()


def test_load_validates_its_arguments_and_the_env(tmp_path):
    path = tiny().save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['bogus'\]; allowed: .*n_envs"):
        PPO.load(path, bogus=1)
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got inf"):
        PPO.load(path, lr=float("inf"))
    with pytest.raises(CheckpointError) as info:  # another task's observations
        PPO.load(path, env="MemoRL/Portal-R5-v0", device="cpu")
    msg = one_line(info.value)
    assert "was trained on the observation space" in msg and "MemoRL/Portal-R5-v0 has" in msg
    other = PPO.load(path, env="MemoRL/Corridor-Short-v0", device="cpu")
    assert other.env_id == "MemoRL/Corridor-Short-v0"  # the env given, not the run's
    other.learn(UPDATE, progress_bar=False)
    assert PPO.load(other.save(tmp_path / "o.pt")).env_id == "MemoRL/Corridor-Short-v0"
    with pytest.raises(ValueError, match="cannot evaluate on MemoRL/Portal-R5-v0: its "
                                         "observation space"):
        evaluate(other, "MemoRL/Portal-R5-v0", 2, n_envs=2)


@pytest.mark.parametrize("vec", ["sync", "batched"])
def test_env_arguments_are_checked_against_the_env(vec):
    with pytest.raises(ValueError) as info:
        tiny(vec=vec, env_kwargs={"lenght": 5})  # a typo, on purpose
    msg = one_line(info.value)
    assert "takes no argument 'lenght'" in msg and "min_length, max_length" in msg
    assert "use vec" not in msg  # a typo is not a reason to change the kind of env


def test_predict_checks_its_inputs():
    model = tiny()
    obs = np.zeros((3, 3, model.observation_space.shape[-1]), dtype=np.uint8)
    action, state = model.predict(obs, deterministic=True)
    assert np.ndim(action) == 0
    cases = [
        (dict(obs=obs.transpose(2, 0, 1)), "obs has shape (12, 3, 3); the observation space"),
        (dict(obs=obs[None].repeat(2, 0), state=state), "holds 1 envs but 2 observation(s)"),
        (dict(obs=obs, state={"bogus": torch.zeros(1, 16)}), "state must be the dict predict "
                                                         "returned"),
        (dict(obs=obs, state=state, episode_start=[True, False]),
         "episode_start has shape (2,), expected (1,)"),
        (dict(obs=obs, state={k: v.long() for k, v in state.items()}), "not a (batch,"),
    ]
    shape = model.observation_space.shape
    for kwargs, message in cases:
        message = message.replace("(12, 3, 3)", str((shape[-1], *shape[:2])))
        with pytest.raises(ValueError) as info:
            model.predict(**kwargs)
        assert message in one_line(info.value), (message, str(info.value))
    batch = obs[None].repeat(2, 0)
    actions, state2 = model.predict(batch, deterministic=True)
    assert actions.shape == (2,)
    model.predict(batch, state2, episode_start=[True, False])  # the right shapes pass


# the divergence guard


def test_a_diverging_run_is_warned_about(tmp_path, capsys):
    model = tiny(tensorboard_log=tmp_path, lr=1e6, max_grad_norm=0.0, n_epochs=4,
                 max_nonfinite=100)
    model.learn(4 * UPDATE, progress_bar=False)
    err = capsys.readouterr().err
    assert "warning: update" in err and "training is diverging" in err and "lr" in err
    acc = EventAccumulator(str(model.log_dir))
    acc.Reload()
    assert "warnings/text_summary" in acc.Tags()["tensors"]  # the text, kept in TensorBoard
    ratios = [e.value for e in acc.Scalars("losses/scale_ratio")]
    assert max(ratios) > 100

    calm = tiny(tensorboard_log=tmp_path)
    calm.learn(4 * UPDATE, progress_bar=False)
    assert "training is diverging" not in capsys.readouterr().err
    assert calm.last_stats["losses/scale_ratio"] < 100


# when checkpoints are written, and where the run says they go


def test_checkpoints_by_minutes_and_the_line_that_says_where(tmp_path, monkeypatch, capsys):
    import agents.run as run_mod

    clock = iter(range(0, 10_000, 25))  # 25 s per reading of the clock
    monkeypatch.setattr(run_mod.time, "monotonic", lambda: float(next(clock)))
    written = []
    real = run_mod.write_checkpoint
    monkeypatch.setattr(run_mod, "write_checkpoint",
                        lambda agent, path: (written.append(agent.n_updates), real(agent, path)))
    model = tiny(checkpoint_path=tmp_path / "ck.pt", checkpoint_every=0, checkpoint_minutes=1)
    model.learn(6 * UPDATE, progress_bar=False)
    # the clock is read at the start, at every update and after every write: a minute has
    # passed at updates 3 and 6; update 6 is also the end
    assert written == [3, 6, 6]
    err = capsys.readouterr().err
    assert (f"no logs; checkpoints to {tmp_path / 'ck.pt'} (every 1 min, at the end and on "
            "SIGINT/SIGTERM)") in err
    with pytest.raises(ValueError, match="checkpoint_minutes must be a finite number >= 0"):
        tiny(checkpoint_minutes=-1)
