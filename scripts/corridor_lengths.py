"""Success of a trained corridor agent against the corridor's length: where its memory gives out.

    python scripts/corridor_lengths.py runs/<run>/checkpoint.pt
    python scripts/corridor_lengths.py CKPT --lengths 3 50 100 150 200 --episodes 200 --png len.png
    python scripts/corridor_lengths.py CKPT_A CKPT_B --labels A B --png len.png   # compare agents

For each length the agent plays ``--episodes`` episodes of a corridor of exactly that length (the
run's env with ``min_length = max_length = length``) and the script prints a table of success,
wrong-door and truncation rates; ``--png`` draws success against length (one line per
checkpoint; with one checkpoint, the wrong-door and truncation rates too). An agent that remembers
the ball's colour scores 1 at every length; one that has forgotten it by the doors scores about
0.5 from some length on; truncations mean it did not walk to the doors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluate_agent import (  # noqa: E402
    add_episode_options,
    check_episode_options,
    check_output_files,
    load_agent,
)

from agents.checkpoint import CheckpointError  # noqa: E402
from agents.cli import OneLineParser  # noqa: E402
from agents.evaluation import evaluate  # noqa: E402
from agents.vec import resolve_env  # noqa: E402

DEFAULT_LENGTHS = [3, 10, 25, 50, 75, 100, 125, 150, 175, 200]


def length_table(model, env_id: str, lengths: list[int], episodes: int, n_envs: int, seed: int,
                 deterministic: bool) -> list[dict[str, float]]:
    """One row per length: success, wrong-door and truncation rates, mean episode length."""
    rows = []
    for length in lengths:
        kwargs = {**model.env_kwargs, "min_length": length, "max_length": length}
        out = evaluate(model, env_id, episodes, n_envs=n_envs, seed=seed,
                       deterministic=deterministic, env_kwargs=kwargs)
        # the corridor truncates after 2 * length + 20 steps; a door ends an episode earlier
        truncated = out["length"] >= 2 * length + 20
        rows.append({
            "length": length,
            "success": float(out["success"].mean()),
            "wrong_door": float(np.mean(~truncated & (out["success"] == 0))),
            "truncated": float(truncated.mean()),
            "steps": float(out["length"].mean()),
        })
    return rows


def plot(tables: list[list[dict[str, float]]], labels: list[str], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for rows, label in zip(tables, labels, strict=True):
        x = [r["length"] for r in rows]
        ax.plot(x, [r["success"] for r in rows], "o-", label=f"{label}: success")
        if len(tables) == 1:
            ax.plot(x, [r["wrong_door"] for r in rows], "s--", label="wrong door")
            ax.plot(x, [r["truncated"] for r in rows], "^:", label="truncated")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_ylim(-0.02, 1.04)
    ax.set_xlabel("corridor length (cells)")
    ax.set_ylabel("fraction of episodes")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog=Path(__file__).name, description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", metavar="checkpoint",
                        help="checkpoint(s) of runs on a corridor env")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="names of the checkpoints in the table and picture (default: "
                             "their paths)")
    parser.add_argument("--lengths", type=int, nargs="+", default=DEFAULT_LENGTHS,
                        help="corridor lengths to evaluate (3 to 10000)")
    add_episode_options(parser, "episodes per length", n_envs=50)
    parser.add_argument("--png", default=None, help="write success against length here")
    args = parser.parse_args(argv)
    check_episode_options(parser, args)
    check_output_files(parser, {"--png": args.png})
    bad = [n for n in args.lengths if not 3 <= n <= 10_000]
    if bad:
        parser.error(f"--lengths must lie in [3, 10000], got {bad}")
    if args.labels is not None and len(args.labels) != len(args.checkpoints):
        parser.error(f"--labels needs one label per checkpoint ({len(args.checkpoints)}), "
                     f"got {len(args.labels)}")
    labels = args.labels or args.checkpoints
    models = []
    for path in args.checkpoints:
        try:
            model = load_agent(path, args.device)
            env_id = resolve_env(str(model.env_id))
        except (CheckpointError, ValueError) as err:
            parser.error(str(err))
        if "Corridor" not in env_id:
            parser.error(f"the env of {path} is {env_id}, not a corridor (MemoRL/Corridor-*)")
        models.append((model, env_id))
    mode = "stochastic" if args.stochastic else "deterministic"
    lengths = sorted(set(args.lengths))
    tables = []
    for (model, env_id), label in zip(models, labels, strict=True):
        rows = length_table(model, env_id, lengths, args.episodes, args.n_envs, args.seed,
                            not args.stochastic)
        tables.append(rows)
        print(f"{model.policy_name} from {label}, {args.episodes} episodes per length, "
              f"{mode} actions\n")
        print("| length | success | wrong door | truncated | mean steps |")
        print("|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['length']} | {r['success']:.3f} | {r['wrong_door']:.3f} | "
                  f"{r['truncated']:.3f} | {r['steps']:.1f} |")
        print(f"\nmean over these lengths: {np.mean([r['success'] for r in rows]):.3f}\n")
    if args.png:
        plot(tables, labels, args.png, f"success against corridor length ({mode})")
        print(f"picture -> {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
