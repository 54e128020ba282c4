"""Train an actor-critic agent with a memory policy on a memory task.

    python scripts/train_agent.py --env corridor                      # default policy, PPO
    python scripts/train_agent.py --env MemoRL/Corridor-L10-v0 --policy lstm --total-steps 300000
    python scripts/train_agent.py --env MiniGrid-MemoryS7-v0           # minigrid's own tasks
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
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import ALGORITHMS, NonFiniteLossError, RunLockedError, TrainingInterrupted  # noqa: E402
from agents.callbacks import EvalCallback  # noqa: E402
from agents.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from agents.cli import OneLineParser, add_config_options, config_options, parse_kv  # noqa: E402
from agents.config import AgentConfig  # noqa: E402
from agents.distributed import launch_info, shutdown  # noqa: E402
from agents.presets import describe_presets  # noqa: E402
from agents.validation import check_int  # noqa: E402
from agents.vec import resolve_env  # noqa: E402
from policies import available_policies, default_policy  # noqa: E402
from policies.actor_critic import ActorCritic  # noqa: E402
from policies.encoders import make_encoder  # noqa: E402
from policies.memory import memory_class  # noqa: E402

#: default total steps: enough for the full corridor (README, "Learning"; the learning rate
#: decays to zero over them)
DEFAULT_STEPS = 3_000_000

RESUME_HELP = """\
resuming (--resume CHECKPOINT, or a run directory holding checkpoint.pt):
  The run goes on from the checkpoint's step with its own config and algorithm; options you give
  replace single fields; --env, --policy, --algo and --env-kwargs must match the run's or be left
  out, and --log-dir does not apply. It trains towards the run's own --total-steps unless you give
  one. Checkpoints go to the file given, logs to the run's directory (next to the file when it was
  copied or moved); TensorBoard drops what the stopped run logged after its checkpoint, so the
  curves do not overlap. A run directory or checkpoint that another run is writing is refused.

stopping and exit status:
  Ctrl-C (SIGINT) or SIGTERM: the current update finishes, the checkpoint is written and one line
  names the step and the checkpoint; a second Ctrl-C stops at once, without a checkpoint.
  0: finished. 1: training failed (max_nonfinite skipped updates in a row, a checkpoint that
  cannot be written). 2: refused before training (bad options, env or checkpoint, a run in use).
  130 / 143: stopped by SIGINT / SIGTERM (128 + the signal's number)."""

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
    lines += [f"  every policy: {', '.join(every)}", "", RESUME_HELP, "", DISTRIBUTED_HELP]
    return "\n".join(lines)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows an option's default unless it has none (None, a flag's False): those options say in
    their help what leaving them out does."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=Path(__file__).name, description=__doc__.split("\n\n")[0], epilog=epilog(),
        formatter_class=_Formatter,
    )
    parser.add_argument("--env", default=None,
                        help="env short name (corridor, portal, instruction, tmaze), one of "
                             "our ids (MemoRL/Corridor-L10-v0), a minigrid id "
                             "(MiniGrid-MemoryS7-v0), any registered gymnasium id, or "
                             "module:Env-v0 (the module imported first); some have presets "
                             "(listed below) (default: corridor)")
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", default=None,
                        help="arguments of gymnasium.make for the env")
    parser.add_argument("--policy", default=None, choices=available_policies(),
                        help=f"memory of the policy (default: {default_policy()})")
    parser.add_argument("--algo", default=None, choices=sorted(ALGORITHMS),
                        help="algorithm (its preset sets the defaults of the options below that "
                             "you do not give) (default: ppo)")
    parser.add_argument("--total-steps", type=int, default=None,
                        help=f"env steps to train for, counted from the run's start (default: "
                             f"{DEFAULT_STEPS}; with --resume, the run's own)")
    parser.add_argument("--resume", metavar="CHECKPOINT",
                        help="continue the run saved in this checkpoint or run directory (see "
                             "'resuming' below)")
    parser.add_argument("--log-dir", default=None,
                        help="root of the run directories (default: runs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev = parser.add_argument_group(
        "evaluation during training (agents.callbacks.EvalCallback; logged under eval/)")
    ev.add_argument("--eval-every", type=int, default=0, metavar="STEPS",
                    help="evaluate the policy on fresh episodes (env seeds from 10000) every "
                         "STEPS env steps; 0: never")
    ev.add_argument("--eval-episodes", type=int, default=200,
                    help="episodes per evaluation (deterministic actions)")
    ev.add_argument("--stop-at-success", type=float, default=None, metavar="RATE",
                    help="stop training at the first evaluation whose success rate reaches RATE "
                         "(needs --eval-every)")
    group = parser.add_argument_group("trainer (the --algo preset gives the defaults)")
    presets = {name: cls.config_class() for name, cls in sorted(ALGORITHMS.items())}
    add_config_options(group, AgentConfig, presets)
    return parser


def resume_checkpoint(args: argparse.Namespace) -> tuple[Path, str]:
    """The checkpoint ``--resume`` names (a file, or a run directory's ``checkpoint.pt``) and
    its algorithm; refuses options that contradict the run."""
    path = Path(args.resume)
    if path.is_dir():
        if not (path / "checkpoint.pt").is_file():
            raise ValueError(f"--resume {args.resume}: the directory holds no checkpoint.pt")
        path = path / "checkpoint.pt"
    data = load_checkpoint(path)
    run = {"--env": str(data.get("env", {}).get("id")), "--policy": str(data["policy"]["name"]),
           "--algo": str(data["algo"]).lower()}
    given = {"--env": args.env, "--policy": args.policy, "--algo": args.algo}
    clash = [f"{k} {v}" for k, v in given.items()
             if v is not None and not _same(k, v, run[k])]
    if args.env_kwargs is not None:
        clash.append("--env-kwargs")
    if args.log_dir is not None:
        clash.append("--log-dir")
    if clash:
        raise ValueError(
            f"--resume {args.resume}: the run is {run['--algo'].upper()} {run['--policy']} on "
            f"{run['--env']}, which {', '.join(clash)} would change; leave them out to continue "
            "it (a resumed run goes on next to its checkpoint)"
        )
    return path, run["--algo"]


def _same(flag: str, given: str, run: str) -> bool:
    if flag != "--env":
        return given == run
    try:
        return resolve_env(given) == resolve_env(run)
    except ValueError:  # an id of an env object, not registered here
        return given == run


def make_model(args: argparse.Namespace, options: dict[str, Any]) -> Any:
    """The agent the command line asks for: a new one (the constructor applies the env's preset
    under the options given) or the run of ``--resume``."""
    if args.resume:
        path, algo = resume_checkpoint(args)
        device = options.pop("device", "auto")
        return ALGORITHMS[algo].load(path, device=device, **options)
    env_kwargs = parse_kv(args.env_kwargs, "--env-kwargs")
    return ALGORITHMS[args.algo or "ppo"](
        args.policy or default_policy(), args.env or "corridor", env_kwargs=env_kwargs,
        tensorboard_log=args.log_dir or "runs", **options,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = config_options(args, AgentConfig)
    try:
        if args.total_steps is not None:
            check_int("--total-steps", args.total_steps, ge=1)
        callback = eval_callback(args)
        main_rank = launch_info().rank == 0
        model = make_model(args, options)
    except ValueError as err:  # unknown env / policy hyperparameter / config / bad checkpoint
        parser.error(str(err))
    total = args.total_steps or model.total_timesteps or DEFAULT_STEPS
    world = model.dist.world_size
    t0 = time.perf_counter()
    if main_rank:
        ranks = f", {world} ranks x {model.config.n_envs} envs" if world > 1 else ""
        start = f" from step {model.num_timesteps}" if args.resume else ""
        print(f"training {model.algo_name} {model.policy_name} on {model.env_id}{start} to step "
              f"{total} ({sum(p.numel() for p in model.policy.parameters())} parameters, device "
              f"{model.device}{ranks})", flush=True)
    try:
        model.learn(total, progress_bar=not args.no_progress, reset_num_timesteps=not args.resume,
                    callback=callback)
    except TrainingInterrupted as stop:
        again = f"; continue with --resume {stop.checkpoint}" if stop.checkpoint else ""
        return _fail(parser, main_rank, f"{stop}{again}", stop.exit_status, label="")
    except KeyboardInterrupt:
        last = model.checkpoint_path
        kept = f"; the last checkpoint is {last}" if last and last.exists() else ""
        return _fail(parser, main_rank, f"interrupted again: stopped at once, without a "
                     f"checkpoint{kept}", 128 + signal.SIGINT, label="")
    except RunLockedError as err:
        return _fail(parser, main_rank, str(err), 2)
    except (NonFiniteLossError, CheckpointError) as err:
        return _fail(parser, main_rank, str(err), 1)
    finally:
        shutdown()
    if main_rank:
        summary(model, time.perf_counter() - t0, callback)
    return 0


def eval_callback(args: argparse.Namespace) -> EvalCallback | None:
    """The evaluation the options ask for (None: --eval-every 0)."""
    check_int("--eval-every", args.eval_every, ge=0)
    check_int("--eval-episodes", args.eval_episodes, ge=1)
    if args.stop_at_success is not None:
        if not args.eval_every:
            raise ValueError("--stop-at-success needs --eval-every STEPS (evaluations to stop at)")
        if not 0.0 <= args.stop_at_success <= 1.0:
            raise ValueError(f"--stop-at-success must lie in [0, 1], got {args.stop_at_success}")
    if not args.eval_every:
        return None
    return EvalCallback(args.eval_every, args.eval_episodes, args.stop_at_success)


def _fail(parser: argparse.ArgumentParser, main_rank: bool, message: str, status: int,
          label: str = "error: ") -> int:
    """One line on stderr (rank 0's), and the exit status."""
    if main_rank:
        print(f"{parser.prog}: {label}{message}", file=sys.stderr, flush=True)
    return status


def summary(model: Any, wall: float, callback: EvalCallback | None = None) -> None:
    success = model.last_success_rate
    print("\nsummary")
    print(f"  world size:    {model.dist.world_size} ({model.config.n_envs} envs per rank)")
    print(f"  steps:         {model.num_timesteps} (all ranks)")
    print(f"  wall time:     {wall:.1f} s ({model.num_timesteps / max(wall, 1e-9):.0f} steps/s)")
    print(f"  success rate:  {'n/a' if success is None else f'{success:.3f}'} (last update)")
    names = getattr(model.stepper, "metrics", ()) if model.stepper is not None else ()
    measured = {n: model.last_stats[f"charts/{n}"] for n in names
                if f"charts/{n}" in model.last_stats}
    if measured:
        print("  task measures: " + ", ".join(f"{n} {v:.3f}" for n, v in measured.items())
              + " (episodes of the last update)")
    if callback is not None and callback.history:
        last = callback.history[-1]
        print(f"  evaluation:    success {last['success']:.3f} over {callback.episodes} episodes "
              f"at step {last['step']}")
        if callback.stop_at_success is not None:
            hit = callback.solved_at
            print("  solved:        " + (
                f"success >= {callback.stop_at_success} at step {hit['step']}, after "
                f"{hit['train_wall_s']:.1f} s of training" if hit else "no"))
    print(f"  log dir:       {model.log_dir}")
    print(f"  checkpoint:    {model.checkpoint_path}")


if __name__ == "__main__":
    sys.exit(main())
