"""The command-line scripts: bad input is refused before any work with a message naming the value
and what is allowed; per-env defaults apply; a tiny run ends with its summary and checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agents.config import PPOConfig

ROOT = Path(__file__).resolve().parents[2]


def refused(main, argv, capsys) -> str:
    """The one line a script refuses ``argv`` with (exit status 2, no usage block)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err, err
    assert err.rstrip().endswith("(see --help)"), err
    return err


def refused_with_usage(main, argv, capsys) -> str:
    """What a script with argparse's own errors (usage block and error) prints when refusing."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--env", "no-such-env"], "no-such-env"),
        (["--policy", "transformer9"], "invalid choice: 'transformer9'"),
        (["--algo", "dqn"], "invalid choice: 'dqn'"),
        (["--total-steps", "0"], "--total-steps must be an integer >= 1, got 0"),
        (["--n-envs", "0"], "n_envs must be an integer >= 1, got 0"),
        (["--gamma", "1.5"], "gamma must be a finite number in [0, 1], got 1.5"),
        (["--lr", "-1"], "lr must be a finite number > 0, got -1.0"),
        (["--lr", "inf"], "lr must be a finite number > 0, got inf"),
        (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
        (["--clip-coef", "0"], "clip_coef must be a finite number > 0 or None, got 0.0"),
        (["--vec", "fast"], "invalid choice: 'fast'"),
        (["--n-envs", "6", "--n-minibatches", "4"], "n_minibatches must be a divisor"),
        (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
        (["--policy-kwargs", "max_span"], "key=value"),
        (["--policy-kwargs", "no_such_knob=3"], "no_such_knob"),
        (["--resume", "/nonexistent/ck.pt"], "does not exist"),
        (["--env", "corridor", "--env-kwargs", "lenght=3", "--vec", "sync"],
         "env 'MemoRL/Corridor-v0' takes no argument 'lenght'"),
        (["--env", "corridor", "--env-kwargs", "lenght=3", "--vec", "batched"],
         "env 'MemoRL/Corridor-v0' takes no argument 'lenght'"),
        (["--env-kwargs", "min_length"], "--env-kwargs entries must be key=value"),
        (["--gamma", "x"], "argument --gamma: invalid float value: 'x'"),
    ],
)
def test_train_agent_refuses_bad_input(train, argv, expected, capsys, tmp_path):
    msg = refused(train.main, [*argv, "--log-dir", str(tmp_path), "--no-progress"], capsys)
    assert expected in msg, msg
    assert not any(tmp_path.iterdir()), "nothing may be written for refused input"


def test_unknown_env_lists_the_short_names(train, capsys, tmp_path):
    msg = refused(train.main, ["--env", "corridoor", "--log-dir", str(tmp_path)], capsys)
    for name in ("corridor", "portal", "instruction"):
        assert name in msg, msg


def test_help_documents_every_option_with_its_default(train, capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--n-envs", "--bptt-len", "--mrbp", "--ent-coef", "--norm-adv", "--device",
                 "--resume", "--policy-kwargs"):
        assert flag in out, flag
    assert "(default: a2c: 16, ppo: 32)" in " ".join(out.split())  # --n-envs per preset
    assert "torchrun" in out


class _Built(Exception):
    """Raised instead of training: carries the agent the command line built."""


def built_by_cli(train, monkeypatch, argv: list[str]):
    """The agent ``train_agent.py argv`` builds, stopped before training."""

    def stop(model, *args, **kwargs):
        raise _Built(model)

    for cls in train.ALGORITHMS.values():
        monkeypatch.setattr(cls, "learn", stop)
    with pytest.raises(_Built) as info:
        train.main([*argv, "--no-progress"])
    return info.value.args[0]


def test_api_and_cli_build_the_same_corridor_config(train, monkeypatch, tmp_path):
    from agents import A2C, PPO, PRESETS

    for algo, cls in (("ppo", PPO), ("a2c", A2C)):
        api = cls("expire_span", "MemoRL/Corridor-v0", tensorboard_log=None).config
        cli = built_by_cli(train, monkeypatch, ["--env", "corridor", "--algo", algo,
                                                "--policy", "expire_span",
                                                "--log-dir", str(tmp_path)]).config
        assert cli == api
        preset = PRESETS["MemoRL/Corridor-v0"]
        for key, value in preset.config[algo].items():  # the preset, not the class default
            assert getattr(api, key) == value != getattr(cls.config_class(), key), key
        assert api.policy_kwargs == dict(preset.policy_kwargs["expire_span"])


def test_given_values_win_over_the_preset(train, monkeypatch, tmp_path):
    from agents import PPO, PRESETS

    preset = PRESETS["MemoRL/Corridor-v0"]
    argv = ["--env", "corridor", "--n-envs", "8", "--ent-start-step", "0", "--log-dir",
            str(tmp_path), "--policy-kwargs", "alpha=1e-6", "ramp=8"]
    cli = built_by_cli(train, monkeypatch, argv).config
    api = PPO("expire_span", "corridor", tensorboard_log=None, n_envs=8, ent_start_step=0,
              policy_kwargs={"alpha": 1e-6, "ramp": 8}).config
    assert cli == api
    assert (cli.n_envs, cli.ent_start_step) == (8, 0)
    assert cli.ent_coef == preset.config["ppo"]["ent_coef"]  # not given: the preset's
    assert cli.policy_kwargs == {"alpha": 1e-6, "ramp": 8}
    # the span penalty's preset is Expire-Span's alone; other ids have no preset
    gru = built_by_cli(train, monkeypatch, ["--env", "corridor", "--policy", "gru",
                                            "--log-dir", str(tmp_path)]).config
    assert gru.policy_kwargs == {} and gru.n_envs == preset.config["ppo"]["n_envs"]
    l10 = built_by_cli(train, monkeypatch, ["--env", "MemoRL/Corridor-L10-v0",
                                            "--log-dir", str(tmp_path)]).config
    assert l10 == PPO("expire_span", "MemoRL/Corridor-L10-v0", tensorboard_log=None).config
    assert l10 == dataclasses.replace(PPOConfig(), policy_kwargs={})
    # a config object is used as given
    plain = PPO("expire_span", "corridor", PPOConfig(), tensorboard_log=None).config
    assert plain == PPOConfig()


def test_help_shows_the_presets(train, capsys):
    from agents.presets import describe_presets

    with pytest.raises(SystemExit):
        train.main(["--help"])
    assert describe_presets() in capsys.readouterr().out


def test_readme_shows_the_presets():
    from agents.presets import describe_presets

    assert describe_presets(markdown=True) in (ROOT / "README.md").read_text()


def _tiny_run(train, tmp_path, policy: str, steps: int, rollout_len: int) -> int:
    return train.main([
        "--env", "MemoRL/Corridor-L10-v0", "--policy", policy, "--total-steps", str(steps),
        "--n-envs", "2", "--rollout-len", str(rollout_len), "--bptt-len", "16",
        "--n-minibatches", "2", "--n-epochs", "1", "--log-dir", str(tmp_path), "--no-progress",
    ])


def test_tiny_run_ends_with_a_summary(train, capsys, tmp_path):
    code = _tiny_run(train, tmp_path, "gru", 64, 16)
    assert code == 0
    out = capsys.readouterr().out
    assert "summary" in out and "steps:         64" in out
    checkpoints = list(tmp_path.glob("*/checkpoint.pt"))
    assert len(checkpoints) == 1 and str(checkpoints[0]) in out


def test_learning_seeds_refuses_bad_input(script, capsys):
    seeds = script("learning_seeds")
    msg = refused(seeds.main, ["--total-steps", "0"], capsys)
    assert "--total-steps must be an integer >= 1, got 0" in msg
    msg = refused(seeds.main, ["--set", "n_env=3"], capsys)
    assert "unknown option(s) ['n_env']" in msg
    msg = refused(seeds.main, ["--policy", "nope"], capsys)
    assert "invalid choice: 'nope'" in msg


@pytest.fixture(scope="module")
def tiny_corridor_checkpoint(tmp_path_factory):
    """An untrained Expire-Span PPO agent of the full corridor, saved (a checkpoint to evaluate)."""
    from agents import PPO

    path = tmp_path_factory.mktemp("ckpt") / "agent.pt"
    PPO("expire_span", "MemoRL/Corridor-v0", n_envs=2, n_minibatches=2, tensorboard_log=None,
        seed=0).save(path)
    return path


def test_evaluate_agent_refuses_before_evaluating(script, tiny_corridor_checkpoint, capsys,
                                                 tmp_path, monkeypatch):
    evaluate = script("evaluate_agent")

    def never(*args, **kwargs):
        raise AssertionError("evaluated although the input is refused")

    monkeypatch.setattr(evaluate, "evaluate", never)
    ckpt = str(tiny_corridor_checkpoint)
    missing = tmp_path / "no" / "such" / "ep.gif"
    msg = refused(evaluate.main, [ckpt, "--gif", str(missing)], capsys)
    assert f"--gif {missing}: the directory '{missing.parent}' does not exist" in msg
    msg = refused(evaluate.main, [ckpt, "--memory-png", str(missing)], capsys)
    assert "--memory-png" in msg
    msg = refused(evaluate.main, [ckpt, "--seed", "-1"], capsys)
    assert "--seed must be an integer >= 0, got -1" in msg
    monkeypatch.undo()
    msg = refused(evaluate.main, [ckpt, "--env", "MemoRL/Portal-R5-v0", "--episodes", "2",
                                  "--n-envs", "2"], capsys)
    assert "cannot evaluate on MemoRL/Portal-R5-v0: its observation space" in msg


def test_evaluate_agent_reports_and_takes_env_kwargs(script, tiny_corridor_checkpoint, capsys):
    evaluate = script("evaluate_agent")
    code = evaluate.main([str(tiny_corridor_checkpoint), "--episodes", "4", "--n-envs", "2",
                          "--env-kwargs", "min_length=3", "max_length=3"])
    assert code == 0
    out = capsys.readouterr().out
    assert "success rate" in out and "over 4 episodes" in out
    mean_length = float(out.split("mean length ")[1].split()[0])
    assert mean_length <= 2 * 3 + 20  # episodes of the 3-cell corridor, not the run's 3..200
    msg = refused(evaluate.main, [str(tiny_corridor_checkpoint), "--env-kwargs", "lenght=3"],
                  capsys)
    assert "lenght" in msg


def test_corridor_lengths_table_and_picture(script, tiny_corridor_checkpoint, capsys, tmp_path):
    lengths = script("corridor_lengths")
    png = tmp_path / "len.png"
    code = lengths.main([str(tiny_corridor_checkpoint), "--lengths", "3", "5", "--episodes", "4",
                         "--n-envs", "2", "--png", str(png)])
    assert code == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 3 |") or
            line.startswith("| 5 |")]
    assert len(rows) == 2
    for row in rows:  # success + wrong door + truncated = 1
        cells = [float(c) for c in row.strip("|").split("|")[1:4]]
        assert sum(cells) == pytest.approx(1.0)
    assert png.stat().st_size > 0
    msg = refused(lengths.main, [str(tiny_corridor_checkpoint), "--lengths", "2", "7"], capsys)
    assert "--lengths must lie in [3, 10000], got [2]" in msg


def test_plot_runs_draws_a_panel_per_tag(script, tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    for name in ("run_a", "run_b"):
        with SummaryWriter(tmp_path / name) as writer:
            for step in range(5):
                writer.add_scalar("charts/success_rate", step / 4, step * 100)
                writer.add_scalar("memory/span_mean", 20 - step, step * 100)
    plot = script("plot_runs")
    out = tmp_path / "curves.png"
    assert plot.main([str(tmp_path), "--tag", "charts/success_rate", "memory/span_mean",
                      "--labels", "A", "B", "--out", str(out)]) == 0
    assert "2 run(s)" in capsys.readouterr().out and out.stat().st_size > 0
    msg = refused_with_usage(plot.main, [str(tmp_path), "--labels", "A"], capsys)
    assert "--labels needs one label per run (2: run_a, run_b), got 1" in msg
    msg = refused_with_usage(plot.main, [str(tmp_path), "--tag", "nope"], capsys)
    assert "no run has the tag(s) 'nope'" in msg


# training that stops: one line and a documented exit status

TINY = ["--env", "MemoRL/Corridor-L10-v0", "--policy", "gru", "--n-envs", "2", "--rollout-len",
        "16", "--bptt-len", "16", "--n-minibatches", "2", "--n-epochs", "1", "--no-progress",
        "--policy-kwargs", "features_dim=16", "hidden_dim=16"]


def last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_resume_takes_a_run_directory_and_refuses_conflicts(train, capsys, tmp_path):
    assert train.main([*TINY, "--total-steps", "32", "--log-dir", str(tmp_path)]) == 0
    (run,) = tmp_path.iterdir()
    capsys.readouterr()
    msg = refused(train.main, ["--resume", str(run), "--env", "portal"], capsys)
    assert "the run is PPO gru on MemoRL/Corridor-L10-v0, which --env portal would change" in msg
    msg = refused(train.main, ["--resume", str(run), "--policy", "lstm", "--log-dir", "x"],
                  capsys)
    assert "--policy lstm, --log-dir would change" in msg
    msg = refused(train.main, ["--resume", str(tmp_path)], capsys)
    assert "the directory holds no checkpoint.pt" in msg
    # the same env under another name, the same algorithm: no conflict
    assert train.main(["--resume", str(run), "--env", "MemoRL/Corridor-L10-v0", "--algo",
                       "ppo", "--total-steps", "64", "--no-progress"]) == 0
    assert "steps:         64" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [run.name]  # no second run directory


def test_a_run_in_use_is_refused_with_exit_status_2(train, capsys, tmp_path):
    from agents.rundir import RunLock

    assert train.main([*TINY, "--total-steps", "32", "--log-dir", str(tmp_path)]) == 0
    (run,) = tmp_path.iterdir()
    before = (run / "checkpoint.pt").read_bytes()
    lock = RunLock(run, None)
    lock.acquire()
    try:
        assert train.main(["--resume", str(run), "--total-steps", "64", "--no-progress"]) == 2
    finally:
        lock.release()
    line = last_line(capsys)
    assert line.startswith("train_agent.py: error: run directory ") and "is in use" in line
    assert (run / "checkpoint.pt").read_bytes() == before


def test_repeated_nonfinite_updates_end_with_exit_status_1(train, capsys, tmp_path, monkeypatch):
    import agents.update as update_mod

    real = update_mod.make_loss_fn

    def poisoned(policy, cfg, **kw):
        fn = real(policy, cfg, **kw)

        def loss_fn(batch, out, fraction):
            loss, stats = fn(batch, out, fraction)
            return loss * float("nan"), stats

        return loss_fn

    monkeypatch.setattr(update_mod, "make_loss_fn", poisoned)
    code = train.main([*TINY, "--total-steps", "320", "--max-nonfinite", "3", "--log-dir",
                       str(tmp_path)])
    assert code == 1
    line = last_line(capsys)
    assert line.startswith("train_agent.py: error: 3 updates in a row had a non-finite loss")


def test_a_full_disk_ends_with_exit_status_1(train, capsys, tmp_path, monkeypatch):
    import errno

    import agents.checkpoint as checkpoint_mod

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_mod.torch, "save", full)
    assert train.main([*TINY, "--total-steps", "32", "--log-dir", str(tmp_path)]) == 1
    line = last_line(capsys)
    assert line.startswith("train_agent.py: error: cannot write checkpoint ")
    assert line.endswith(": No space left on device")


def test_summary_reports_the_tasks_measures(train, capsys, tmp_path):
    code = _tiny_run(train, tmp_path, "none", 256, 64)
    assert code == 0
    assert "task measures: length 10.000 (episodes of the last update)" in capsys.readouterr().out
