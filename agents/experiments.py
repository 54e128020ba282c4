"""Resumable experiment grids: each cell one training run, its result one JSON file.

A cell is trained with a checkpoint of its own, so a grid stopped at any point (a killed process,
a session's end) continues where it was: finished cells (their JSON exists) are skipped, a cell
whose checkpoint exists is resumed from it. The final policy of a cell is evaluated on fresh
episodes, acting deterministically and by sampling, and the result records both with the memory
size the policy used (``aux["memory_size"]``: memories attended per step and layer).

Used by ``scripts/memory_sweep.py`` (success against memory size, the Expire-Span paper's
figure 4) and ``scripts/benchmark.py``-style grids.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .algorithms import ALGORITHMS
from .evaluation import evaluate

__all__ = ["Cell", "load_results", "run_cell"]


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
    checkpoint live in ``runs_dir/<name>/``.
    """
    out = Path(out_dir) / f"{cell.name}.json"
    if out.exists():
        return json.loads(out.read_text())
    cls = ALGORITHMS[cell.algo]
    run_dir = Path(runs_dir) / cell.name
    ckpt = run_dir / "checkpoint.pt"
    t0 = time.perf_counter()
    wall_before = 0.0
    if ckpt.exists():
        model = cls.load(ckpt)
        wall_before = float(json.loads((run_dir / "wall.json").read_text())["wall_s"]) if (
            run_dir / "wall.json").exists() else 0.0
        reset = False
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        model = cls(cell.policy, cell.env, seed=cell.seed, tensorboard_log=None,
                    checkpoint_path=ckpt, policy_kwargs=dict(cell.policy_kwargs), **cell.config)
        model.log_dir = run_dir
        reset = True

    stop = cell.stop_steps or cell.total_steps

    def keep_wall(agent: Any) -> bool:
        (run_dir / "wall.json").write_text(
            json.dumps({"wall_s": wall_before + time.perf_counter() - t0,
                        "steps": agent.num_timesteps}))
        return agent.num_timesteps < stop

    if model.num_timesteps < stop:
        model.learn(cell.total_steps, progress_bar=progress_bar, callback=keep_wall,
                    reset_num_timesteps=reset)
    wall = wall_before + time.perf_counter() - t0
    result: dict[str, Any] = {"cell": asdict(cell), "steps": model.num_timesteps,
                              "wall_s": wall, "threads": torch.get_num_threads(),
                              "final_training_stats": dict(model.last_stats)}
    for mode, deterministic in (("deterministic", True), ("sampled", False)):
        ev = evaluate(model, cell.env, episodes, n_envs=min(eval_envs, episodes),
                      deterministic=deterministic)
        result[mode] = {
            "success": float(ev["success"].mean()),
            "return": float(ev["return"].mean()),
            "length": float(ev["length"].mean()),
            "memory_size": float(ev["memory_size"].mean()),
            "episodes": episodes,
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    tmp.replace(out)
    return result


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished cell's result in ``out_dir``, by file name."""
    return [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("*.json"))]
