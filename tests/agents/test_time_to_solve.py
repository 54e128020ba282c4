"""scripts/time_to_solve.py: a seed trains until its evaluation reaches the target or its steps
run out; a stopped run keeps its result so far and resumes where it stopped."""

from __future__ import annotations

import json
import os
import signal

TINY = ["n_envs=2", "rollout_len=16", "bptt_len=16", "n_minibatches=1", "n_epochs=1"]


def argv(tmp_path, total: int = 256) -> list[str]:
    return ["--env", "MemoRL/Corridor-L10-v0", "--policy", "gru", "--seeds", "3",
            "--total-steps", str(total), "--eval-every", "64", "--episodes", "4",
            "--success", "1.0", "--set", *TINY, "--policy-kwargs", "hidden_dim=8",
            "--out-dir", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs")]


def test_a_stopped_run_keeps_its_result_so_far_and_resumes(script, tmp_path, monkeypatch):
    tts = script("time_to_solve")
    name = "MemoRL_Corridor-L10-v0-ppo-gru-default-seed3"
    out, stopped = tmp_path / "out" / f"{name}.json", tmp_path / "out" / f"{name}.stopped.json"

    class StopAfterTwo(tts.EvalCallback):  # SIGTERM once two evaluations are done
        def __call__(self, agent):
            go_on = super().__call__(agent)
            if len(self.history) == 2 and not getattr(self, "sent", False):
                self.sent = True
                os.kill(os.getpid(), signal.SIGTERM)
            return go_on

    monkeypatch.setattr(tts, "EvalCallback", StopAfterTwo)
    assert tts.main(argv(tmp_path)) == 128 + signal.SIGTERM
    kept = json.loads(stopped.read_text())
    assert kept["stopped"] is True and not out.exists()
    assert [e["step"] for e in kept["evaluations"]] == [64, 128]
    assert kept["steps"] >= 128 and kept["total_steps"] == 256
    table = tts.report(tts.parse_args(argv(tmp_path)))
    assert "stopped at" in table and "of 256; resumable" in table

    monkeypatch.undo()  # the same command again: it resumes and finishes
    assert tts.main(argv(tmp_path)) == 0
    done = json.loads(out.read_text())
    assert not stopped.exists() and "stopped" not in done
    assert [e["step"] for e in done["evaluations"]] == [64, 128, 192, 256]
    assert done["steps"] == 256 and done["solved"] is (max(
        e["success"] for e in done["evaluations"]) >= 1.0)
    assert "resumable" not in tts.report(tts.parse_args(argv(tmp_path)))
    assert tts.main(argv(tmp_path)) == 0  # finished: skipped
    assert json.loads(out.read_text()) == done
