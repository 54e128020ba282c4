"""SIGINT and SIGTERM: the update in progress finishes, a checkpoint is written, one line names the
step and the checkpoint, the exit status is 128 + the signal; a second Ctrl-C stops at once; a
run stopped this way and resumed ends with the parameters of an uninterrupted run. The slow test
sends SIGTERM at random moments to a real process and resumes it each time."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agents.trainer import ActorCriticTrainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--env", "MemoRL/Corridor-L10-v0", "--policy", "gru", "--n-envs", "2", "--rollout-len",
        "16", "--bptt-len", "8", "--n-minibatches", "2", "--n-epochs", "1", "--seed", "3",
        "--no-progress", "--policy-kwargs", "features_dim=16", "hidden_dim=16"]
UPDATE = 32


@pytest.fixture
def send_during(monkeypatch):
    """``send_during({update: [signals]})``: each update of the plan sends its signals to this
    process while it runs (after its gradient steps, before it returns)."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    real = ActorCriticTrainer._update

    def plan(schedule: dict[int, list[int]]) -> None:
        def update(self, buffer):
            out = real(self, buffer)
            for sig in schedule.get(self.n_updates + 1, []):
                os.kill(os.getpid(), sig)
                time.sleep(0.01)  # let the handler run before the next signal
            return out

        monkeypatch.setattr(ActorCriticTrainer, "_update", update)

    yield plan
    after = {s: signal.getsignal(s) for s in before}
    assert after == before, "learn() must restore the signal handlers"


def final_params(ckpt: Path) -> dict[str, torch.Tensor]:
    data = torch.load(ckpt, weights_only=False)
    return data["model"], data["counters"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_writes_a_checkpoint_and_the_resume_is_exact(train, send_during, sig, tmp_path,
                                                              capsys):
    assert train.main([*TINY, "--total-steps", str(5 * UPDATE), "--checkpoint-every", "100",
                       "--log-dir", str(tmp_path / "full")]) == 0
    (full,) = (tmp_path / "full").glob("*/checkpoint.pt")
    capsys.readouterr()

    send_during({2: [sig]})
    code = train.main([*TINY, "--total-steps", str(5 * UPDATE), "--checkpoint-every", "100",
                       "--log-dir", str(tmp_path / "stopped")])
    assert code == 128 + sig
    (ckpt,) = (tmp_path / "stopped").glob("*/checkpoint.pt")
    err = capsys.readouterr().err.strip().splitlines()
    name = signal.Signals(sig).name
    assert err[-1] == (f"train_agent.py: stopped by {name} at step {2 * UPDATE} (update 2); "
                       f"checkpoint {ckpt}; continue with --resume {ckpt}")
    assert any(f"{name}: stopping after this update" in line for line in err)
    model, counters = final_params(ckpt)
    assert counters["n_updates"] == 2 and counters["total_timesteps"] == 5 * UPDATE

    send_during({})
    assert train.main(["--resume", str(ckpt.parent), "--no-progress"]) == 0  # its own total
    resumed, counters = final_params(ckpt)
    reference, _ = final_params(full)
    assert counters["n_updates"] == 5
    for k, v in reference.items():
        assert torch.equal(resumed[k], v), k
    assert any(not torch.equal(model[k], v) for k, v in reference.items())


def test_a_second_ctrl_c_stops_at_once(train, send_during, tmp_path, capsys):
    send_during({2: [signal.SIGINT, signal.SIGINT]})
    code = train.main([*TINY, "--total-steps", str(5 * UPDATE), "--checkpoint-every", "1",
                       "--log-dir", str(tmp_path)])
    assert code == 130
    (ckpt,) = tmp_path.glob("*/checkpoint.pt")
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("train_agent.py: interrupted again: stopped at once, without a "
                       f"checkpoint; the last checkpoint is {ckpt}")
    assert final_params(ckpt)[1]["n_updates"] == 1  # update 2 was abandoned, not written


def test_a_repeated_sigterm_still_writes_the_checkpoint(train, send_during, tmp_path, capsys):
    # torchrun forwards a SIGTERM to its ranks after the terminal's SIGINT
    send_during({1: [signal.SIGINT, signal.SIGTERM, signal.SIGTERM]})
    code = train.main([*TINY, "--total-steps", str(5 * UPDATE), "--checkpoint-every", "100",
                       "--log-dir", str(tmp_path)])
    assert code == 130
    (ckpt,) = tmp_path.glob("*/checkpoint.pt")
    assert final_params(ckpt)[1]["n_updates"] == 1
    assert "stopped by SIGINT at step 32 (update 1)" in capsys.readouterr().err


def run_cli(*args: str, timeout: float = 300) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train_agent.py"), *args],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigterm_at_random_moments_and_resume_ends_as_an_uninterrupted_run(tmp_path):
    """A run sent SIGTERM at random moments (in start-up, mid-update, while checkpointing) and
    resumed each time ends with the parameters of one that ran through."""
    args = [*TINY, "--n-envs", "4", "--rollout-len", "64", "--bptt-len", "16", "--n-epochs", "2",
            "--total-steps", str(4 * 64 * 60), "--checkpoint-every", "5"]
    full = run_cli(*args, "--log-dir", str(tmp_path / "full"))
    assert full.wait(timeout=600) == 0, full.stderr.read()
    (reference,) = (tmp_path / "full").glob("*/checkpoint.pt")

    rng = random.Random(0)
    root, stopped, attempts = tmp_path / "faults", 0, 0
    while True:
        attempts += 1
        assert attempts < 40, "the run never finished"
        found = sorted(root.glob("*/checkpoint.pt"))
        assert len(found) <= 1  # a fresh start only while there is no checkpoint at all
        proc = (run_cli("--resume", str(found[0]), "--no-progress") if found
                else run_cli(*args, "--log-dir", str(root)))
        early = rng.random() < 0.25  # in start-up (imports, loading), else once training runs
        if not early:
            for line in proc.stderr:  # "logs in ...; checkpoints to ..." opens the loop
                if "checkpoints to" in line:
                    break
        try:
            code = proc.wait(timeout=rng.uniform(0.3, 3.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=300)
        err = proc.stderr.read()
        if code == 0:
            break
        assert code in (143, -signal.SIGTERM), err  # stopped cleanly, or before learn() began
        stopped += code == 143
    print(f"{attempts} processes, {stopped} stopped cleanly by SIGTERM inside training")
    assert stopped >= 2, f"only {stopped} stop(s) inside training in {attempts} attempts"
    got, counters = final_params(found[0] if found else next(root.glob("*/checkpoint.pt")))
    want, _ = final_params(reference)
    assert counters["n_updates"] == 60
    for k, v in want.items():
        assert torch.equal(got[k], v), k
