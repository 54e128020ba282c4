"""The CUDA path, measured: training throughput, batched torch envs on the GPU, host syncs.

Run on a machine with a CUDA GPU (it refuses to run without one)::

    python scripts/bench_gpu.py --out docs/results/gpu.md

1. Training throughput of our PPO on ``--device cuda`` with the task's batched env on the GPU, for
   each of ``--policies`` (``scripts/bench_training.py``'s measurement; env steps/s of training and
   of rollout collection alone), at ``--n-envs`` envs.
2. Batched torch envs on the GPU: env steps/s with random actions (drawn on the GPU) at each of
   ``--env-counts`` envs, for every task.
3. Host syncs (``torch.cuda.set_sync_debug_mode``: every operation that waits for the GPU) per
   acting step of each policy (``policy.act`` alone, the state passed along), per env step of the
   stepper (env step, episode bookkeeping) and per PPO update, counted over ``--sync-steps`` steps
   after a warm-up.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_training import ours  # noqa: E402

import envs  # noqa: E402
from agents import PPO  # noqa: E402
from agents.vec import EnvStepper, make_vec_env  # noqa: E402
from policies import available_policies, make_policy  # noqa: E402


def count_syncs(fn: Callable[[], None], n: int) -> float:
    """Host syncs per call of ``fn`` over ``n`` calls (CUDA's sync debug mode, as warnings)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(n):
                fn()
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncing = [w for w in seen if "synchroniz" in str(w.message).lower()]
    return len(syncing) / n


def sync_row(args: argparse.Namespace, name: str) -> str:
    """One policy's row of host syncs per acting step, env step and update."""
    device = torch.device(args.device)
    venv = make_vec_env(args.env, args.n_envs, vec="batched", device=device)
    stepper = EnvStepper(venv, device)
    stepper.reset(seed=0)
    policy = make_policy(name, venv.single_observation_space,
                         venv.single_action_space).to(device).eval()
    box = {"state": policy.initial_state(args.n_envs, device)}

    def act() -> None:
        with torch.no_grad():
            out = policy.act(stepper.obs, box["state"], stepper.episode_starts)
        box["state"], box["actions"] = out.state, policy.to_env_actions(out.actions)

    def step() -> None:
        stepper.step(box["actions"])

    for _ in range(20):  # warm-up: fill the caches
        act()
        step()
    per_act = count_syncs(act, args.sync_steps)
    per_step = count_syncs(step, args.sync_steps)
    venv.close()
    model = PPO(name, args.env, device=args.device, vec="batched", n_envs=args.n_envs,
                tensorboard_log=None, checkpoint_path=None)
    steps = model.config.n_envs * model.config.rollout_len
    model.learn(steps, progress_bar=False)

    def update() -> None:
        model.learn(model.num_timesteps + steps, progress_bar=False, reset_num_timesteps=False)

    per_update = count_syncs(update, 2)
    return (f"| {name} | {per_act:.1f} | {per_step:.1f} | {per_update:.0f} (with its rollout "
            f"of {model.config.rollout_len} steps) |")


def sync_rows(args: argparse.Namespace) -> list[str]:
    return ["| policy | syncs / acting step | syncs / env step (stepper) | syncs / update |",
            "|---|---:|---:|---:|"] + [sync_row(args, name) for name in args.policies]


def env_rows(args: argparse.Namespace) -> list[str]:
    rows = ["| env | num envs | env steps/s (torch, GPU) |", "|---|---:|---:|"]
    for env_id in envs.registered_ids():
        for n in args.env_counts:
            venv = make_vec_env(env_id, n, vec="batched", device=args.device)
            venv.reset(seed=0)
            n_actions = int(venv.single_action_space.n)
            steps = 0
            for _ in range(10):
                venv.step(torch.randint(0, n_actions, (n,), device=args.device))
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                venv.step(torch.randint(0, n_actions, (n,), device=args.device))
                steps += n
            torch.cuda.synchronize()
            rows.append(f"| `{env_id}` | {n} | {steps / (time.perf_counter() - t0):,.0f} |")
            venv.close()
    return rows


def training_rows(args: argparse.Namespace) -> list[str]:
    rows = ["| policy | env steps/s | rollout collection steps/s |", "|---|---:|---:|"]
    for name in args.policies:
        total, collect = ours(name, args.env, args.n_envs, args.n_steps, args.steps,
                              args.device, "batched")
        rows.append(f"| {name} | {total:,.0f} | {collect:,.0f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cuda", help="a CUDA device")
    p.add_argument("--env", default="MemoRL/Corridor-v0", help="env of parts 1 and 3")
    p.add_argument("--policies", nargs="+", default=available_policies())
    p.add_argument("--n-envs", type=int, default=256, help="envs of parts 1 and 3")
    p.add_argument("--n-steps", type=int, default=64, help="rollout length of part 1")
    p.add_argument("--steps", type=int, default=65_536, help="timed env steps in part 1")
    p.add_argument("--env-counts", type=int, nargs="+", default=[1024, 8192, 65_536])
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per env cell")
    p.add_argument("--sync-steps", type=int, default=50, help="steps counted in part 3")
    p.add_argument("--only", choices=["training", "envs", "syncs"], default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    args = p.parse_args(argv)
    if not torch.cuda.is_available() or not str(args.device).startswith("cuda"):
        print(f"{p.prog}: error: needs a CUDA device (--device {args.device}; "
              f"torch.cuda.is_available() is {torch.cuda.is_available()})", file=sys.stderr)
        return 2
    parts = {"training": training_rows, "envs": env_rows, "syncs": sync_rows}
    out = [f"GPU: {torch.cuda.get_device_name(args.device)}, torch {torch.__version__}", ""]
    for key, fn in parts.items():
        if args.only in (None, key):
            out += fn(args) + [""]
            print("\n".join(out), flush=True)
    if args.out:
        args.out.write_text("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
