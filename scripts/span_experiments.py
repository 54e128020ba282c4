"""What keeps Expire-Span's span penalty from erasing the memory before the task is learned: the
full corridor (seed 0) under each candidate, as a resumable grid (``agents.experiments``).

Each cell trains PPO with the corridor's preset and the named change for the first
``stop_steps`` of a 3M-step schedule, evaluates the final policy (1000 fresh episodes,
deterministic and sampled) and writes ``docs/results/span_penalty/<cell>.json``; finished cells
are skipped, killed ones resume from their checkpoint. TensorBoard curves (``memory/span_mean``,
``memory/span_mean_layer0``/``1``, ``memory/memory_size``, ``memory/alpha``) are in
``runs/span_penalty/<cell>/``. ``docs/results/span_penalty.md`` reads the results::

    python scripts/span_experiments.py                   # run or continue every cell
    python scripts/span_experiments.py --only budget20   # one cell
    python scripts/span_experiments.py --list
    python scripts/span_experiments.py --grid tasks      # each TASK_VARIANTS on every short task

The second grid (``--grid tasks``) asks whether a setting holds as a default: each variant of
``TASK_VARIANTS`` on the benchmark's short tasks at the benchmark's budgets, with the envs'
presets; each cell's learning curve keeps the spans (``memory/span_mean``) of every update.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.experiments import Cell, run_cell  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = "MemoRL/Corridor-v0"
TOTAL = 3_000_000
#: the corridor's PPO preset, written out so that these cells do not move if the preset does
PRESET = {"n_envs": 64, "ent_coef": 0.0005, "ent_start_step": 819_200}
PAPER = {"alpha": 5e-6}

#: name -> (policy kwargs, trainer options, stop_steps)
VARIANTS: dict[str, tuple[dict, dict, int]] = {
    "rmsprop_lr1e-4": (PAPER, {"optimizer": "rmsprop", "lr": 1e-4}, 1_433_600),
    "span_lr_scale0.1": ({**PAPER, "span_lr_scale": 0.1}, {}, 516_096),
    "span_eps1e-3": ({**PAPER, "span_eps": 1e-3}, {}, 847_872),
    "predictor_only_eps1e-3": (
        {**PAPER, "span_eps": 1e-3, "penalty_trains_memories": False}, {}, 659_456),
    "input_norm": ({**PAPER, "span_input_norm": True}, {}, 106_496),
    "input_norm_predictor_only_eps1e-3": (
        {**PAPER, "span_input_norm": True, "penalty_trains_memories": False, "span_eps": 1e-3},
        {}, 413_696),
    "budget20_fast": ({"memory_budget": 20.0, "budget_lr": 0.1, "alpha_max": 1e-3}, {}, 532_480),
    "budget20": ({"memory_budget": 20.0, "budget_lr": 0.02, "alpha_max": 5e-5}, {}, TOTAL),
    # the paper's penalty only after the task is learned (alpha = 0 learns it by ~400k steps):
    # the trainer's aux_start_step at the entropy bonus's start
    "after_learning_5e-6": (PAPER, {"aux_start_step": 819_200}, TOTAL),
    "after_learning_2e-6": ({"alpha": 2e-6}, {"aux_start_step": 819_200}, TOTAL),
}


#: the short tasks and their step budgets (the benchmark's, ``scripts/benchmark.py``), for the
#: question whether a setting holds as a default on every task (the env's own preset applies)
TASKS = {
    "MemoRL/Corridor-Short-v0": 262_144,
    "MemoRL/Portal-R5-v0": 1_048_576,
    "MemoRL/Instruction-Short-v0": 1_048_576,
    "MemoRL/TMaze-L50-v0": 262_144,
}

#: name -> (policy kwargs, trainer options), each trained on every task of TASKS
TASK_VARIANTS: dict[str, tuple[dict, dict]] = {
    # a budget below the initial memory (15 + 50) but reached slowly: alpha starts at 1e-9 and
    # grows by about 0.75% per update while the memory is above 40; initial spans of 50 reach
    # the T-Maze's cue from the junction
    "budget40_init0.25": ({"memory_budget": 40.0, "init_span_fraction": 0.25}, {}),
    # and an entropy bonus 20x PPO's default (0.0005)
    "budget40_init0.25_ent0.01": (
        {"memory_budget": 40.0, "init_span_fraction": 0.25}, {"ent_coef": 0.01}),
}


def cells(seed: int = 0, grid: str = "corridor") -> list[Cell]:
    if grid == "tasks":
        return [
            Cell(f"{env.split('/')[-1]}__{name}__seed{seed}", env, "expire_span", seed, steps,
                 policy_kwargs=pk, config=cfg)
            for name, (pk, cfg) in TASK_VARIANTS.items()
            for env, steps in TASKS.items()
        ]
    return [
        Cell(f"{name}__seed{seed}", ENV, "expire_span", seed, TOTAL, policy_kwargs=pk,
             config={**PRESET, **cfg}, stop_steps=stop)
        for name, (pk, cfg, stop) in VARIANTS.items()
    ]


def _selected(cell: Cell, only: list[str]) -> bool:
    """Whether ``cell`` is among ``--only``'s: its task among the tasks named (if any) and its
    variant among the variants named (if any)."""
    parts = cell.name.split("__")[:-1]  # [task,] variant
    variant, task = parts[-1], parts[0] if len(parts) > 1 else None
    tasks = [o for o in only if o in {env.split("/")[-1] for env in TASKS}]
    variants = [o for o in only if o not in tasks]
    return (not tasks or task in tasks) and (not variants or variant in variants)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def task_report(out_dir: Path, benchmark_dir: Path) -> str:
    """The task grid's table: each finished cell of TASK_VARIANTS, and the library's default
    Expire-Span on the same tasks and budgets where the benchmark has run it (``benchmark_dir``),
    with the final policy's success (deterministic / sampled, fresh episodes), the task's
    measures, the spans of each layer at the last update, the lowest mean span logged along the
    run and the memory size."""
    rows = []
    for env, steps in TASKS.items():
        tag = env.split("/")[-1]
        found = [("default (benchmark)", p) for p in
                 sorted(benchmark_dir.glob(f"{tag}__ppo__expire_span__{steps}__seed*.json"))]
        found += [(name, p) for name in TASK_VARIANTS
                  for p in sorted(out_dir.glob(f"{tag}__{name}__seed*.json"))]
        for name, path in found:
            r = json.loads(path.read_text())
            st, det, smp = r["final_training_stats"], r["deterministic"], r["sampled"]
            measures = ", ".join(f"{k} {v:.2f}" for k, v in det.get("metrics", {}).items()
                                 if k != "length")
            lows = [p["memory"]["span_mean"] for p in r.get("curve", [])
                    if "span_mean" in p.get("memory", {})]
            rows.append(
                f"| `{tag}` | {name} | {r['cell']['seed']} | {r['steps']:,} | "
                f"{det['success']:.3f} / {smp['success']:.3f} | {measures or '-'} | "
                f"{_fmt(st.get('memory/span_mean_layer0'))} / "
                f"{_fmt(st.get('memory/span_mean_layer1'))} | "
                f"{_fmt(min(lows) if lows else None)} | {det['memory_size']:.1f} | "
                f"{r['wall_s']:.0f} |")
    head = ["| task | setting | seed | steps | success, det. / sampled | measures (det.) "
            "| final spans, layer 0 / 1 | lowest mean span | memory size | wall (s) |",
            "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    return "\n".join(head + rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", choices=("corridor", "tasks"), default="corridor",
                        help="the full corridor's cells (VARIANTS) or each of TASK_VARIANTS on "
                        "every short task (TASKS) (%(default)s)")
    parser.add_argument("--only", nargs="*", default=None,
                        help="cells of these variants and/or tasks (e.g. budget20; "
                        "TMaze-L50-v0 budget40_init0.25)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=1000, help="evaluation episodes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (%(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/span_penalty")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs/span_penalty")
    parser.add_argument("--list", action="store_true", help="list the cells and stop")
    parser.add_argument("--report", action="store_true",
                        help="print the task grid's table (with the default's benchmark cells "
                        "from docs/results/benchmark/) and stop")
    args = parser.parse_args(argv)
    if args.report:
        print(task_report(args.out, ROOT / "docs/results/benchmark"), end="")
        return
    torch.set_num_threads(args.threads)
    for cell in cells(args.seed, args.grid):
        if args.only and not _selected(cell, args.only):
            continue
        if args.list:
            print(cell)
            continue
        print(f"cell {cell.name}", flush=True)
        r = run_cell(cell, args.out, args.runs, episodes=args.episodes)
        stats = r["final_training_stats"]
        print(f"  {r['steps']:,} steps, {r['wall_s']:.0f} s: deterministic success "
              f"{r['deterministic']['success']:.3f} (sampled {r['sampled']['success']:.3f}), "
              f"memory size {r['deterministic']['memory_size']:.1f}, final spans "
              f"{stats.get('memory/span_mean_layer0', float('nan')):.1f} / "
              f"{stats.get('memory/span_mean_layer1', float('nan')):.1f}", flush=True)


if __name__ == "__main__":
    main()
