"""The benchmark grid (scripts/benchmark.py) on a tiny budget: each cell's JSON, skipping finished
cells, --limit, --dry-run, --report; and the learning curve that agents.experiments keeps
across a resume."""

from __future__ import annotations

import json

import pytest

from agents import PPO
from agents.experiments import Cell, curve_point, run_cell

TINY = ["--set", "n_envs=4", "rollout_len=32", "bptt_len=16", "n_minibatches=2", "n_epochs=1",
        "--episodes", "4", "--eval-envs", "2"]


@pytest.fixture
def bench(script):
    return script("benchmark")


def options(tmp_path, *extra: str) -> list[str]:
    return ["--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"),
            "--md", str(tmp_path / "bench.md"), "--images", str(tmp_path / "img"), *TINY, *extra]


def test_grid_runs_skips_and_reports(bench, tmp_path, capsys) -> None:
    grid = ["--tasks", "corridor", "portal", "--policies", "none", "--algo", "ppo",
            "--seeds", "0", "--steps", "512", "portal=256"]
    bench.main(options(tmp_path, *grid))
    out = capsys.readouterr().out
    assert "[1/2] Corridor-Short-v0__ppo__none__512__seed0: 512 steps" in out
    files = sorted((tmp_path / "out").glob("*.json"))
    assert [f.name for f in files] == ["Corridor-Short-v0__ppo__none__512__seed0.json",
                                       "Portal-R5-v0__ppo__none__256__seed0.json"]
    corridor = json.loads(files[0].read_text())
    portal = json.loads(files[1].read_text())
    assert corridor["steps"] == 512 and portal["steps"] == 256 and corridor["wall_s"] > 0
    for mode in ("deterministic", "sampled"):
        assert portal[mode]["episodes"] == 4
        assert set(portal[mode]["metrics"]) == {"rooms_reached"}
        assert 1 <= portal[mode]["metrics"]["rooms_reached"] <= 5
        assert set(corridor[mode]["metrics"]) == {"length"}
    # 4 envs x 128 steps of corridors of at most 20 cells: episodes ended, the curve has points
    assert corridor["curve"] and all({"step", "return", "success"} <= set(p)
                                     for p in corridor["curve"])
    steps = [p["step"] for p in corridor["curve"]]
    assert steps == sorted(set(steps)) and steps[-1] <= 512

    before = {f: f.stat().st_mtime_ns for f in files}
    bench.main(options(tmp_path, *grid))  # finished cells are skipped
    assert capsys.readouterr().out.count("done, skipped") == 2
    assert {f: f.stat().st_mtime_ns for f in files} == before

    # one more seed: --dry-run lists it as to do, --limit 1 runs only the first of two new cells
    more = [*grid[:-5], "--seeds", "0", "1", "2", "--steps", "512", "portal=256"]
    bench.main(options(tmp_path, *more, "--tasks", "corridor", "--dry-run"))
    listed = capsys.readouterr().out
    assert "Corridor-Short-v0__ppo__none__512__seed1: todo" in listed
    assert "3 cells: 1 done, 0 started, 2 todo" in listed
    bench.main(options(tmp_path, *more, "--tasks", "corridor", "--limit", "1"))
    assert "seed2: not run (--limit 1)" in capsys.readouterr().out
    assert len(list((tmp_path / "out").glob("*.json"))) == 3

    bench.main(options(tmp_path, *grid, "--report"))
    md = (tmp_path / "bench.md").read_text()
    assert "Cells finished: 2 of 2." in md
    assert "| ppo | none | 0 | 512 |" in md and "| ppo | none | 0 | 256 |" in md
    assert "`rooms_reached`" in md
    for tag in ("Corridor-Short-v0", "Portal-R5-v0"):
        assert (tmp_path / "img" / f"benchmark_{tag}.png").stat().st_size > 0


def test_a_finished_cell_with_other_settings_is_refused(bench, tmp_path) -> None:
    grid = ["--tasks", "corridor", "--policies", "none", "--algo", "ppo", "--seeds", "0",
            "--steps", "256"]
    bench.main(options(tmp_path, *grid))
    with pytest.raises(SystemExit, match="other settings"):
        bench.main(options(tmp_path, *grid, "--set", "n_envs=8", "rollout_len=32",
                           "bptt_len=16", "n_minibatches=2", "n_epochs=1"))


def test_default_grid(bench, capsys) -> None:
    args = bench.parse_args(["--dry-run"])
    cells = bench.cells(args)
    ppo = [c for c in cells if c.algo == "ppo"]
    a2c = [c for c in cells if c.algo == "a2c"]
    memories = bench.memories()
    assert {"expire_span", "trxl", "rmt", "memformer", "rehearsal", "lstm", "gru",
            "none"} <= set(memories)
    tasks = [t for t in bench.TASKS.values() if bench.registered(t.env)]
    assert len(ppo) == len(tasks) * len(memories) * 3
    assert {(c.env, c.policy) for c in a2c} == {("MemoRL/Corridor-Short-v0", "expire_span")}
    assert {c.seed for c in cells} == {0, 1, 2}
    assert all(c.total_steps == bench.TASKS[k].steps for k in bench.TASKS
               for c in cells if c.env == bench.TASKS[k].env)


@pytest.mark.parametrize("argv, message", [
    (["--steps", "maze=100"], "unknown task 'maze'"),
    (["--steps", "ten"], "N or TASK=N"),
    (["--steps", "0"], "--steps must be an integer >= 1"),
    (["--limit", "0"], "--limit must be an integer >= 1"),
    (["--set", "n_envs=0"], "n_envs"),
])
def test_bad_options_are_refused(bench, capsys, argv, message) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert message in capsys.readouterr().err


def test_curve_survives_a_resume(tmp_path) -> None:
    cell = Cell("c", "MemoRL/Corridor-Short-v0", "none", 0, 4 * 128,
                config=dict(n_envs=4, rollout_len=32, bptt_len=16, n_minibatches=2, n_epochs=1))
    run_dir = tmp_path / "runs" / "c"
    run_dir.mkdir(parents=True)
    # the first half of the run, checkpointed at 256 steps, as a killed cell leaves it: its
    # progress file with a point logged after the checkpoint (trained again on resume)
    first = PPO("none", cell.env, seed=0, tensorboard_log=None,
                checkpoint_path=run_dir / "checkpoint.pt", **cell.config)
    first.learn(cell.total_steps, progress_bar=False,
                callback=lambda agent: agent.num_timesteps < 256)
    assert first.num_timesteps == 256 and (run_dir / "checkpoint.pt").exists()
    stale = {"step": 384, "return": 9.0, "success": 9.0}
    kept = {"step": 128, "return": 0.5, "success": 0.5}
    (run_dir / "progress.json").write_text(json.dumps(
        {"wall_s": 7.0, "steps": 384, "curve": [kept, stale]}))
    result = run_cell(cell, tmp_path / "out", tmp_path / "runs", episodes=2, eval_envs=2)
    assert result["steps"] == 512 and result["wall_s"] > 7.0
    assert result["curve"][0] == kept and stale not in result["curve"]
    assert len(result["curve"]) > 1 and all(p["step"] > 256 for p in result["curve"][1:])
    assert (tmp_path / "out" / "c.json").exists()


def test_curve_point_reads_the_logged_charts() -> None:
    stats = {"charts/episodic_return": 0.5, "charts/success_rate": 0.25, "charts/rooms": 3.0,
             "charts/learning_rate": 1e-3, "losses/entropy": 1.0}
    assert curve_point(10, stats, ("rooms",)) == {"step": 10, "return": 0.5, "success": 0.25,
                                                  "metrics": {"rooms": 3.0}}
    assert curve_point(10, {"charts/learning_rate": 1e-3}) is None  # no episode ended
    spans = {**stats, "memory/span_mean": 12.5, "memory/memory_size": 27.0, "memory/other": 1.0}
    assert curve_point(10, spans)["memory"] == {"span_mean": 12.5, "memory_size": 27.0}
