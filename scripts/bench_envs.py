"""Env throughput: steps per second of each task, single and vectorised, against minigrid's.

Random actions (drawn beforehand, so the policy costs nothing), episodes reset as they end.
Each row is measured in the same run as minigrid's ``MiniGrid-MemoryS13Random-v0`` (the
memory task shipped with minigrid), so the ratio column compares like with like. Examples::

    python scripts/bench_envs.py
    python scripts/bench_envs.py --steps 50000 --num-envs 16 --out docs/env_throughput.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid-* ids)
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs import SHORT_NAMES  # noqa: E402

BASELINE = "MiniGrid-MemoryS13Random-v0"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--envs",
        nargs="+",
        default=[*SHORT_NAMES.values(), BASELINE],
        help="gymnasium ids to measure (default: the three tasks and minigrid's memory env)",
    )
    parser.add_argument(
        "--steps", type=int, default=20_000, help="env steps per measurement (20000)"
    )
    parser.add_argument(
        "--num-envs", type=int, default=16, help="sub-envs of the SyncVectorEnv (16)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of envs and actions (0)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to FILE")
    return parser.parse_args(argv)


def bench_single(env_id: str, steps: int, seed: int) -> float:
    """Steps per second of one env (resets included)."""
    env = gym.make(env_id)
    actions = np.random.default_rng(seed).integers(env.action_space.n, size=steps)
    env.reset(seed=seed)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(int(a))
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def bench_vector(env_id: str, steps: int, num_envs: int, seed: int) -> float:
    """Env steps per second of a SyncVectorEnv of ``num_envs`` envs (autoreset included)."""
    vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync")
    n_steps = max(1, steps // num_envs)
    n_actions = vec.single_action_space.n
    actions = np.random.default_rng(seed).integers(n_actions, size=(n_steps, num_envs))
    vec.reset(seed=seed)
    start = time.perf_counter()
    for a in actions:
        vec.step(a)
    elapsed = time.perf_counter() - start
    vec.close()
    return n_steps * num_envs / elapsed


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    rows = []
    for env_id in args.envs:
        single = bench_single(env_id, args.steps, args.seed)
        vector = bench_vector(env_id, args.steps, args.num_envs, args.seed)
        rows.append((env_id, single, vector))
        print(f"{env_id}: {single:,.0f} steps/s single, {vector:,.0f} vectorised", flush=True)
    base = {r[0]: r for r in rows}.get(BASELINE)
    lines = [
        f"Env steps per second, random actions, {args.steps} steps, SyncVectorEnv of "
        f"{args.num_envs}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}.",
        "",
        "| env | single env (steps/s) | SyncVectorEnv (steps/s) | single vs minigrid |",
        "|---|---:|---:|---:|",
    ]
    for env_id, single, vector in rows:
        ratio = f"{single / base[1]:.1f}x" if base else "n/a"
        lines.append(f"| `{env_id}` | {single:,.0f} | {vector:,.0f} | {ratio} |")
    table = "\n".join(lines)
    print()
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
        print(f"\nwrote {args.out}")
    return table


if __name__ == "__main__":
    main()
