"""Scores the scripted policies of each task: the oracle (remembers everything) and the memoryless
one, over N episodes, as a Markdown table.

    python scripts/eval_scripted.py --episodes 100 --out docs/results/scripted.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402  (registers MemoRL/*)
from envs.oracles import make_scripted_policy  # noqa: E402

DEFAULT_ENVS = [
    "MemoRL/Corridor-v0",
    "MemoRL/Corridor-L10-v0",
    "MemoRL/Portal-R5-v0",
    "MemoRL/Portal-v0",
    "MemoRL/Instruction-Short-v0",
    "MemoRL/Instruction-v0",
    "MemoRL/TMaze-L50-v0",
    "MemoRL/TMaze-L1500-v0",
]


def run(env_id: str, memory: bool, episodes: int, seed: int) -> dict[str, float]:
    """Success rate, mean return and task metrics of one scripted policy over ``episodes``."""
    env = gym.make(env_id)
    policy = make_scripted_policy(env, memory=memory, seed=seed)
    success, returns, rooms, given, done = [], [], [], 0, 0
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
        policy.reset()
        total, ended = 0.0, False
        while not ended:
            obs, reward, terminated, truncated, info = env.step(policy.act(obs))
            total += float(reward)
            ended = terminated or truncated
        success.append(bool(info.get("success", False)))
        returns.append(total)
        if "rooms_reached" in info:
            rooms.append(info["rooms_reached"])
        given += info.get("instructions_given", 0)
        done += info.get("instructions_done", 0)
    out = {"success": float(np.mean(success)), "return": float(np.mean(returns))}
    if rooms:
        out["rooms"] = float(np.mean(rooms))
    if given:
        out["executed"] = done / given
    return out


def describe(r: dict[str, float]) -> str:
    parts = [f"success {r['success']:.2f}", f"return {r['return']:.2f}"]
    if "rooms" in r:
        parts.append(f"rooms reached {r['rooms']:.1f}")
    if "executed" in r:
        parts.append(f"instructions executed {r['executed']:.0%}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--envs", nargs="+", default=DEFAULT_ENVS, help="registered ids")
    parser.add_argument("--episodes", type=int, default=200, help="episodes per policy and env")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    for env_id in args.envs:
        envs.resolve_env_id(env_id)  # a clear error for an unknown id, before any work
    lines = [
        "| task | oracle (remembers) | memoryless | episodes |",
        "|---|---|---|---:|",
    ]
    for env_id in tqdm(args.envs, desc="tasks", file=sys.stderr):
        oracle = run(env_id, True, args.episodes, args.seed)
        blind = run(env_id, False, args.episodes, args.seed)
        lines.append(f"| `{env_id}` | {describe(oracle)} | {describe(blind)} | {args.episodes} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


if __name__ == "__main__":
    main()
