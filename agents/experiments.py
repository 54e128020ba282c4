"""Resumable experiment grids: each cell one training run, its result one JSON file.

A cell is trained with a checkpoint of its own, so a grid stopped at any point (a killed process,
a session's end) continues where it was: finished cells (their JSON exists) are skipped, a cell
whose checkpoint exists is resumed from it. The final policy of a cell is evaluated on fresh
episodes, acting deterministically and by sampling, and the result records both with the memory
size the policy used (``aux["memory_size"]``: memories attended per step and layer).

Used by ``scripts/memory_sweep.py`` (success against memory size, the Expire-Span paper's
figure 4), ``scripts/span_experiments.py`` and ``scripts/benchmark.py`` (every memory on every
task).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .algorithms import ALGORITHMS
from .evaluation import evaluate, summarize

__all__ = ["Cell", "cell_status", "curve_point", "load_results", "run_cell"]


@dataclass(frozen=True)
class Cell:
    """One training run of a grid."""

    name: str
    """File name of the cell's result (``<name>.json``) and of its run directory."""

    env: str
    """Env id."""

    policy: str
    """Memory name."""

    seed: int
    """Training seed."""

    total_steps: int
    """Env steps of training."""

    algo: str = "ppo"
    """Algorithm name (``agents.ALGORITHMS``)."""

    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """Memory hyperparameters (over the env's preset)."""

    config: dict[str, Any] = field(default_factory=dict)
    """Trainer options (over the env's preset)."""

    stop_steps: int | None = None
    """Stop training here, before ``total_steps`` (whose length still sets the schedules, e.g.
    the learning rate's decay): a look at the first part of a full-length run."""


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


#: the memory diagnostics a curve point keeps where the policy logs them (Expire-Span's spans
#: and penalty coefficient, any memory's size)
MEMORY_CURVE_KEYS = ("memory/memory_size", "memory/span_mean", "memory/span_mean_layer0",
                     "memory/span_mean_layer1", "memory/alpha")


def curve_point(step: int, stats: dict[str, float],
                metrics: Sequence[str] = ()) -> dict[str, Any] | None:
    """One learning-curve point from an update's logged scalars (``agent.last_stats``): the
    step, the mean return and (where the env reports it) success of the episodes that ended in
    the update's rollout, under ``metrics`` the task measures named (``charts/<name>``) and under
    ``memory`` the memory diagnostics of :data:`MEMORY_CURVE_KEYS` the update logged; None when
    no episode ended."""
    if "charts/episodic_return" not in stats:
        return None
    point: dict[str, Any] = {"step": int(step), "return": float(stats["charts/episodic_return"])}
    if "charts/success_rate" in stats:
        point["success"] = float(stats["charts/success_rate"])
    measured = {name: float(stats[f"charts/{name}"]) for name in metrics
                if f"charts/{name}" in stats}
    if measured:
        point["metrics"] = measured
    memory = {key.split("/", 1)[1]: float(stats[key]) for key in MEMORY_CURVE_KEYS
              if key in stats}
    if memory:
        point["memory"] = memory
    return point


def run_cell(
    cell: Cell,
    out_dir: str | Path,
    runs_dir: str | Path,
    *,
    episodes: int = 1000,
    eval_envs: int = 100,
    progress_bar: bool = False,
) -> dict[str, Any]:
    """Train ``cell`` (or resume it, or read its finished result) and evaluate its final policy.

    The result is written to ``out_dir/<name>.json`` and returned; the run's TensorBoard logs and
    checkpoint live in ``runs_dir/<name>/``. The result holds the steps trained, the wall time,
    the last update's logged scalars, the learning curve (``curve``: one :func:`curve_point` per
    update in which episodes ended, kept across resumes in ``runs_dir/<name>/progress.json``) and
    the final policy's evaluation acting deterministically and by sampling
    (:func:`agents.evaluation.summarize`: success, return, length, memory size, episodes and the
    task's own measures).
    """
    out = Path(out_dir) / f"{cell.name}.json"
    if out.exists():
        return json.loads(out.read_text())
    cls = ALGORITHMS[cell.algo]
    run_dir = Path(runs_dir) / cell.name
    ckpt = run_dir / "checkpoint.pt"
    progress_file = run_dir / "progress.json"
    t0 = time.perf_counter()
    wall_before = 0.0
    curve: list[dict[str, Any]] = []
    if ckpt.exists():
        model = cls.load(ckpt)
        progress = _read_progress(run_dir)
        wall_before = float(progress.get("wall_s", 0.0))
        # points logged after the checkpoint are trained again from it
        curve = [p for p in progress.get("curve", []) if p["step"] <= model.num_timesteps]
        reset = False
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        model = cls(cell.policy, cell.env, seed=cell.seed, tensorboard_log=None,
                    checkpoint_path=ckpt, policy_kwargs=dict(cell.policy_kwargs), **cell.config)
        model.log_dir = run_dir
        reset = True

    stop = cell.stop_steps or cell.total_steps

    def keep_progress(agent: Any) -> bool:
        point = curve_point(agent.num_timesteps, agent.last_stats, agent.stepper.metrics)
        if point is not None:
            curve.append(point)
        tmp = progress_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"wall_s": wall_before + time.perf_counter() - t0,
                                   "steps": agent.num_timesteps, "curve": curve}))
        tmp.replace(progress_file)
        return agent.num_timesteps < stop

    if model.num_timesteps < stop:
        model.learn(cell.total_steps, progress_bar=progress_bar, callback=keep_progress,
                    reset_num_timesteps=reset)
    wall = wall_before + time.perf_counter() - t0
    result: dict[str, Any] = {"cell": asdict(cell), "steps": model.num_timesteps,
                              "wall_s": wall, "threads": torch.get_num_threads(),
                              "final_training_stats": dict(model.last_stats), "curve": curve}
    for mode, deterministic in (("deterministic", True), ("sampled", False)):
        ev = evaluate(model, cell.env, episodes, n_envs=min(eval_envs, episodes),
                      deterministic=deterministic)
        result[mode] = summarize(ev)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    tmp.replace(out)
    return result


def _read_progress(run_dir: Path) -> dict[str, Any]:
    """What a killed cell had written of its progress (``progress.json``; the older
    ``wall.json`` holds the wall time only)."""
    for name in ("progress.json", "wall.json"):
        path = run_dir / name
        if path.exists():
            return json.loads(path.read_text())
    return {}


def cell_status(cell: Cell, out_dir: str | Path, runs_dir: str | Path) -> str:
    """``"done"`` (its result exists), ``"started"`` (a checkpoint to resume) or ``"todo"``."""
    if (Path(out_dir) / f"{cell.name}.json").exists():
        return "done"
    if (Path(runs_dir) / cell.name / "checkpoint.pt").exists():
        return "started"
    return "todo"


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished cell's result in ``out_dir``, by file name."""
    return [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("*.json"))]
