"""Train an actor-critic agent with a memory policy on a memory task.

    python scripts/train_agent.py --env corridor                      # default policy, PPO
    python scripts/train_agent.py --env MemoRL/Corridor-L10-v0 --policy lstm --total-steps 300000
    python scripts/train_agent.py --resume runs/<run>/checkpoint.pt   # continue a stopped run
    torchrun --nproc-per-node 4 scripts/train_agent.py --env corridor   # data-parallel, 4 ranks

Every option of the trainer's configuration is an option here (``--help`` shows each with its
default); memory hyperparameters go through ``--policy-kwargs key=value ...`` (listed per memory
at the end of ``--help``).

Data-parallel training: launched by ``torchrun --nproc-per-node N`` the script runs as N ranks
that train one set of parameters (see ``--help``'s last section).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import ALGORITHMS, field_docs  # noqa: E402
from agents.config import AgentConfig  # noqa: E402
from agents.distributed import launch_info, shutdown  # noqa: E402
from agents.vec import resolve_env  # noqa: E402
from policies import available_policies, default_policy  # noqa: E402
from policies.memory import memory_class  # noqa: E402

#: config fields that have their own, differently named options (or none)
RENAMED = {"policy_kwargs": None, "seed": "--seed", "device": "--device"}
#: default total steps: enough for the full corridor (README, "Learning"; the learning rate
#: decays to zero over them)
DEFAULT_STEPS = 3_000_000
#: trainer defaults per env id and algorithm, used where the command line does not set them. The
#: full corridor (lengths 3..200) rewards only at its far end, which a random walk rarely reaches
#: (with 16 envs most rollouts held no reward), so it gets 64 envs. For PPO the entropy bonus
#: (0.0005, the paper's) is switched on after 200 updates (819,200 steps), once the walk to the
#: doors is learned (README, "Learning": with 0.003 from the start the policy never walked there;
#: with 0.0005 from the start it walked there later, 167k steps against 86k, and learned the
#: task about as fast).
ENV_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "MemoRL/Corridor-v0": {
        "ppo": {"n_envs": 64, "ent_coef": 0.0005, "ent_start_step": 819_200},
        "a2c": {"n_envs": 64},
    },
}

#: memory hyperparameters per env id and policy, used where --policy-kwargs does not set them.
#: Expire-Span on the full corridor trains without the span penalty (README, "Learning"): until
#: the agent reaches the doors the penalty is the only consistent gradient on the span
#: predictors, which Adam turns into full-size steps however small alpha is. With the paper's
#: alpha = 5e-6 the mean span fell from 20 to about 3 within 100k steps, and the ball's colour was
#: lost beyond about 20 cells; with alpha = 0 the spans grew with the corridors solved and the
#: final policy succeeded at every length.
POLICY_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "MemoRL/Corridor-v0": {"expire_span": {"alpha": 0.0}},
}


DISTRIBUTED_HELP = """\
data-parallel training (torch.distributed):
  torchrun --nproc-per-node N scripts/train_agent.py [options]
  torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT \\
      scripts/train_agent.py ...   (several machines; --resume needs a filesystem they share)
  Each of the N ranks steps its own --n-envs envs (--n-envs is per rank; rank r's env i is
  seeded --seed + r * n_envs + i) and the ranks train one set of parameters: rank 0's initial
  parameters, gradients averaged over the ranks before clipping, advantages normalised over all
  ranks' minibatches. --total-steps and the step counts count the steps of all ranks. With
  --device auto each rank uses GPU LOCAL_RANK (nccl) when there are GPUs, else the CPU (gloo).
  Rank 0 writes the logs and the checkpoint, which holds every rank's env state: --resume under
  torchrun with the same number of ranks continues exactly; with another number the model,
  optimizer and step count are restored and the envs start afresh."""


def parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values read as Python literals if they are)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: {what} entries must be key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def memory_help() -> str:
    lines = ["memory hyperparameters (--policy-kwargs key=value), per --policy:"]
    for name in available_policies():
        params = inspect.signature(memory_class(name).__init__).parameters
        shown = [
            f"{p.name}={p.default!r}"
            for p in params.values()
            if p.name not in ("self", "input_dim") and p.default is not inspect.Parameter.empty
        ]
        lines.append(f"  {name}: {', '.join(shown) or '(none)'}")
    lines.append("  every policy: features_dim=64, head_hidden=128, head_layers=2")
    lines.append("")
    lines.append(DISTRIBUTED_HELP)
    return "\n".join(lines)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=memory_help(), formatter_class=_Formatter
    )
    parser.add_argument("--env", default="corridor",
                        help="env short name (corridor, portal, instruction, ...) or a "
                             "registered gymnasium id; the full corridor has its own defaults: "
                             "64 envs; for PPO entropy 0.0005 from step 819200; for "
                             "expire_span alpha=0 (no span penalty)")
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE",
                        help="arguments of gymnasium.make for the env")
    parser.add_argument("--policy", default=default_policy(), choices=available_policies(),
                        help="memory of the policy")
    parser.add_argument("--algo", default="ppo", choices=sorted(ALGORITHMS),
                        help="algorithm (its preset sets the defaults of the options below that "
                             "you do not give)")
    parser.add_argument("--total-steps", type=int, default=DEFAULT_STEPS,
                        help="env steps to train for (counted from the run's start)")
    parser.add_argument("--policy-kwargs", nargs="*", metavar="KEY=VALUE",
                        help="policy hyperparameters (see the list below)")
    parser.add_argument("--resume", metavar="CHECKPOINT",
                        help="continue the run saved in this checkpoint")
    parser.add_argument("--log-dir", default="runs", help="root of the run directories")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    docs = field_docs(AgentConfig)
    presets = {name: cls.config_class() for name, cls in sorted(ALGORITHMS.items())}
    group = parser.add_argument_group("trainer (the --algo preset gives the defaults)")
    for f in dataclasses.fields(AgentConfig):
        if f.name in RENAMED and RENAMED[f.name] is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        defaults = {name: getattr(cfg, f.name) for name, cfg in presets.items()}
        if len(set(map(repr, defaults.values()))) == 1:
            shown = repr(next(iter(defaults.values())))
        else:
            shown = ", ".join(f"{name}: {v!r}" for name, v in defaults.items())
        extra: dict[str, Any] = {}
        if f.type in ("bool", bool):
            extra["action"] = argparse.BooleanOptionalAction
        elif f.name in ("clip_coef", "target_kl"):
            extra["type"] = _optional_float
        elif f.type in ("int", int):
            extra["type"] = int
        elif f.type in ("float", float):
            extra["type"] = float
        if f.name == "optimizer":
            extra["choices"] = ["adam", "rmsprop"]
        if f.name == "vec":
            extra["choices"] = ["auto", "batched", "sync", "async"]
        group.add_argument(flag, default=argparse.SUPPRESS, dest=f.name,
                           help=f"{docs.get(f.name, '')} (default: {shown})", **extra)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    algo_cls = ALGORITHMS[args.algo]
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(AgentConfig)
        if f.name != "policy_kwargs" and getattr(args, f.name, None) is not None
    }
    if not args.resume:
        try:
            env_id = resolve_env(args.env)
        except ValueError as err:
            parser.error(str(err))
        for key, value in ENV_DEFAULTS.get(env_id, {}).get(args.algo, {}).items():
            overrides.setdefault(key, value)
    policy_kwargs = parse_kv(args.policy_kwargs, "--policy-kwargs")
    if not args.resume:
        for key, value in POLICY_DEFAULTS.get(env_id, {}).get(args.policy, {}).items():
            policy_kwargs.setdefault(key, value)
    env_kwargs = parse_kv(args.env_kwargs, "--env-kwargs")
    if args.total_steps < 1:
        parser.error(f"--total-steps must be >= 1, got {args.total_steps}")
    try:
        config = dataclasses.replace(
            algo_cls.config_class(), policy_kwargs=policy_kwargs, **overrides
        ).validate()
    except ValueError as err:
        parser.error(str(err))

    try:
        main_rank = launch_info().rank == 0
    except ValueError as err:
        parser.error(str(err))
    t0 = time.perf_counter()
    try:
        if args.resume:
            keep = {k: v for k, v in overrides.items() if k not in ("device",)}
            model = algo_cls.load(args.resume, device=config.device, **keep)
            resume = True
        else:
            model = algo_cls(args.policy, args.env, config, env_kwargs=env_kwargs,
                             tensorboard_log=args.log_dir)
            resume = False
    except ValueError as err:  # unknown env / policy hyperparameter / bad checkpoint
        parser.error(str(err))
    world = model.dist.world_size
    ranks = f", {world} ranks x {model.config.n_envs} envs" if world > 1 else ""
    if main_rank:
        print(f"training {args.algo.upper()} {model.policy_name} on {model.env_id} "
              f"({sum(p.numel() for p in model.policy.parameters())} parameters, "
              f"device {model.device}{ranks}); logs in {model.log_dir}", flush=True)
    try:
        model.learn(args.total_steps, progress_bar=not args.no_progress,
                    reset_num_timesteps=not resume)
    finally:
        shutdown()
    if not main_rank:
        return 0
    wall = time.perf_counter() - t0
    success = model.last_success_rate
    print("\nsummary")
    print(f"  world size:    {world} ({model.config.n_envs} envs per rank)")
    print(f"  steps:         {model.num_timesteps} (all ranks)")
    print(f"  wall time:     {wall:.1f} s ({model.num_timesteps / max(wall, 1e-9):.0f} steps/s)")
    print(f"  success rate:  {'n/a' if success is None else f'{success:.3f}'} (last update)")
    print(f"  log dir:       {model.log_dir}")
    print(f"  checkpoint:    {model.checkpoint_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
