"""Train an actor-critic agent with a memory policy on a memory task.

    python scripts/train_agent.py --env corridor                      # default policy, PPO
    python scripts/train_agent.py --env MemoRL/Corridor-L10-v0 --policy lstm --total-steps 300000
    python scripts/train_agent.py --resume runs/<run>/checkpoint.pt   # continue a stopped run
    torchrun --nproc-per-node 4 scripts/train_agent.py --env corridor   # data-parallel, 4 ranks

Every field of the trainer's configuration (``agents.config.AgentConfig``) is an option here,
generated from its type (``--help`` shows each with its default); the per-env presets
(``agents.presets``) fill in what the command line leaves out, exactly as
``PPO(policy, env_id)`` does from Python. Memory hyperparameters go through
``--policy-kwargs key=value ...`` (listed per memory at the end of ``--help``).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import ALGORITHMS  # noqa: E402
from agents.cli import OneLineParser, add_config_options, config_options, parse_kv  # noqa: E402
from agents.config import AgentConfig  # noqa: E402
from agents.distributed import launch_info, shutdown  # noqa: E402
from agents.presets import describe_presets  # noqa: E402
from agents.validation import check_int  # noqa: E402
from policies import available_policies, default_policy  # noqa: E402
from policies.actor_critic import ActorCritic  # noqa: E402
from policies.encoders import make_encoder  # noqa: E402
from policies.memory import memory_class  # noqa: E402

#: default total steps: enough for the full corridor (README, "Learning"; the learning rate
#: decays to zero over them)
DEFAULT_STEPS = 3_000_000

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


def _defaults(fn: Any, names: tuple[str, ...]) -> list[str]:
    params = inspect.signature(fn).parameters
    return [f"{n}={params[n].default!r}" for n in names if n in params]


def epilog() -> str:
    lines = ["per-env presets (agents/presets.py; an option you give wins):", describe_presets(),
             "", "memory hyperparameters (--policy-kwargs key=value), per --policy:"]
    for name in available_policies():
        params = inspect.signature(memory_class(name).__init__).parameters
        shown = [
            f"{p.name}={p.default!r}"
            for p in params.values()
            if p.name not in ("self", "input_dim") and p.default is not inspect.Parameter.empty
        ]
        lines.append(f"  {name}: {', '.join(shown) or '(none)'}")
    every = _defaults(make_encoder, ("features_dim",))
    every += _defaults(ActorCritic.__init__, ("head_hidden", "head_layers"))
    lines += [f"  every policy: {', '.join(every)}", "", DISTRIBUTED_HELP]
    return "\n".join(lines)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        description=__doc__.split("\n\n")[0], epilog=epilog(), formatter_class=_Formatter
    )
    parser.add_argument("--env", default="corridor",
                        help="env short name (corridor, portal, instruction, ...) or a "
                             "registered gymnasium id; some have presets (listed below)")
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", default=None,
                        help="arguments of gymnasium.make for the env")
    parser.add_argument("--policy", default=default_policy(), choices=available_policies(),
                        help="memory of the policy")
    parser.add_argument("--algo", default="ppo", choices=sorted(ALGORITHMS),
                        help="algorithm (its preset sets the defaults of the options below that "
                             "you do not give)")
    parser.add_argument("--total-steps", type=int, default=DEFAULT_STEPS,
                        help="env steps to train for (counted from the run's start)")
    parser.add_argument("--resume", metavar="CHECKPOINT",
                        help="continue the run saved in this checkpoint")
    parser.add_argument("--log-dir", default="runs", help="root of the run directories")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_argument_group("trainer (the --algo preset gives the defaults)")
    presets = {name: cls.config_class() for name, cls in sorted(ALGORITHMS.items())}
    add_config_options(group, AgentConfig, presets)
    return parser


def make_model(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    """The agent the command line asks for: a new one (the constructor applies the env's preset
    under the options given) or the run of ``--resume``."""
    algo_cls = ALGORITHMS[args.algo]
    if args.resume:
        device = options.pop("device", "auto")
        return algo_cls.load(args.resume, device=device, **options)
    env_kwargs = parse_kv(args.env_kwargs, "--env-kwargs")
    return algo_cls(args.policy, args.env, env_kwargs=env_kwargs, tensorboard_log=args.log_dir,
                    **options)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = config_options(args, AgentConfig)
    try:
        check_int("--total-steps", args.total_steps, ge=1)
        main_rank = launch_info().rank == 0
        model = make_model(args, options)
    except ValueError as err:  # unknown env / policy hyperparameter / config / bad checkpoint
        parser.error(str(err))
    world = model.dist.world_size
    ranks = f", {world} ranks x {model.config.n_envs} envs" if world > 1 else ""
    t0 = time.perf_counter()
    if main_rank:
        print(f"training {args.algo.upper()} {model.policy_name} on {model.env_id} "
              f"({sum(p.numel() for p in model.policy.parameters())} parameters, "
              f"device {model.device}{ranks}); logs in {model.log_dir}", flush=True)
    try:
        model.learn(args.total_steps, progress_bar=not args.no_progress,
                    reset_num_timesteps=not args.resume)
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
