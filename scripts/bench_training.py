"""Training throughput and MRBP cost, as Markdown tables.

1. Env steps per second of our PPO with each memory policy against stable-baselines3's PPO (MLP)
   and sb3-contrib's RecurrentPPO (LSTM), on the same env, number of envs and rollout length, in
   one run on one machine; the ratio is against SB3 PPO. Our PPO is timed with each kind of
   vector env of ``--vec`` (``sync``: SyncVectorEnv of the single env; ``batched``: the task's
   native vector env, on the device when it is a GPU), and the rollout-collection rate (acting
   and env stepping, without the update) is shown separately.
2. MRBP against full BPTT at a long training sequence: time per update and peak memory
   (``torch.cuda.max_memory_allocated`` on CUDA; on CPU the peak resident memory of a fresh
   process per mode, since torch's CPU allocations are not seen by tracemalloc), gradients equal.

``--baseline DIR`` also times our PPO with the code of another checkout (e.g. the main branch):
each of our rows is then run ``--repeats`` times in child processes that alternate between this
checkout and DIR, the best of each is kept, and a column gives the speedup against DIR.

    python scripts/bench_training.py --env MemoRL/Corridor-L10-v0 --steps 8192
    python scripts/bench_training.py --only mrbp --device cuda --seq-len 1024
    python scripts/bench_training.py --only throughput --policies expire_span --vec sync \
        --baseline ../main --repeats 3
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents import PPO  # noqa: E402
from policies import available_policies  # noqa: E402


def ours(policy: str, env: str, n_envs: int, n_steps: int, steps: int, device: str,
         vec: str = "sync", n_minibatches: int | None = None,
         clock: str = "wall") -> tuple[float, float]:
    """(env steps/s of training, env steps/s of rollout collection alone) of our PPO; with
    ``clock="cpu"`` per second of this process's CPU time (rollout collection: wall time)."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    model = PPO(policy, env, tensorboard_log=None, checkpoint_path=None, n_envs=n_envs,
                rollout_len=n_steps, bptt_len=n_steps,
                n_minibatches=n_minibatches or n_envs // 2 or 1, device=device, vec=vec)
    model.learn(n_envs * n_steps, progress_bar=False)  # warm-up update
    rollout_s = []

    def timing(m: PPO) -> None:
        rollout_s.append(m.last_stats["time/rollout_s"])

    t0 = now()
    start = model.num_timesteps
    model.learn(start + steps, progress_bar=False, reset_num_timesteps=False, callback=timing)
    total = (model.num_timesteps - start) / (now() - t0)
    return total, (model.num_timesteps - start) / sum(rollout_s)


OURS_CHILD = """
import json, sys, time, torch
sys.path.insert(0, {code!r})
torch.set_num_threads({threads})
from agents import PPO
{ours}
print(json.dumps(ours(*{args!r})))
"""


def ours_with(code: Path, args: tuple) -> tuple[float, float]:
    """:func:`ours` in a child process that imports ``agents`` and ``policies`` from ``code``."""
    src = OURS_CHILD.format(code=str(code), threads=torch.get_num_threads(),
                            ours=inspect.getsource(ours), args=args)
    out = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"timing {code} failed:\n{out.stderr}")
    total, collect = json.loads(out.stdout.strip().splitlines()[-1])
    return total, collect


def best_of(code_dirs: dict[str, Path], args: tuple, repeats: int) -> dict[str, tuple]:
    """The best (fastest) of ``repeats`` runs per checkout, the checkouts alternating."""
    best: dict[str, tuple[float, float]] = {}
    tags = list(code_dirs)
    for r in range(repeats):
        for tag in tags if r % 2 == 0 else tags[::-1]:
            got = ours_with(code_dirs[tag], args)
            if tag not in best or got[0] > best[tag][0]:
                best[tag] = got
    return best


def sb3(kind: str, env: str, n_envs: int, n_steps: int, steps: int, device: str,
        clock: str = "wall") -> float:
    from stable_baselines3.common.env_util import make_vec_env

    import envs  # noqa: F401

    venv = make_vec_env(env, n_envs=n_envs, seed=0)
    if kind == "ppo":
        from stable_baselines3 import PPO as SB3PPO

        model = SB3PPO("MlpPolicy", venv, n_steps=n_steps, batch_size=n_steps * n_envs // 4,
                       device=device, verbose=0)
    else:
        from sb3_contrib import RecurrentPPO

        model = RecurrentPPO("MlpLstmPolicy", venv, n_steps=n_steps,
                             batch_size=n_steps * n_envs // 4, device=device, verbose=0)
    model.learn(n_envs * n_steps)  # warm-up
    now = time.process_time if clock == "cpu" else time.perf_counter
    t0 = now()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (now() - t0)


def throughput_table(args) -> str:
    rows: list[tuple[str, float, float | None, float | None]] = []
    base = sb3("ppo", args.env, args.n_envs, args.n_steps, args.steps, args.device, args.clock)
    rows.append(("SB3 PPO (MLP)", base, None, None))
    rows.append(("sb3-contrib RecurrentPPO (LSTM)",
                 sb3("recurrent", args.env, args.n_envs, args.n_steps, args.steps, args.device,
                     args.clock), None, None))
    for name in args.policies or available_policies():
        for vec in args.vec:
            run = (name, args.env, args.n_envs, args.n_steps, args.steps, args.device, vec,
                   args.n_minibatches, args.clock)
            if args.baseline is None:
                sps, collect = ours(*run)
                rows.append((f"ours PPO, {name}, {vec} envs", sps, collect, None))
                continue
            best = best_of({"this": ROOT, "baseline": args.baseline}, run, args.repeats)
            (sps, collect), (old, _) = best["this"], best["baseline"]
            rows.append((f"ours PPO, {name}, {vec} envs", sps, collect, sps / old))
    against = args.baseline is not None
    lines = [f"Env {args.env}, {args.n_envs} envs x {args.n_steps} steps per rollout "
             f"({args.n_minibatches or args.n_envs // 2 or 1} minibatches for ours), "
             f"{args.steps} timed steps, device {args.device}"
             + ("; steps per CPU-second of the process" if args.clock == "cpu" else "")
             + (f"; ours: best of {args.repeats} runs alternating with the code of "
                f"{args.baseline}, the speedup against it in the last column" if against else ""),
             "",
             "| agent | env steps/s | vs SB3 PPO | rollout collection steps/s |"
             + (" vs baseline |" if against else ""),
             "|---|---:|---:|---:|" + ("---:|" if against else "")]
    for n, sps, collect, speedup in rows:
        collected = "" if collect is None else f"{collect:.0f}"
        line = f"| {n} | {sps:.0f} | {sps / base:.2f} | {collected} |"
        if against:
            line += " |" if speedup is None else f" {speedup:.2f} |"
        lines.append(line)
    return "\n".join(lines)


MRBP_CHILD = """
import json, resource, sys, time, torch
sys.path.insert(0, {root!r})
from agents.config import PPOConfig
from agents.loss import make_loss_fn
from agents.mrbp import bptt_backward, mrbp_backward
from agents.buffer import SequenceBatch
from policies import make_policy
import gymnasium as gym, numpy as np
mode, policy_name, seq_len, n, chunk, device = {args!r}
torch.manual_seed(0)
space = gym.spaces.Box(0, 1, (3, 3, 6), np.uint8)
policy = make_policy(policy_name, space, gym.spaces.Discrete(4)).to(device)
policy.eval()  # no random memory shortening / dropout: one call and chunks must agree
g = torch.Generator().manual_seed(1)
starts = torch.zeros(seq_len, n, dtype=torch.bool); starts[0] = True
batch = SequenceBatch(
    torch.randint(0, 2, (seq_len, n, 3, 3, 6), generator=g, dtype=torch.uint8).to(device),
    torch.randint(0, 4, (seq_len, n), generator=g).to(device),
    torch.full((seq_len, n), -1.38, device=device), torch.zeros(seq_len, n, device=device),
    torch.randn(seq_len, n, generator=g).to(device),
    torch.randn(seq_len, n, generator=g).to(device),
    starts.to(device), policy.initial_state(n, device))
loss_fn = make_loss_fn(policy, PPOConfig(), memory_hook=False)
def once():
    policy.zero_grad()
    if mode == "mrbp":
        mrbp_backward(policy, batch, loss_fn, chunk)
    else:
        bptt_backward(policy, batch, loss_fn)
once()
if device.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
reps = 3
for _ in range(reps):
    once()
if device.startswith("cuda"):
    torch.cuda.synchronize()
dt = (time.perf_counter() - t0) / reps
peak = (torch.cuda.max_memory_allocated() if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
grad = torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]).cpu()
torch.save(grad, {gradfile!r})
print(json.dumps({{"time": dt, "peak": peak}}))
"""


def mrbp_table(args) -> str:
    lines = [f"MRBP vs full BPTT: sequence {args.seq_len} steps x {args.seq_batch} sequences, "
             f"MRBP chunk {args.chunk}, device {args.device}; peak = "
             + ("torch.cuda.max_memory_allocated" if args.device.startswith("cuda")
                else "peak RSS of the process"), "",
             "| policy | mode | time / update (s) | peak memory (MiB) | max abs grad diff |",
             "|---|---|---:|---:|---:|"]
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    for name in args.mrbp_policies:
        res = {}
        for mode in ("bptt", "mrbp"):
            gradfile = str(tmp / f"grad_{name}_{mode}.pt")
            code = MRBP_CHILD.format(
                root=str(ROOT), gradfile=gradfile,
                args=(mode, name, args.seq_len, args.seq_batch, args.chunk, args.device),
            )
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True)
            res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            res[mode]["grad"] = torch.load(gradfile)
        diff = float((res["bptt"]["grad"] - res["mrbp"]["grad"]).abs().max())
        for mode in ("bptt", "mrbp"):
            r = res[mode]
            lines.append(f"| {name} | {mode} | {r['time']:.3f} | {r['peak'] / 2**20:.0f} | "
                         f"{diff:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--env", default="MemoRL/Corridor-L10-v0", help="env id")
    parser.add_argument("--n-envs", type=int, default=8, help="parallel envs (all agents)")
    parser.add_argument("--n-steps", type=int, default=128, help="rollout length (all agents)")
    parser.add_argument("--steps", type=int, default=8192, help="timed env steps per agent")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: steps per elapsed second; cpu: per second of the process's "
                             "CPU time, steadier on a machine shared with other processes")
    parser.add_argument("--n-minibatches", type=int, default=None,
                        help="minibatches per epoch of our PPO (default: n_envs // 2)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--policies", nargs="*", default=None,
                        help="our policies to time (default: every registered memory)")
    parser.add_argument("--vec", nargs="+", default=["sync", "batched"],
                        choices=["sync", "batched", "async"],
                        help="kinds of vector env our PPO is timed with")
    parser.add_argument("--only", choices=["throughput", "mrbp"], default=None,
                        help="run one benchmark only")
    parser.add_argument("--seq-len", type=int, default=512, help="MRBP: sequence length")
    parser.add_argument("--seq-batch", type=int, default=16, help="MRBP: sequences per batch")
    parser.add_argument("--chunk", type=int, default=32, help="MRBP: chunk length")
    parser.add_argument("--mrbp-policies", nargs="*", default=["lstm", "memformer"],
                        help="MRBP: policies to measure")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                        help="also time our PPO with the code of the checkout DIR and show the "
                             "speedup against it")
    parser.add_argument("--repeats", type=int, default=3,
                        help="with --baseline: runs per checkout (alternating), best kept")
    parser.add_argument("--tmp", default="/tmp/memorl_bench", help="scratch directory")
    parser.add_argument("--out", default=None, help="also write the Markdown here")
    args = parser.parse_args(argv)
    for name in ("n_envs", "n_steps", "steps", "seq_len", "seq_batch", "chunk", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    parts = []
    if args.only in (None, "throughput"):
        parts.append(throughput_table(args))
    if args.only in (None, "mrbp"):
        parts.append(mrbp_table(args))
    text = "\n\n".join(parts)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
