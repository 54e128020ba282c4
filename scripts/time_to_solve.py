"""Time to solve: how long the default command takes to reach a success rate, per seed.

Each seed trains the agent ``python scripts/train_agent.py --env ENV`` builds (the default policy,
PPO and the env's preset; ``--set`` overrides options) for at most ``--total-steps`` steps (the
learning rate's schedule spans them, as in the default command), evaluating the policy every
``--eval-every`` steps on ``--episodes`` fresh episodes (deterministic; env seeds from 10000,
unseen in training), and stops at the first evaluation at or above ``--success``. The result
(steps and training wall time at that evaluation, evaluations excluded, and every evaluation) is
written to ``--out-dir/<name>.json``; a stopped run resumes from its checkpoint (in
``--runs-dir``) and keeps its result so far, after each evaluation, in
``--out-dir/<name>.stopped.json`` (removed when it finishes), finished seeds are skipped, and
``--report`` writes the table. Example::

    taskset -c 0 python scripts/time_to_solve.py --env corridor --seeds 0 1
    python scripts/time_to_solve.py --env corridor --seeds 0 1 --report
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents import ALGORITHMS, TrainingInterrupted, resolve_env  # noqa: E402
from agents.callbacks import EvalCallback  # noqa: E402
from agents.cli import OneLineParser, parse_kv  # noqa: E402
from policies import default_policy  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = OneLineParser(prog=Path(__file__).name, description=__doc__.split("\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--env", default="corridor", help="env short name or id (%(default)s)")
    p.add_argument("--policy", default=default_policy(), help="memory (%(default)s)")
    p.add_argument("--algo", default="ppo", choices=sorted(ALGORITHMS), help="(%(default)s)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    p.add_argument("--total-steps", type=int, default=3_000_000,
                   help="most steps per seed; the schedules span them (%(default)s)")
    p.add_argument("--eval-every", type=int, default=196_608, help="steps (%(default)s)")
    p.add_argument("--episodes", type=int, default=1000, help="per evaluation (%(default)s)")
    p.add_argument("--success", type=float, default=0.95, help="target rate (%(default)s)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", default=None,
                   help="trainer options over the defaults and the preset")
    p.add_argument("--policy-kwargs", nargs="*", metavar="KEY=VALUE", default=None,
                   help="memory hyperparameters over the preset's")
    p.add_argument("--tag", default="default", help="name of this configuration (%(default)s)")
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs/results/time_to_solve")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs/time_to_solve")
    p.add_argument("--report", action="store_true", help="only write the table of results")
    return p.parse_args(argv)


def cell_name(args: argparse.Namespace, seed: int) -> str:
    env = resolve_env(args.env).replace("/", "_")
    return f"{env}-{args.algo}-{args.policy}-{args.tag}-seed{seed}"


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Train (or resume) one seed to the target and return its result (also written)."""
    name = cell_name(args, seed)
    out = args.out_dir / f"{name}.json"
    stopped = args.out_dir / f"{name}.stopped.json"  # (the result so far of a run not finished)
    if out.exists():
        return json.loads(out.read_text())
    run_dir = args.runs_dir / name
    ckpt, partial = run_dir / "checkpoint.pt", run_dir / "progress.json"
    cls = ALGORITHMS[args.algo]
    before: dict[str, Any] = {"history": [], "train_wall_s": 0.0}
    if ckpt.exists():
        model = cls.load(ckpt)
        if partial.exists():
            before = json.loads(partial.read_text())
        fresh = False
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        model = cls(args.policy, args.env, seed=seed, tensorboard_log=None, checkpoint_path=ckpt,
                    policy_kwargs=parse_kv(args.policy_kwargs, "--policy-kwargs"),
                    **parse_kv(args.set, "--set"))
        model.log_dir = run_dir
        fresh = True
    evals = EvalCallback(args.eval_every, args.episodes, args.success, n_envs=100)
    t0, offset = time.perf_counter(), before["train_wall_s"]
    history: list[dict[str, Any]] = list(before["history"])

    def keep(agent: Any) -> bool:
        go_on = evals(agent)
        evaluated = len(history) - len(before["history"]) < len(evals.history)
        if evaluated:
            entry = dict(evals.history[-1])
            entry["train_wall_s"] += offset
            history.append(entry)
            print(f"  {name}: step {entry['step']:,}: success {entry['success']:.3f} "
                  f"({entry['train_wall_s']:.0f} s of training)", flush=True)
        partial.write_text(json.dumps({"history": history, "train_wall_s": offset + (
            time.perf_counter() - t0) - evals.eval_s}))
        if evaluated:  # (the result so far, kept beside the finished ones)
            write(stopped, result_of(args, seed, agent.num_timesteps, history, stopped=True))
        return go_on

    last = history[-1] if history else None
    if last is None or last["success"] < args.success:
        model.learn(args.total_steps, progress_bar=False, callback=keep,
                    reset_num_timesteps=fresh)
    result = result_of(args, seed, model.num_timesteps, history)
    write(out, result)
    stopped.unlink(missing_ok=True)
    return result


def result_of(args: argparse.Namespace, seed: int, steps: int, history: list[dict[str, Any]],
              stopped: bool = False) -> dict[str, Any]:
    """One seed's result after ``steps`` steps (``stopped``: a run not finished yet)."""
    hit = next((h for h in history if h["success"] >= args.success), None)
    return {
        "env": resolve_env(args.env), "policy": args.policy, "algo": args.algo, "seed": seed,
        "tag": args.tag, "set": args.set or [],
        "policy_kwargs": args.policy_kwargs or [], "target_success": args.success,
        "episodes": args.episodes, "total_steps": args.total_steps,
        "solved": hit is not None,
        "steps_to_solve": hit["step"] if hit else None,
        "train_wall_s_to_solve": hit["train_wall_s"] if hit else None,
        "steps": steps, "threads": torch.get_num_threads(),
        **({"stopped": True} if stopped else {}),
        "evaluations": history,
    }


def write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


def report(args: argparse.Namespace) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(args.out_dir.glob("*.json"))]
    lines = ["Time to solve: training until the deterministic success over fresh episodes "
             "reaches the target (`python scripts/time_to_solve.py`; wall time of training, "
             "evaluations excluded, one CPU thread)", "",
             "| env | algo | policy | config | seed | target | solved at (steps) | "
             "wall time to solve | success then (episodes) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        best = max((h["success"] for h in r["evaluations"]), default=float("nan"))
        hit = next((h for h in r["evaluations"] if h["success"] >= r["target_success"]), None)
        missed = (f"stopped at {r['steps']:,} (of {r['total_steps']:,}; resumable)"
                  if r.get("stopped") else f"not in {r['steps']:,}")
        lines.append(
            f"| `{r['env']}` | {r['algo']} | {r['policy']} | {r['tag']} | {r['seed']} | "
            f"{r['target_success']} | "
            + (f"{hit['step']:,} | {hit['train_wall_s'] / 60:.1f} min | "
               f"{hit['success']:.3f} ({r['episodes']}) |" if hit else
               f"{missed} | | best {best:.3f} |"))
    table = "\n".join(lines)
    (args.out_dir.parent / "time_to_solve.md").write_text(table + "\n")
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.report:
        torch.set_num_threads(1)
        for seed in args.seeds:
            try:
                r = run_seed(args, seed)
            except TrainingInterrupted as stop:
                print(f"{stop}; run the same command again to continue", file=sys.stderr)
                return stop.exit_status
            print(f"seed {seed}: " + (f"solved at {r['steps_to_solve']:,} steps, "
                                      f"{r['train_wall_s_to_solve']:.0f} s" if r["solved"]
                                      else "not solved"), flush=True)
    print(report(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
