"""The benchmark: every memory on every task's short variant, several seeds, one resumable grid.

Each cell (a task, an algorithm, a memory, a step budget and a seed) is one training run with the
task's preset (``agents/presets.py``), evaluated at the end over fresh episodes acting
deterministically and by sampling (success, return, the task's own measures such as the
Portal's rooms reached); its result is one JSON file under ``--out`` holding the evaluations, the
steps, the wall time and the learning curve (mean training return and success of the episodes
ended in each update). Finished cells are skipped and a killed cell resumes from its checkpoint
(``--runs/<cell>/``, ``agents.experiments``), so the grid can be filled over several runs and
machines. ``--report`` writes the tables (mean and spread over seeds per memory and task) to
``--md`` and a learning-curve picture per task to ``--images``::

    python scripts/benchmark.py --dry-run                      # the cells, and which are done
    python scripts/benchmark.py                                # run or continue every cell
    python scripts/benchmark.py --tasks portal --policies expire_span none --limit 2
    python scripts/benchmark.py --report

The grid: PPO x every registered memory x every task, and A2C (the Expire-Span paper's
algorithm) with Expire-Span on the corridor; ``--policies`` chooses the memories of both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import ALGORITHMS  # noqa: E402
from agents.cli import OneLineParser, parse_kv  # noqa: E402
from agents.config import replace_config  # noqa: E402
from agents.experiments import Cell, cell_status, load_results, run_cell  # noqa: E402
from agents.validation import check_int  # noqa: E402
from policies import available_policies  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Task(NamedTuple):
    """One task of the benchmark: its env id and its default step budget."""

    env: str
    steps: int


#: The tasks (short names for ``--tasks``), in table order. The budgets are multiples of PPO's
#: 2048 steps per update (32 envs x 64 steps).
TASKS: dict[str, Task] = {
    "corridor": Task("MemoRL/Corridor-Short-v0", 262_144),
    "portal": Task("MemoRL/Portal-R5-v0", 1_048_576),
    "instruction": Task("MemoRL/Instruction-Short-v0", 1_048_576),
    "tmaze": Task("MemoRL/TMaze-L50-v0", 262_144),
}
#: The memories in table order (any other registered one after them).
ORDER = ("expire_span", "trxl", "rmt", "memformer", "rehearsal", "lstm", "gru", "none")
#: A2C's part of the grid (without ``--policies``): its tasks and memories.
A2C_TASKS = ("corridor",)
A2C_POLICIES = ("expire_span",)


def memories() -> list[str]:
    """Every registered memory, in table order."""
    names = available_policies()
    return [n for n in ORDER if n in names] + [n for n in names if n not in ORDER]


def registered(env_id: str) -> bool:
    import gymnasium as gym

    import envs  # noqa: F401  (registers our tasks)

    return env_id in gym.registry


def parse_steps(items: list[str] | None, tasks: list[str]) -> dict[str, int]:
    """``--steps``: one budget for every task (``N``) or ``TASK=N`` entries over the defaults."""
    budgets = {t: TASKS[t].steps for t in tasks}
    for item in items or []:
        task, sep, value = item.rpartition("=")
        if sep and task not in TASKS:
            raise ValueError(f"--steps {item}: unknown task {task!r}; tasks: {', '.join(TASKS)}")
        try:
            steps = int(value.replace("_", ""))
        except ValueError:
            raise ValueError(f"--steps entries must be N or TASK=N, got {item!r}") from None
        check_int("--steps", steps, ge=1)
        for t in ([task] if sep else tasks):
            if t in budgets:
                budgets[t] = steps
    return budgets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog=Path(__file__).name, description=__doc__.split("\n")[0],
                           epilog=__doc__.split("\n\n", 1)[1],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS),
                        help=f"tasks (all: {' '.join(TASKS)}; the T-Maze only where its id is "
                             "registered)")
    parser.add_argument("--policies", nargs="+", choices=memories(), default=None,
                        help="memories (default: every registered one with PPO, "
                             f"{' '.join(A2C_POLICIES)} with A2C)")
    parser.add_argument("--algo", nargs="+", choices=list(ALGORITHMS), default=list(ALGORITHMS),
                        help="algorithms (default: ppo a2c; A2C on "
                             f"{' '.join(A2C_TASKS)} only)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="training seeds (0 1 2)")
    parser.add_argument("--steps", nargs="+", metavar="N|TASK=N", default=None,
                        help="step budget of every task, or of the tasks named (defaults: "
                             + ", ".join(f"{k}={t.steps}" for k, t in TASKS.items()) + ")")
    parser.add_argument("--set", nargs="*", metavar="KEY=VALUE", default=None,
                        help="trainer options over the presets, for every cell (part of each "
                             "cell's settings, recorded in its JSON)")
    parser.add_argument("--episodes", type=int, default=500,
                        help="evaluation episodes per mode (%(default)s)")
    parser.add_argument("--eval-envs", type=int, default=100,
                        help="parallel evaluation envs (%(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (%(default)s)")
    parser.add_argument("--limit", type=int, default=None,
                        help="run at most N cells that are not done, then stop")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the cells and which are done; train nothing")
    parser.add_argument("--report", action="store_true",
                        help="write the tables and pictures from the finished cells; train "
                             "nothing")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/benchmark",
                        help="one JSON per finished cell (%(default)s)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs/benchmark",
                        help="checkpoints of the cells (%(default)s)")
    parser.add_argument("--md", type=Path, default=ROOT / "docs/results/benchmark.md",
                        help="the report's tables (%(default)s)")
    parser.add_argument("--images", type=Path, default=ROOT / "docs/images",
                        help="the report's learning curves, benchmark_<task>.png (%(default)s)")
    args = parser.parse_args(argv)
    try:
        for name in ("episodes", "eval_envs", "threads"):
            check_int(f"--{name.replace('_', '-')}", getattr(args, name), ge=1)
        if args.limit is not None:
            check_int("--limit", args.limit, ge=1)
        for seed in args.seeds:
            check_int("--seeds", seed, ge=0)
        args.budgets = parse_steps(args.steps, args.tasks)
        args.overrides = parse_kv(args.set, "--set")
        for algo in args.algo:
            replace_config(ALGORITHMS[algo].config_class(), **args.overrides).validate()
    except ValueError as err:
        parser.error(str(err))
    return args


def cells(args: argparse.Namespace) -> list[Cell]:
    """The grid: tasks x algorithms x memories x seeds, in table order."""
    out = []
    for task in args.tasks:
        env = TASKS[task].env
        if not registered(env):  # (a task of the table that this version does not register)
            continue
        steps = args.budgets[task]
        for algo in args.algo:
            if algo != "ppo" and task not in A2C_TASKS:
                continue
            default = memories() if algo == "ppo" else list(A2C_POLICIES)
            for policy in args.policies or default:
                for seed in args.seeds:
                    name = f"{env.split('/')[-1]}__{algo}__{policy}__{steps}__seed{seed}"
                    out.append(Cell(name, env, policy, seed, steps, algo=algo,
                                    config=dict(args.overrides)))
    return out


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def describe(result: dict[str, Any]) -> str:
    """One line of a finished cell's evaluations."""
    parts = []
    for mode in ("deterministic", "sampled"):
        ev = result[mode]
        measures = "".join(f", {k} {_fmt(v, 2)}" for k, v in ev.get("metrics", {}).items())
        parts.append(f"{mode} success {_fmt(ev['success'])}, return {_fmt(ev['return'])}"
                     f"{measures}")
    return f"{result['steps']:,} steps, {result['wall_s']:.0f} s; " + "; ".join(parts)


def run(args: argparse.Namespace) -> None:
    grid = cells(args)
    ran = 0
    for i, cell in enumerate(grid, 1):
        head = f"[{i}/{len(grid)}] {cell.name}"
        status = cell_status(cell, args.out, args.runs)
        if status == "done":
            result = load_results_of(cell, args.out)
            print(f"{head}: done, skipped ({describe(result)})", flush=True)
            continue
        if args.limit is not None and ran >= args.limit:
            print(f"{head}: not run (--limit {args.limit})", flush=True)
            continue
        print(f"{head}: {'resuming' if status == 'started' else 'training'}", flush=True)
        result = run_cell(cell, args.out, args.runs, episodes=args.episodes,
                          eval_envs=args.eval_envs)
        ran += 1
        print(f"{head}: {describe(result)}", flush=True)


def load_results_of(cell: Cell, out_dir: Path) -> dict[str, Any]:
    """A finished cell's result; refused when it was run with other settings (its name is the
    same, its options are not: pass the same ``--set``, or another ``--out``)."""
    path = out_dir / f"{cell.name}.json"
    result = json.loads(path.read_text())
    if result["cell"] != asdict(cell):
        raise SystemExit(f"benchmark.py: {path} was run with other settings ({result['cell']}) "
                         f"than this cell ({asdict(cell)}); use the same --set or another --out")
    return result


def dry_run(args: argparse.Namespace) -> None:
    grid = cells(args)
    counts: dict[str, int] = {}
    for i, cell in enumerate(grid, 1):
        status = cell_status(cell, args.out, args.runs)
        counts[status] = counts.get(status, 0) + 1
        print(f"[{i}/{len(grid)}] {cell.name}: {status}")
    print(f"{len(grid)} cells: " + ", ".join(f"{counts.get(s, 0)} {s}"
                                             for s in ("done", "started", "todo")))


# the report


#: measures derived from two of a task's: name -> (numerator, denominator), a ratio of the means
#: (the fraction pooled over the episodes)
RATIOS: dict[str, tuple[str, str]] = {
    "executed": ("instructions_done", "instructions_given"),
}


def _with_ratios(metrics: dict[str, float | None]) -> dict[str, float | None]:
    out = dict(metrics)
    for name, (num, den) in RATIOS.items():
        if metrics.get(num) is not None and metrics.get(den):
            out[name] = metrics[num] / metrics[den]
    return out


def _spread(values: list[float | None]) -> str:
    """``mean ± standard deviation`` over seeds (the sample deviation; the mean alone for one)."""
    xs = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(xs) == 0:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{xs.mean():.3f} ± {xs.std(ddof=1):.3f}"


def _groups(results: list[dict[str, Any]]) -> dict[tuple[str, str, str, int], list[dict]]:
    """Results by (env, algo, policy, steps), seeds together."""
    groups: dict[tuple[str, str, str, int], list[dict]] = {}
    for r in results:
        c = r["cell"]
        groups.setdefault((c["env"], c["algo"], c["policy"], c["total_steps"]), []).append(r)
    return groups


def _row_order(key: tuple[str, str, str, int]) -> tuple:
    env, algo, policy, steps = key
    envs = [t.env for t in TASKS.values()]
    policies = memories()
    return (envs.index(env) if env in envs else len(envs), env, algo != "ppo", algo,
            policies.index(policy) if policy in policies else len(policies), policy, steps)


def report_tables(results: list[dict[str, Any]], episodes_note: str) -> str:
    groups = _groups(results)
    keys = sorted(groups, key=_row_order)
    lines = [
        "## Overview",
        "",
        "Deterministic success of the final policy, mean ± standard deviation over seeds "
        f"({episodes_note}).",
        "",
    ]
    envs = list(dict.fromkeys(k[0] for k in keys))
    rows = sorted(dict.fromkeys((k[1], k[2]) for k in keys),
                  key=lambda row: _row_order(("", *row, 0))[2:])
    lines += ["| algo | memory | " + " | ".join(f"`{e}`" for e in envs) + " |",
              "|---|---|" + "---:|" * len(envs)]
    for algo, policy in rows:
        cells = []
        for env in envs:
            found = [groups[k] for k in keys if k[:3] == (env, algo, policy)]
            cells.append(" / ".join(_spread([r["deterministic"]["success"] for r in g])
                                    for g in found) or "")
        lines.append(f"| {algo} | {policy} | " + " | ".join(cells) + " |")
    for env in envs:
        env_keys = [k for k in keys if k[0] == env]
        names = list(dict.fromkeys(n for k in env_keys for r in groups[k]
                                   for n in _with_ratios(r["deterministic"].get("metrics", {}))))
        head = ["algo", "memory", "seeds", "steps", "success", "return",
                *(f"`{n}`" for n in names), "success (sampled)", "return (sampled)",
                *(f"`{n}` (sampled)" for n in names), "training wall time (s)"]
        lines += ["", f"## `{env}`", "",
                  "Final policy, deterministic unless marked sampled; mean ± standard deviation "
                  "over seeds.", "",
                  "| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
        for k in env_keys:
            g = groups[k]
            det = [{**r["deterministic"],
                    "metrics": _with_ratios(r["deterministic"].get("metrics", {}))} for r in g]
            smp = [{**r["sampled"], "metrics": _with_ratios(r["sampled"].get("metrics", {}))}
                   for r in g]
            row = [k[1], k[2], ", ".join(str(r["cell"]["seed"]) for r in g), f"{k[3]:,}",
                   _spread([d["success"] for d in det]), _spread([d["return"] for d in det]),
                   *(_spread([d.get("metrics", {}).get(n) for d in det]) for n in names),
                   _spread([s["success"] for s in smp]), _spread([s["return"] for s in smp]),
                   *(_spread([s.get("metrics", {}).get(n) for s in smp]) for n in names),
                   f"{np.mean([r['wall_s'] for r in g]):.0f}"]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _mean_curve(runs: list[dict[str, Any]], key: str, grid: np.ndarray) -> np.ndarray | None:
    """The seeds' learning curves of ``key`` on ``grid`` (interpolated), averaged over the
    seeds that cover each step."""
    curves = []
    for r in runs:
        pts = [(p["step"], p[key]) for p in r.get("curve", []) if key in p]
        if len(pts) >= 2:
            steps, values = map(np.array, zip(*pts, strict=True))
            curves.append(np.interp(grid, steps, values, left=np.nan, right=np.nan))
    if not curves:
        return None
    stack = np.array(curves)
    covered = np.isfinite(stack).any(axis=0)
    out = np.full(len(grid), np.nan)
    out[covered] = np.nanmean(stack[:, covered], axis=0)
    return out


#: grid points (of 200) of the moving average that smooths the pictures' curves
SMOOTH = 9


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    """A centred moving average of ``width`` points, over the finite values only."""
    ok = np.isfinite(values)
    kernel = np.ones(width)
    num = np.convolve(np.where(ok, values, 0.0), kernel, mode="same")
    den = np.convolve(ok.astype(float), kernel, mode="same")
    return np.where(ok, num / np.maximum(den, 1.0), np.nan)


def plot_curves(results: list[dict[str, Any]], images: Path) -> list[Path]:
    """One picture per task: training return and success against steps, a line per algorithm
    and memory (the mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(results)
    written = []
    for env in dict.fromkeys(k[0] for k in sorted(groups, key=_row_order)):
        keys = [k for k in sorted(groups, key=_row_order) if k[0] == env]
        top = max(k[3] for k in keys)
        grid = np.linspace(0, top, 200)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for k in keys:
            label = f"{k[2]}" if k[1] == "ppo" else f"{k[2]} ({k[1]})"
            if len({kk[3] for kk in keys}) > 1:
                label += f", {k[3]:,} steps"
            for ax, key in zip(axes, ("return", "success"), strict=True):
                curve = _mean_curve(groups[k], key, grid)
                if curve is not None:
                    curve = _smooth(curve, SMOOTH)
                    ax.plot(grid, curve, label=label, lw=1.2,
                            ls="-" if k[1] == "ppo" else "--")
        for ax, key in zip(axes, ("mean episode return", "success rate"), strict=True):
            ax.set_xlabel("env steps")
            ax.set_ylabel(f"training {key}")
            ax.grid(alpha=0.3)
        axes[1].set_ylim(-0.02, 1.02)
        if axes[0].get_lines() or axes[1].get_lines():
            (axes[1] if axes[1].get_lines() else axes[0]).legend(fontsize=8, loc="best")
        seeds = sorted({r["cell"]["seed"] for k in keys for r in groups[k]})
        fig.suptitle(f"{env}: the episodes ended in each update, mean over seeds "
                     f"{', '.join(map(str, seeds))} (moving average of {SMOOTH} of 200 points)")
        fig.tight_layout()
        images.mkdir(parents=True, exist_ok=True)
        path = images / f"benchmark_{env.split('/')[-1]}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def report(args: argparse.Namespace) -> str:
    grid = cells(args)
    wanted = {c.name for c in grid}
    results = [r for r in load_results(args.out) if r["cell"]["name"] in wanted]
    episodes = sorted({r["deterministic"]["episodes"] for r in results})
    note = f"{'/'.join(map(str, episodes)) or 'no'} fresh episodes per run and mode"
    missing = [c.name for c in grid if c.name not in {r["cell"]["name"] for r in results}]
    head = [
        "# Benchmark: every memory on every task",
        "",
        "Written by `python scripts/benchmark.py --report` from the results in "
        f"`{_rel(args.out)}/` (one JSON per run: `python scripts/benchmark.py` trains and "
        "evaluates the cells, resumably). Each run trains with the task's preset for the steps "
        "given; its final policy is evaluated over fresh episodes (env seeds from 10000, unseen "
        "in training) acting deterministically and by sampling. The columns in `code` are the "
        "task's own measures, the envs' episode-end `info` entries averaged over the episodes: "
        "`rooms_reached` (Portal: the highest room reached), `instructions_given`, "
        "`instructions_done`, `instructions_failed` (Instruction: per episode; `executed` is "
        "done / given over all the episodes), `length` "
        "(Corridor: the corridor's length, not the episode's).",
        "",
        f"Cells finished: {len(results)} of {len(grid)}"
        + (f" (not yet run: {', '.join(missing)})." if 0 < len(missing) <= 10 else "."),
        "",
    ]
    body = report_tables(results, note) if results else "No finished cells yet."
    pictures = plot_curves(results, args.images) if results else []
    figs = "".join(f"\n\n![{p.stem}]({_rel(p, args.md.parent)})" for p in pictures)
    text = "\n".join(head) + "\n" + body + figs + "\n"
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(text)
    return text


def _rel(path: Path, start: Path = ROOT) -> str:
    """``path`` relative to ``start`` when it lies inside the repository, else absolute."""
    path = path.resolve()
    if not path.is_relative_to(ROOT.resolve()):
        return str(path)
    return os.path.relpath(path, start.resolve())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.dry_run:
        dry_run(args)
    elif args.report:
        print(report(args))
        print(f"wrote {args.md}")
    else:
        run(args)


if __name__ == "__main__":
    main()
