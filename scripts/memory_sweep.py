"""Success against memory size on the corridor: Expire-Span against Transformer-XL at fixed spans
(the Expire-Span paper's figure 4), as a resumable grid.

Every cell (a policy, its memory setting and a seed) is one training run whose result is written
to ``--out/<cell>.json``; finished cells are skipped and a killed cell resumes from its
checkpoint (``--runs/<cell>/``), so the sweep can be stopped and continued at any point. Then the
table (``--out/README.md``) and the picture (``--png``) are drawn from every finished cell::

    python scripts/memory_sweep.py                                  # run or continue the grid
    python scripts/memory_sweep.py --only trxl --spans 25 50        # a part of it
    python scripts/memory_sweep.py --report                         # table and PNG only

Memory size is the paper's efficiency measure: memories attended per step and layer, averaged
over the evaluation episodes of the final policy (deterministic).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.experiments import Cell, load_results, run_cell  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def cells(args: argparse.Namespace) -> list[Cell]:
    env_tag = args.env.split("/")[-1]
    out = []
    for seed in args.seeds:
        if args.only in (None, "expire_span"):
            out.append(Cell(f"{env_tag}__expire_span__seed{seed}", args.env, "expire_span", seed,
                            args.total_steps))
        if args.only in (None, "trxl"):
            for span in args.spans:
                out.append(Cell(f"{env_tag}__trxl_L{span}__seed{seed}", args.env, "trxl", seed,
                                args.total_steps, policy_kwargs={"max_span": span}))
    return out


def report(out_dir: Path, png: Path | None) -> str:
    rows = load_results(out_dir)
    lines = [
        "| policy | memory setting | seed | steps | memory size | success (deterministic) "
        "| success (sampled) | wall time (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["cell"]["policy"], str(r["cell"]["policy_kwargs"]),
                                         r["cell"]["seed"])):
        c = r["cell"]
        setting = ", ".join(f"{k}={v}" for k, v in c["policy_kwargs"].items()) or "default"
        lines.append(
            f"| {c['policy']} | {setting} | {c['seed']} | {r['steps']:,} | "
            f"{r['deterministic']['memory_size']:.1f} | {r['deterministic']['success']:.3f} | "
            f"{r['sampled']['success']:.3f} | {r['wall_s']:.0f} |"
        )
    table = "\n".join(lines)
    (out_dir / "README.md").write_text(
        "Success against memory size (`python scripts/memory_sweep.py --report`), the final "
        "policy over fresh episodes.\n\n" + table + "\n")
    if png is not None and rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 4))
        for policy, marker in (("trxl", "o"), ("expire_span", "*")):
            pts = [(r["deterministic"]["memory_size"], r["deterministic"]["success"])
                   for r in rows if r["cell"]["policy"] == policy]
            if not pts:
                continue
            xs, ys = zip(*sorted(pts), strict=True)
            ax.plot(xs, ys, marker=marker, linestyle="-" if policy == "trxl" else "none",
                    markersize=9 if marker == "*" else 6,
                    label={"trxl": "Transformer-XL (fixed spans)",
                           "expire_span": "Expire-Span"}[policy])
        ax.set_xlabel("memory size (memories attended per step and layer)")
        ax.set_ylabel("success (deterministic)")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png, dpi=120)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="MemoRL/Corridor-v0", help="env id (%(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--spans", type=int, nargs="+", default=[25, 50, 100, 200],
                        help="Transformer-XL spans (%(default)s)")
    parser.add_argument("--only", choices=["expire_span", "trxl"], default=None)
    parser.add_argument("--total-steps", type=int, default=3_000_000)
    parser.add_argument("--episodes", type=int, default=1000, help="evaluation episodes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (%(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/memory_sweep")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs/memory_sweep")
    parser.add_argument("--png", type=Path, default=ROOT / "docs/images/memory_sweep.png")
    parser.add_argument("--report", action="store_true", help="only write the table and PNG")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.report:
        for cell in cells(args):
            print(f"cell {cell.name}", flush=True)
            r = run_cell(cell, args.out, args.runs, episodes=args.episodes)
            print(f"  success {r['deterministic']['success']:.3f} (sampled "
                  f"{r['sampled']['success']:.3f}), memory size "
                  f"{r['deterministic']['memory_size']:.1f}, {r['wall_s']:.0f} s", flush=True)
    print(report(args.out, args.png))


if __name__ == "__main__":
    main()
