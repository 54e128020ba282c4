"""Draws each memory task: a PNG of its map, and with ``--play`` a GIF of its oracle solving it.

Examples::

    python scripts/render_envs.py                      # docs/images/<task>.png
    python scripts/render_envs.py --play --fps 8       # and docs/images/<task>_oracle.gif
    python scripts/render_envs.py --envs corridor --seed 3 --out-dir /tmp/frames
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs import resolve_env_id  # noqa: E402
from envs.oracles import make_scripted_policy  # noqa: E402

# What each picture shows: a short map per task, so that the whole map fits in a figure.
PICTURES: dict[str, tuple[str, dict]] = {
    "corridor": ("MemoRL/Corridor-v0", {"min_length": 12, "max_length": 12}),
    "portal": ("MemoRL/Portal-v0", {"n_rooms": 10, "rooms_per_row": 5}),
    "instruction": ("MemoRL/Instruction-v0", {}),
    "tmaze": ("MemoRL/TMaze-v0", {"length": 12}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--envs",
        nargs="+",
        default=list(PICTURES),
        help="tasks to draw: short names (corridor, portal, instruction, tmaze) or registered "
        "ids (default: all four, with small maps)",
    )
    parser.add_argument(
        "--out-dir", type=Path, default=Path("docs/images"), help="output folder (docs/images)"
    )
    parser.add_argument("--seed", type=int, default=0, help="reset seed of the episode (0)")
    parser.add_argument("--tile-size", type=int, default=24, help="pixels per cell (24)")
    parser.add_argument("--play", action="store_true", help="also write a GIF of the oracle")
    parser.add_argument("--max-frames", type=int, default=300, help="longest GIF, in steps (300)")
    parser.add_argument("--fps", type=float, default=8.0, help="GIF frames per second (8)")
    return parser.parse_args(argv)


def make(name: str, tile_size: int) -> tuple[str, gym.Env]:
    env_id, kwargs = PICTURES.get(name, (resolve_env_id(name), {}))
    label = name if name in PICTURES else env_id.split("/")[-1]
    return label, gym.make(env_id, render_mode="rgb_array", tile_size=tile_size, **kwargs)


def play(env: gym.Env, seed: int, max_frames: int) -> list[np.ndarray]:
    """Frames of one episode of the task's oracle, the last frame repeated as a pause."""
    policy = make_scripted_policy(env, memory=True, seed=seed)
    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    for _ in range(max_frames):
        obs, _, terminated, truncated, _ = env.step(policy.act(obs))
        frames.append(env.render())
        if terminated or truncated:
            break
    return frames + [frames[-1]] * 8


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name in args.envs:
        label, env = make(name, args.tile_size)
        env.reset(seed=args.seed)
        png = args.out_dir / f"{label}.png"
        imageio.imwrite(png, env.render())
        print(f"wrote {png}")
        if args.play:
            gif = args.out_dir / f"{label}_oracle.gif"
            frames = play(env, args.seed, args.max_frames)
            imageio.mimsave(gif, frames, duration=1000.0 / args.fps, loop=0)
            print(f"wrote {gif} ({len(frames)} frames)")
        env.close()


if __name__ == "__main__":
    main()
