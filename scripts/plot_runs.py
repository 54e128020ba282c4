"""Learning curves (PNG) from the TensorBoard logs of training runs.

    python scripts/plot_runs.py runs/ --tag charts/success_rate --out success.png
    python scripts/plot_runs.py runs/A runs/B --tag charts/episodic_return --smooth 0.8
    python scripts/plot_runs.py runs/A runs/B --tag charts/success_rate memory/span_mean \
        --labels "alpha 0" "alpha 5e-6" --out curves.png

Each argument is a run directory or a directory of runs (every directory below it holding event
files is a run). Several tags give one panel each, side by side. Runs are labelled by their
directory name (``<env>__<policy>__<seed>__<time>``) unless ``--labels`` names them, in the order
the runs are found: the paths in the order given, the runs under each path sorted by name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def find_runs(paths: list[str]) -> list[Path]:
    """The runs under ``paths``: in the order of the paths, sorted by name under each."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise SystemExit(f"error: {p} does not exist")
        for run in sorted({ev.parent for ev in p.rglob("events.out.tfevents.*")}):
            if run not in runs:
                runs.append(run)
    return runs


def read_scalar(run: Path, tag: str) -> tuple[np.ndarray, np.ndarray] | None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        return None
    events = acc.Scalars(tag)
    return np.array([e.step for e in events]), np.array([e.value for e in events])


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's exponential moving average (debiased)."""
    out, avg = np.empty_like(values, dtype=float), 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out[i] = avg / (1 - weight ** (i + 1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run directories or directories of runs")
    parser.add_argument("--tag", nargs="+", default=["charts/success_rate"],
                        help="scalar tag(s) to plot, one panel each")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="legend labels, one per run (default: the run directory names)")
    parser.add_argument("--smooth", type=float, default=0.6,
                        help="exponential smoothing weight in [0, 1)")
    parser.add_argument("--out", default="learning_curves.png", help="output PNG")
    parser.add_argument("--title", default=None,
                        help="figure title (default: the tag, for one tag; none for several)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.smooth < 1.0:
        parser.error(f"--smooth must be in [0, 1), got {args.smooth}")
    runs = find_runs(args.paths)
    if not runs:
        parser.error(f"no TensorBoard event files under {', '.join(args.paths)}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.labels is not None and len(args.labels) != len(runs):
        parser.error(f"--labels needs one label per run ({len(runs)}: "
                     f"{', '.join(r.name for r in runs)}), got {len(args.labels)}")
    labels = args.labels or [run.name for run in runs]
    tags = args.tag
    fig, axes = plt.subplots(1, len(tags), figsize=(8 if len(tags) == 1 else 5 * len(tags), 4.5),
                             squeeze=False)
    plotted = set()
    for ax, tag in zip(axes[0], tags, strict=True):
        for run, label in zip(runs, labels, strict=True):
            data = read_scalar(run, tag)
            if data is None:
                print(f"{run}: no {tag!r} scalars, skipped", file=sys.stderr)
                continue
            steps, values = data
            ax.plot(steps, smooth(values, args.smooth), label=label)
            plotted.add(run)
        ax.set_xlabel("env steps")
        ax.set_ylabel(tag)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize="small")
        if len(tags) > 1:
            ax.set_title(tag)
    if not plotted:
        parser.error(f"no run has the tag(s) {', '.join(map(repr, tags))}")
    if len(tags) == 1:
        axes[0][0].set_title(args.title or tags[0])
    elif args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"{len(plotted)} run(s) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
