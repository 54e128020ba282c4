"""Env throughput: steps per second of each task, single and vectorised, against minigrid's.

Random actions (drawn beforehand, so the policy costs nothing), episodes reset as they end.
Each row is measured in the same run as minigrid's ``MiniGrid-MemoryS13Random-v0`` (the
memory task shipped with minigrid), so the ratio column compares like with like. Examples::

    python scripts/bench_envs.py
    python scripts/bench_envs.py --steps 50000 --num-envs 16 --out docs/env_throughput.md

``--batched`` measures the batched envs (each id's ``vector_entry_point``, numpy and torch on the
CPU) instead, for 1, 64, 1024 and 8192 envs, against a ``SyncVectorEnv`` of the single env and of
minigrid's memory env with as many envs, in the same run::

    python scripts/bench_envs.py --batched --out docs/results/envs_batched.md

``--array-layer`` times the array functions the tasks' rules call on 1024 envs, in our layer
(``envs/arrays.py``) and through ``array-api-compat`` (``pip install array-api-compat``), the
choice ``envs/arrays.py`` explains::

    python scripts/bench_envs.py --array-layer --out docs/results/envs_array_layer.md
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
        help="gymnasium ids to measure (default: the tasks and minigrid's memory env)",
    )
    parser.add_argument(
        "--steps", type=int, default=20_000, help="env steps per measurement (20000)"
    )
    parser.add_argument(
        "--num-envs", type=int, default=16, help="sub-envs of the SyncVectorEnv (16)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of envs and actions (0)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to FILE")
    parser.add_argument(
        "--batched",
        action="store_true",
        help="measure the batched envs against SyncVectorEnv (the table below) instead",
    )
    parser.add_argument(
        "--array-layer",
        action="store_true",
        help="time our array layer against array-api-compat's namespaces instead",
    )
    parser.add_argument(
        "--batched-num-envs",
        type=int,
        nargs="+",
        default=[1, 64, 1024, 8192],
        help="numbers of envs of the batched table (1 64 1024 8192)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="measuring time per cell of the batched table, split into --repeats windows (1.0)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="windows per cell of the batched table; the best is reported (5)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.seconds <= 0:
        parser.error(f"--seconds must be > 0, got {args.seconds}")
    return args


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


def _timed_steps(
    vec: gym.vector.VectorEnv, num_envs: int, seconds: float, seed: int, repeats: int = 1
) -> float:
    # Env steps per second of vector steps with random actions (drawn beforehand), after 2
    # warm-up steps: the best of `repeats` windows of `seconds / repeats` (at least 3 vector steps
    # each). The best window is timeit's convention: other load on the machine only ever slows
    # a window down, so the fastest one is the closest to the env's own cost.
    n_actions = int(vec.single_action_space.n)
    actions = np.random.default_rng(seed).integers(n_actions, size=(64, num_envs))
    device = getattr(vec.unwrapped, "device", None)
    if device is not None:
        import torch

        actions = torch.as_tensor(actions, device=device)
    vec.reset(seed=seed)
    for t in range(2):
        vec.step(actions[t])
    best, total = 0.0, 0
    for _ in range(repeats):
        steps, start = 0, time.perf_counter()
        while steps < 3 or time.perf_counter() - start < seconds / repeats:
            vec.step(actions[(total + steps) % 64])
            steps += 1
        if device is not None and getattr(device, "type", "cpu") == "cuda":
            torch.cuda.synchronize()
        best = max(best, steps * num_envs / (time.perf_counter() - start))
        total += steps
    return best


def bench_batched_table(args: argparse.Namespace) -> str:
    """The batched envs (numpy, torch-cpu) against SyncVectorEnv of the single env and minigrid."""
    import torch

    torch.set_num_threads(1)
    modes = [
        ("batched numpy", {"vectorization_mode": "vector_entry_point"}),
        ("batched torch-cpu", {"vectorization_mode": "vector_entry_point", "device": "cpu"}),
        ("SyncVectorEnv", {"vectorization_mode": "sync"}),
    ]
    header = ["env", "num envs", *(m for m, _ in modes), "minigrid SyncVectorEnv", "numpy / sync"]
    lines = [
        f"Env steps per second, random actions, autoreset included; per cell the best of "
        f"{args.repeats} windows of {args.seconds / args.repeats:.2g} s (every column alike); "
        f"one process, one torch thread; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}. Minigrid: `{BASELINE}`.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for env_id in SHORT_NAMES.values():
        for n in args.batched_num_envs:
            row = []
            for _, kwargs in modes:
                vec = gym.make_vec(env_id, num_envs=n, **kwargs)
                row.append(_timed_steps(vec, n, args.seconds, args.seed, args.repeats))
                vec.close()
            base = gym.make_vec(BASELINE, num_envs=n, vectorization_mode="sync")
            row.append(_timed_steps(base, n, args.seconds, args.seed, args.repeats))
            base.close()
            cells = [f"{v:,.0f}" for v in row] + [f"{row[0] / row[2]:.0f}x"]
            lines.append(f"| `{env_id}` | {n} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def bench_array_layer(seconds: float) -> str:
    """Microseconds per call of the array functions the rules use, numpy and torch, 1024 envs:
    ours (``envs.arrays``) against ``array-api-compat``'s namespace."""
    import timeit

    import torch

    try:
        import array_api_compat
    except ImportError:
        raise SystemExit(
            "--array-layer needs array-api-compat: pip install array-api-compat"
        ) from None
    from envs.arrays import Numpy, Torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = [f"Microseconds per call on 1024 envs (best of 3 repeats of {seconds:g} s); ours: "
            "`envs/arrays.py`, array-api-compat " + array_api_compat.__version__ + ".", "",
            "| operation | numpy (ours) | numpy (array-api-compat) | torch-cpu (ours) | "
            "torch-cpu (array-api-compat) |", "|---|---:|---:|---:|---:|"]
    a, b = rng.integers(0, 50, 1024), rng.integers(0, 50, 1024)
    data = {"numpy": (Numpy(), a, b, a > 25, np.arange(50)),
            "torch": (Torch("cpu"), *(torch.as_tensor(x) for x in (a, b, a > 25, np.arange(50))))}
    ops = {  # name: (ours, array-api-compat), each (xp, a, b, cond, table) -> result
        "where": (lambda xp, a, b, c, t: xp.where(c, a, b),
                  lambda ns, a, b, c, t: ns.where(c, a, b)),
        "minimum": (lambda xp, a, b, c, t: xp.minimum(a, b),
                    lambda ns, a, b, c, t: ns.minimum(a, b)),
        "table lookup": (lambda xp, a, b, c, t: t[a], lambda ns, a, b, c, t: ns.take(t, a)),
        "first true (axis 0)": (lambda xp, a, b, c, t: xp.first_true(c[None]),
                                lambda ns, a, b, c, t: ns.argmax(ns.astype(c[None], ns.uint8),
                                                                 axis=0)),
    }
    for name, (ours, theirs) in ops.items():
        cells = []
        for xp, x, y, c, tab in data.values():
            ns = array_api_compat.array_namespace(x)
            for fn, arg, table in ((ours, xp, xp.table(np.arange(50))), (theirs, ns, tab)):
                timer = timeit.Timer(lambda fn=fn, arg=arg, args=(x, y, c, table): fn(arg, *args))
                number = max(1, int(seconds / max(timer.timeit(10) / 10, 1e-9)))
                cells.append(min(timer.repeat(3, number)) / number * 1e6)
        rows.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in cells) + " |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    if args.batched or args.array_layer:
        table = bench_batched_table(args) if args.batched else bench_array_layer(args.seconds)
        print()
        print(table)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(table + "\n")
            print(f"\nwrote {args.out}")
        return table
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
