"""The command-line scripts: bad input is refused before any work with a message naming the value
and what is allowed; per-env defaults apply; a tiny run ends with its summary and checkpoint."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    path = ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return module


@pytest.fixture(scope="module")
def train():
    return load_script("train_agent")


def refused(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code not in (0, None)
    captured = capsys.readouterr()
    return captured.err + str(info.value.code)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--env", "no-such-env"], "no-such-env"),
        (["--policy", "transformer9"], "invalid choice: 'transformer9'"),
        (["--algo", "dqn"], "invalid choice: 'dqn'"),
        (["--total-steps", "0"], "--total-steps must be >= 1, got 0"),
        (["--n-envs", "0"], "n_envs must be >= 1, got 0"),
        (["--gamma", "1.5"], "gamma must be in [0, 1], got 1.5"),
        (["--lr", "-1"], "lr must be > 0"),
        (["--n-envs", "6", "--n-minibatches", "4"], "n_minibatches must be a divisor"),
        (["--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
        (["--policy-kwargs", "max_span"], "key=value"),
        (["--policy-kwargs", "no_such_knob=3"], "no_such_knob"),
        (["--resume", "/nonexistent/ck.pt"], "does not exist"),
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


def test_full_corridor_defaults_apply_unless_given(train, monkeypatch, tmp_path):
    seen = {}

    class Stop(Exception):
        pass

    def fake_init(self, policy, env, config, **kw):
        seen.update(n_envs=config.n_envs, ent=config.ent_coef, start=config.ent_start_step,
                    kw=dict(config.policy_kwargs))
        raise Stop

    monkeypatch.setattr(train.ALGORITHMS["ppo"], "__init__", fake_init)
    with pytest.raises(Stop):
        train.main(["--env", "corridor", "--log-dir", str(tmp_path)])
    assert seen == {"n_envs": 64, "ent": 0.0005, "start": 819_200, "kw": {"alpha": 0.0}}
    with pytest.raises(Stop):
        train.main(["--env", "corridor", "--n-envs", "8", "--ent-start-step", "0", "--log-dir",
                    str(tmp_path), "--policy-kwargs", "alpha=1e-6", "ramp=8"])
    assert seen == {"n_envs": 8, "ent": 0.0005, "start": 0, "kw": {"alpha": 1e-6, "ramp": 8}}
    with pytest.raises(Stop):  # the span penalty's default is Expire-Span's alone
        train.main(["--env", "corridor", "--policy", "gru", "--log-dir", str(tmp_path)])
    assert seen == {"n_envs": 64, "ent": 0.0005, "start": 819_200, "kw": {}}
    with pytest.raises(Stop):
        train.main(["--env", "MemoRL/Corridor-L10-v0", "--log-dir", str(tmp_path)])
    assert seen == {"n_envs": 32, "ent": 0.003, "start": 0, "kw": {}}


def test_tiny_run_ends_with_a_summary(train, capsys, tmp_path):
    code = train.main([
        "--env", "MemoRL/Corridor-L10-v0", "--policy", "gru", "--total-steps", "64",
        "--n-envs", "2", "--rollout-len", "16", "--bptt-len", "16", "--n-minibatches", "2",
        "--n-epochs", "1", "--log-dir", str(tmp_path), "--no-progress",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "summary" in out and "steps:         64" in out
    checkpoints = list(tmp_path.glob("*/checkpoint.pt"))
    assert len(checkpoints) == 1 and str(checkpoints[0]) in out


def test_learning_seeds_refuses_bad_input(capsys):
    seeds = load_script("learning_seeds")
    msg = refused(seeds.main, ["--total-steps", "0"], capsys)
    assert "--total-steps must be >= 1, got 0" in msg
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


def test_evaluate_agent_reports_and_takes_env_kwargs(tiny_corridor_checkpoint, capsys):
    evaluate = load_script("evaluate_agent")
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


def test_corridor_lengths_table_and_picture(tiny_corridor_checkpoint, capsys, tmp_path):
    lengths = load_script("corridor_lengths")
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


def test_plot_runs_draws_a_panel_per_tag(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    for name in ("run_a", "run_b"):
        with SummaryWriter(tmp_path / name) as writer:
            for step in range(5):
                writer.add_scalar("charts/success_rate", step / 4, step * 100)
                writer.add_scalar("memory/span_mean", 20 - step, step * 100)
    plot = load_script("plot_runs")
    out = tmp_path / "curves.png"
    assert plot.main([str(tmp_path), "--tag", "charts/success_rate", "memory/span_mean",
                      "--labels", "A", "B", "--out", str(out)]) == 0
    assert "2 run(s)" in capsys.readouterr().out and out.stat().st_size > 0
    msg = refused(plot.main, [str(tmp_path), "--labels", "A"], capsys)
    assert "--labels needs one label per run (2: run_a, run_b), got 1" in msg
    msg = refused(plot.main, [str(tmp_path), "--tag", "nope"], capsys)
    assert "no run has the tag(s) 'nope'" in msg
