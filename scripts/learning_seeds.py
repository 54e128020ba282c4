"""How reliably PPO learns a task: train one run per seed and report each final policy's success.

Each seed trains PPO with the defaults (plus ``--set`` overrides) for ``--total-steps`` steps,
then the final policy acts deterministically over ``--episodes`` fresh episodes (env seeds from
10000, unseen in training). The table gives each seed's success, the training success curve's
first step at or above 0.9 and the wall time. Examples::

    python scripts/learning_seeds.py --seeds 0 1 2 3 4 5 6 7
    python scripts/learning_seeds.py --seeds 0 1 2 3 --set norm_adv=True ent_coef=0.001
    python scripts/learning_seeds.py --policy none --seeds 0 1 2 --out docs/results/none.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import PPO  # noqa: E402
from agents.cli import OneLineParser, parse_kv  # noqa: E402
from agents.config import replace_config  # noqa: E402
from agents.evaluation import success_rate  # noqa: E402
from agents.validation import check_int  # noqa: E402
from policies import available_policies, default_policy  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(
        prog=Path(__file__).name, description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--env", default="MemoRL/Corridor-L10-v0", help="env id (%(default)s)")
    parser.add_argument("--policy", default=default_policy(), choices=available_policies(),
                        help="memory of the policy (%(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3],
                        help="training seeds (0 1 2 3)")
    parser.add_argument("--total-steps", type=int, default=98_304,
                        help="env steps per run (%(default)s)")
    parser.add_argument("--episodes", type=int, default=200,
                        help="evaluation episodes per run (%(default)s)")
    parser.add_argument("--set", nargs="*", metavar="KEY=VALUE", default=None,
                        help="PPO options that replace the defaults, e.g. n_envs=16 lr=1e-3")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (%(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to FILE")
    args = parser.parse_args(argv)
    try:
        for name in ("total_steps", "episodes", "threads"):
            check_int(f"--{name.replace('_', '-')}", getattr(args, name), ge=1)
        args.overrides = parse_kv(args.set, "--set")
        replace_config(PPO.config_class(), **args.overrides).validate()
    except ValueError as err:
        parser.error(str(err))
    return args


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, float | int | None]:
    curve: list[tuple[int, float]] = []

    def track(model: PPO) -> None:
        if "charts/success_rate" in model.last_stats:
            curve.append((model.num_timesteps, model.last_stats["charts/success_rate"]))

    t0 = time.perf_counter()
    model = PPO(args.policy, args.env, tensorboard_log=None, seed=seed, **args.overrides)
    model.learn(args.total_steps, progress_bar=False, callback=track)
    wall = time.perf_counter() - t0
    first = next((step for step, rate in curve if rate >= 0.9), None)
    return {"seed": seed, "success": success_rate(model, args.env, args.episodes),
            "first_09": first, "wall": wall}


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = " ".join(f"{k}={v}" for k, v in args.overrides.items()) or "defaults"
    lines = [
        f"PPO ({settings}), `{args.policy}` on `{args.env}`, {args.total_steps} steps per seed; "
        f"success of the final policy acting deterministically over {args.episodes} fresh "
        "episodes.",
        "",
        "| seed | success | first training success >= 0.9 at step | wall time (s) |",
        "|---:|---:|---:|---:|",
    ]
    rows = []
    for seed in args.seeds:
        r = run_seed(args, seed)
        rows.append(r)
        first = "never" if r["first_09"] is None else f"{r['first_09']:,}"
        lines.append(f"| {seed} | {r['success']:.3f} | {first} | {r['wall']:.0f} |")
        print(lines[-1], flush=True)
    ok = sum(r["success"] >= 0.95 for r in rows)
    lines += ["", f"{ok} of {len(rows)} seeds at >= 0.95 deterministic success."]
    table = "\n".join(lines)
    print()
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"`python scripts/learning_seeds.py {' '.join(argv or sys.argv[1:])}`"
                            f"\n\n{table}\n")
        print(f"\nwrote {args.out}")
    return table


if __name__ == "__main__":
    main()
