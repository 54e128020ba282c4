"""Where training time goes, on one CPU thread: torch's profiler over one PPO update, the aten
operations of one acting step of a memory at a full cache, and the optimizer step alone.

    python scripts/profile_training.py --part update     # op table of one update (full corridor)
    python scripts/profile_training.py --part act        # ops of one Expire-Span step, cache 200
    python scripts/profile_training.py --part optimizer  # Adam step: loop, foreach, fused
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import PPO  # noqa: E402
from policies import make_policy  # noqa: E402
from policies.memory import memory_class  # noqa: E402


def update_table(env: str, policy: str, rows: int) -> str:
    model = PPO(policy, env, n_envs=64, tensorboard_log=None, checkpoint_path=None)
    steps = model.config.n_envs * model.config.rollout_len
    model.learn(2 * steps, progress_bar=False)  # warm-up
    with profile() as prof:
        model.learn(model.num_timesteps + steps, progress_bar=False, reset_num_timesteps=False)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def act_ops(memory: str, cache: int) -> str:
    m = memory_class(memory)(64, init_span_fraction=0.925).eval() if memory == "expire_span" \
        else memory_class(memory)(64).eval()
    b = 16
    state, x = m.initial_state(b), torch.randn(1, b, 64)
    with torch.inference_mode():
        for t in range(cache + 100):
            state = m(x, state, torch.full((1, b), t == 0))[1]
        with profile() as prof:
            m(x, state, torch.zeros(1, b, dtype=torch.bool))
    n = sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))
    return f"{memory}: {n} aten operations (views included) in one step of {b} envs"


def optimizer_times() -> str:
    space = gym.spaces.Box(0, 1, (3, 3, 6), np.uint8)
    params = list(make_policy("expire_span", space, gym.spaces.Discrete(4)).parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    lines = [f"{len(params)} tensors, {sum(p.numel() for p in params):,} parameters"]
    for kw in ({"foreach": False}, {"foreach": True}, {"fused": True}):
        opt = torch.optim.Adam(params, lr=1e-4, **kw)
        for _ in range(5):
            opt.step()
        t0 = time.perf_counter()
        for _ in range(200):
            opt.step()
        lines.append(f"Adam {kw}: {(time.perf_counter() - t0) / 200 * 1e3:.2f} ms per step")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["update", "act", "optimizer"], required=True)
    p.add_argument("--env", default="MemoRL/Corridor-v0", help="env of --part update")
    p.add_argument("--policy", default="expire_span", help="memory of --part update / act")
    p.add_argument("--cache", type=int, default=200, help="steps before the timed act step")
    p.add_argument("--rows", type=int, default=30, help="rows of the update's table")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.part == "update":
        print(update_table(args.env, args.policy, args.rows))
    elif args.part == "act":
        print(act_ops(args.policy, args.cache))
    else:
        print(optimizer_times())
    return 0


if __name__ == "__main__":
    sys.exit(main())
