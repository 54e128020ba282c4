"""EvalCallback: evaluations on schedule, equal to evaluate(), without changing training; the stop
at a success rate; the command-line options."""

from __future__ import annotations

import pytest
import torch

from agents import PPO
from agents.callbacks import EvalCallback
from agents.evaluation import evaluate

SMALL = dict(n_envs=2, rollout_len=16, bptt_len=8, n_minibatches=2, n_epochs=1,
             policy_kwargs={"features_dim": 16, "hidden_dim": 16})
ENV = "MemoRL/Corridor-L10-v0"


def _model(**kw):
    return PPO("gru", ENV, tensorboard_log=None, checkpoint_path=None, seed=5, **SMALL, **kw)


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.policy.parameters()])


def test_training_with_evaluations_equals_training_without():
    plain = _model().learn(32 * 6, progress_bar=False)
    cb = EvalCallback(every_steps=64, episodes=4, n_envs=2, verbose=False)
    evaluated = _model().learn(32 * 6, progress_bar=False, callback=cb)
    assert torch.equal(_params(plain), _params(evaluated))
    assert [h["step"] for h in cb.history] == [64, 128, 192]
    assert all(h["train_wall_s"] >= 0 and h["eval_s"] > 0 for h in cb.history)


def test_last_evaluation_equals_evaluate_of_the_final_policy():
    cb = EvalCallback(every_steps=96, episodes=6, n_envs=3, verbose=False)
    model = _model().learn(96, progress_bar=False, callback=cb)
    ev = evaluate(model, ENV, 6, n_envs=3)
    assert cb.history[-1]["success"] == pytest.approx(float(ev["success"].mean()))
    assert cb.history[-1]["return"] == pytest.approx(float(ev["return"].mean()))


def test_policy_mode_restored():
    model = _model()
    model.policy.train()
    cb = EvalCallback(every_steps=1, episodes=2, n_envs=2, verbose=False)
    model.num_timesteps = 32
    cb(model)
    assert model.policy.training


def test_stop_at_success_ends_training_at_the_first_good_evaluation():
    cb = EvalCallback(every_steps=64, episodes=2, n_envs=2, stop_at_success=0.0, verbose=False)
    model = _model().learn(32 * 10, progress_bar=False, callback=cb)
    assert model.num_timesteps == 64
    assert cb.solved_at is cb.history[0]
    never = EvalCallback(every_steps=64, episodes=2, n_envs=2, verbose=False)
    assert never.solved_at is None


@pytest.mark.parametrize("kw, word", [({"every_steps": 0}, "every_steps"),
                                      ({"every_steps": 8, "episodes": 0}, "episodes"),
                                      ({"every_steps": 8, "stop_at_success": 1.5}, "1.5")])
def test_bad_arguments_named(kw, word):
    with pytest.raises(ValueError, match=word):
        EvalCallback(**kw)


def test_command_line_stops_at_success(train, tmp_path, capsys):
    status = train.main(["--env", ENV, "--policy", "gru", "--total-steps", "640", "--n-envs",
                         "2", "--rollout-len", "16", "--bptt-len", "8", "--n-minibatches", "2",
                         "--n-epochs", "1", "--log-dir", str(tmp_path), "--no-progress",
                         "--eval-every", "64", "--eval-episodes", "2", "--stop-at-success",
                         "0", "--policy-kwargs", "features_dim=16", "hidden_dim=16"])
    out = capsys.readouterr().out
    assert status == 0
    assert "steps:         64 " in out
    assert "solved:        success >= 0.0 at step 64" in out


def test_command_line_refuses_stop_without_evaluations(train, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--env", ENV, "--stop-at-success", "0.9"])
    assert exit_info.value.code == 2
    assert "--stop-at-success needs --eval-every" in capsys.readouterr().err
