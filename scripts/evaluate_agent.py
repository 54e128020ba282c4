"""Evaluate a trained agent: success rate over N episodes, an optional GIF of one episode, and a
picture of what the memory kept over an episode.

    python scripts/evaluate_agent.py runs/<run>/checkpoint.pt --episodes 200
    python scripts/evaluate_agent.py CKPT --gif episode.gif --memory-png memory.png

The memory picture: for a memory that reports ``aux["spans"]`` (Expire-Span), each step's memory
is drawn as a bar from the step to where it expires (its span); for other memories, every scalar
``aux`` diagnostic (e.g. ``memory_size``) is plotted over the episode's steps.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils._pytree import tree_map

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import ALGORITHMS  # noqa: E402
from agents.buffer import obs_to_tensor  # noqa: E402
from agents.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from agents.cli import OneLineParser, parse_kv  # noqa: E402
from agents.env_ids import make_env, wrappers_for  # noqa: E402
from agents.evaluation import evaluate  # noqa: E402
from agents.validation import check_device, check_int  # noqa: E402
from agents.vec import resolve_env  # noqa: E402


def load_agent(path: str, device: str):
    data = load_checkpoint(path)
    algo = ALGORITHMS.get(str(data["algo"]).lower())
    if algo is None:
        raise CheckpointError(f"checkpoint {path!r}: unknown algorithm {data['algo']!r}")
    return algo.load(path, device=device)


@torch.no_grad()
def record_episode(model, env_id: str, seed: int, deterministic: bool, want_frames: bool,
                   env_kwargs: dict | None = None):
    """One episode in one env: frames (if asked) and the memory's aux at every step."""
    kwargs = dict(model.env_kwargs if env_kwargs is None else env_kwargs)
    if want_frames:
        kwargs["render_mode"] = "rgb_array"
    env = make_env(env_id, kwargs, wrappers_for(model, env_id))
    obs, _ = env.reset(seed=seed)
    policy = model.policy.eval()
    state = policy.initial_state(1)
    start = torch.ones(1, dtype=torch.bool, device=model.device)
    frames, auxes, done, success = [], [], False, False
    while not done:
        if want_frames:
            frames.append(env.render())
        t_obs = tree_map(lambda x: x.unsqueeze(0), obs_to_tensor(obs, model.device))
        out = policy.act(t_obs, state, start, deterministic=deterministic)
        state, start = out.state, torch.zeros_like(start)
        auxes.append({k: v.detach().cpu() for k, v in out.aux.items()})
        obs, _, term, trunc, info = env.step(int(policy.to_env_actions(out.actions)[0]))
        done = term or trunc
        success = bool(info.get("success", False))
    if want_frames:
        frames.append(env.render())
    env.close()
    return frames, auxes, success


def plot_memory(auxes: list[dict[str, torch.Tensor]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(auxes)
    if auxes and "spans_per_layer" in auxes[0]:
        # one panel per layer: a segment from each step to the step its memory expires at
        spans = np.array([a["spans_per_layer"].reshape(-1, a["spans_per_layer"].shape[-1])[0]
                          .cpu().numpy() for a in auxes])  # (n, layers)
        layers = spans.shape[1]
        fig, axes = plt.subplots(1, layers, figsize=(5 * layers, 4.5), squeeze=False)
        for l, ax in enumerate(axes[0]):
            for i, s in enumerate(spans[:, l]):
                ax.plot([i, i + s], [i, i], lw=2, color="tab:blue")
            ax.axvline(n - 1, color="grey", ls="--", lw=1)  # the episode's last step
            ax.set_xlim(0, n + float(spans.max()) + 1)
            ax.set_xlabel("time step")
            ax.set_ylabel("memory made at step")
            ax.set_title(f"layer {l}")
        fig.suptitle(f"{title}: each step's memory, kept until its span expires")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if auxes and "spans" in auxes[0]:
        spans = [float(a["spans"].reshape(-1)[0]) for a in auxes]
        for i, s in enumerate(spans):
            ax.plot([i, i + s], [i, i], lw=2, color="tab:blue")
        ax.set_xlabel("time step")
        ax.set_ylabel("memory made at step")
        ax.set_title(f"{title}: each step's memory, kept until its span expires")
        ax.axvline(n - 1, color="grey", ls="--", lw=1)  # the episode's last step
        ax.set_xlim(0, n + max(spans) + 1)
    else:
        keys = [k for k, v in auxes[0].items() if not k.startswith("loss_") and v.numel() == 1]
        for k in keys:
            ax.plot([float(a[k]) for a in auxes], label=k)
        ax.set_xlabel("time step")
        ax.set_title(f"{title}: memory diagnostics over an episode")
        if keys:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_episode_options(parser: argparse.ArgumentParser, episodes_help: str,
                        n_envs: int) -> None:
    """The options of how episodes are played: --episodes, --n-envs, --seed, --device and
    --stochastic (checked by :func:`check_episode_options`)."""
    parser.add_argument("--episodes", type=int, default=100, help=episodes_help)
    parser.add_argument("--n-envs", type=int, default=n_envs, help="parallel evaluation envs")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the evaluation envs")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--stochastic", action="store_true",
                        help="sample actions (default: the most likely action)")


def check_output_files(parser: argparse.ArgumentParser, files: dict[str, str | None]) -> None:
    """Refuse, before any work, an output file whose directory is missing or not writable."""
    for option, path in files.items():
        if path is None:
            continue
        folder = Path(path).resolve().parent
        if not folder.is_dir():
            parser.error(f"{option} {path}: the directory {str(folder)!r} does not exist")
        if not os.access(folder, os.W_OK):
            parser.error(f"{option} {path}: the directory {str(folder)!r} is not writable")


def check_episode_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    try:
        for name in ("episodes", "n_envs"):
            check_int(f"--{name.replace('_', '-')}", getattr(args, name), ge=1)
        check_int("--seed", args.seed, ge=0)
        check_device("--device", args.device)
    except ValueError as err:
        parser.error(str(err))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=Path(__file__).name, description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="checkpoint written by train_agent.py")
    add_episode_options(parser, "episodes to evaluate", n_envs=8)
    parser.add_argument("--env", default=None, help="env id (default: the run's own)")
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE",
                        help="arguments of gymnasium.make for the env, over the run's own (e.g. "
                             "min_length=150 max_length=200 on the corridor)")
    parser.add_argument("--gif", default=None, help="write a GIF of one episode here")
    parser.add_argument("--memory-png", default=None,
                        help="write a picture of what the memory kept over one episode here")
    args = parser.parse_args(argv)
    check_episode_options(parser, args)
    check_output_files(parser, {"--gif": args.gif, "--memory-png": args.memory_png})
    try:
        model = load_agent(args.checkpoint, args.device)
        env_id = resolve_env(args.env or str(model.env_id))
        own = env_id == resolve_env(str(model.env_id)) if model.env_id else False
        # the run's env arguments for the run's env; another env takes only those given
        env_kwargs = {**(model.env_kwargs if own else {}),
                      **parse_kv(args.env_kwargs, "--env-kwargs")}
    except ValueError as err:  # CheckpointError included
        parser.error(str(err))
    det = not args.stochastic
    try:
        out = evaluate(model, env_id, args.episodes, n_envs=args.n_envs, seed=args.seed,
                       deterministic=det, env_kwargs=env_kwargs)
    except (TypeError, ValueError) as err:  # an env that does not fit the policy
        parser.error(str(err))
    print(f"{model.policy_name} on {env_id}: success rate {out['success'].mean():.3f}, "
          f"mean return {out['return'].mean():.3f}, mean length {out['length'].mean():.1f} "
          f"over {args.episodes} episodes")
    if out["metrics"]:  # the task's own measures (rooms reached, instructions executed)
        print("task measures (mean over the episodes): " + ", ".join(
            f"{name} {np.nanmean(values):.3f}" for name, values in out["metrics"].items()))
    if args.gif or args.memory_png:
        frames, auxes, ok = record_episode(model, env_id, args.seed, det, bool(args.gif),
                                           env_kwargs)
        if args.gif:
            import imageio.v2 as imageio

            imageio.mimsave(args.gif, frames, duration=0.2)
            print(f"episode ({'success' if ok else 'failure'}, {len(frames) - 1} steps) -> "
                  f"{args.gif}")
        if args.memory_png:
            plot_memory(auxes, args.memory_png, f"{model.policy_name} on {env_id}")
            print(f"memory picture -> {args.memory_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
