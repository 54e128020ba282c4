"""Cost of each memory: time per step (forward, forward+backward, acting), parameters, state size.

For every registered memory (or ``--memories``) at each width (``--d-model``), on each device:

* forward: one eval-mode, no-grad call over a ``(T, B)`` sequence, divided by ``T``;
* forward+backward: the same call in train mode, loss = mean output + the ``loss_*`` terms of
  ``aux`` (``--with-auxiliary-losses`` adds :meth:`Memory.auxiliary_losses` too, as a training
  update does for memories with self-supervised losses), backward included, divided by ``T``;
* acting: ``T`` one-step calls with the state passed along, as a rollout does, divided by ``T``
  (the first step after a training call rebuilds the acting cache, as a rollout's first step after
  an update does);
* parameters (all of them, separately trained ones included), the state bytes one env carries at
  most (``state_size_per_env``) and the bytes it carries after the ``T``-step sequence
  (``state_nbytes``), and the memories a cache holds (mean over layers and envs, for memories
  whose state has ``valid_*`` keys).

``--prefill N`` starts every workload in the middle of an episode, from the state after ``N``
untimed steps (a full cache: the cost of acting at a cache of 200 is, for Expire-Span, ``--prefill
300 --set expire_span.init_span_fraction=0.925``). ``--set NAME.KEY=VALUE`` sets a hyperparameter
of one memory.

Times are the median of ``--repeats`` runs after ``--warmup`` runs; the runs go round-robin
over all memories, so load from other processes falls on every memory alike. LSTM is always
measured too, in the same run, and the ratio columns divide each time by LSTM's at the same width
and device. ``--baseline DIR`` also times every cell with the memories of another checkout (e.g.
the main branch), in child processes that alternate with this checkout's round by round, and adds
the speedup against it (baseline time / this time)::

    python scripts/bench_memories.py --threads 1
    python scripts/bench_memories.py --memories trxl rmt --d-model 64 --out docs/memory_cost.md
    python scripts/bench_memories.py --device cpu cuda --batch-size 64
    python scripts/bench_memories.py --memories expire_span --d-model 64 --prefill 300 \\
        --set expire_span.init_span_fraction=0.925 --baseline ../main
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

ROOT = Path(__file__).resolve().parents[1]


def _code_dir(argv: list[str]) -> Path:
    """The checkout whose memories are timed: ``--code DIR`` (read before importing them)."""
    if "--code" in argv:
        i = argv.index("--code")
        if i + 1 < len(argv):
            return Path(argv[i + 1]).resolve()
    return ROOT


sys.path.insert(0, str(_code_dir(sys.argv)))

from policies.memory import (  # noqa: E402
    Memory,
    available_memories,
    make_memory,
    state_nbytes,
)

BASELINE = "lstm"
#: The hyperparameter that sets each memory's width; any memory not listed takes ``d_model``.
WIDTH_PARAM: dict[str, str] = {"lstm": "hidden_dim", "gru": "hidden_dim", "none": "hidden_dim"}
WORKLOADS = ("forward", "train", "act")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def setting(text: str) -> tuple[str, str, Any]:
    """``NAME.KEY=VALUE`` -> (memory, hyperparameter, value as a Python literal or a string)."""
    target, sep, raw = text.partition("=")
    name, dot, key = target.partition(".")
    if not sep or not dot or not name or not key:
        raise argparse.ArgumentTypeError(f"expected NAME.KEY=VALUE, got {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return name, key, value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Progress goes to stderr; the Markdown table to stdout (and --out).",
    )
    parser.add_argument(
        "--memories",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"memories to measure (default: every registered one: "
        f"{' '.join(available_memories())}); {BASELINE} is added for the ratios",
    )
    parser.add_argument(
        "--d-model",
        type=positive_int,
        nargs="+",
        default=[64, 128],
        metavar="WIDTH",
        help="widths to measure, passed as each memory's width hyperparameter "
        "(d_model; hidden_dim for lstm, gru, none) (default: 64 128)",
    )
    parser.add_argument(
        "--seq-len", type=positive_int, default=100, help="steps T of the sequence (default: 100)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=16, help="envs B of the sequence (default: 16)"
    )
    parser.add_argument(
        "--input-dim",
        type=positive_int,
        default=64,
        help="input features per step, the encoder's output size (default: 64)",
    )
    parser.add_argument(
        "--prefill",
        type=non_negative_int,
        default=0,
        help="untimed steps of the same episode before every workload, so that it starts with "
        "a full memory (default: 0, a fresh episode)",
    )
    parser.add_argument(
        "--set",
        type=setting,
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="a hyperparameter of one memory, e.g. expire_span.init_span_fraction=0.925 "
        "(repeatable)",
    )
    parser.add_argument(
        "--device",
        nargs="+",
        choices=["cpu", "cuda"],
        default=["cpu"],
        help="devices to measure on; cuda is skipped with a note where absent (default: cpu)",
    )
    parser.add_argument(
        "--threads", type=positive_int, default=1, help="torch CPU threads (default: 1)"
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time, steadier on a machine shared "
        "with other processes (CPU devices only) (default: wall)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=7,
        help="timed rounds over all cells (round-robin), median per cell (default: 7)",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=2,
        help="untimed runs per cell first (default: 2)",
    )
    parser.add_argument(
        "--with-auxiliary-losses",
        action="store_true",
        help="add Memory.auxiliary_losses (e.g. rehearsal's) to the forward+backward loss",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="also time every cell with the memories of the checkout DIR (child processes "
        "alternating with this checkout's, round by round) and show the speedup against it",
    )
    parser.add_argument(
        "--code", type=Path, default=None, metavar="DIR",
        help="time the memories of the checkout DIR instead of this one's",
    )
    parser.add_argument(
        "--json", action="store_true",
        help="print the per-round times as JSON instead of the table (used by --baseline)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs (0)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to FILE")
    args = parser.parse_args(argv)
    known = available_memories()
    names = list(dict.fromkeys(args.memories or known))
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown memories {unknown}; choose from: {' '.join(known)}")
    if BASELINE not in names:
        names.append(BASELINE)
    args.memories = names
    args.settings = {}
    for name, key, value in args.set:
        if name not in names:
            parser.error(f"--set {name}.{key}: {name!r} is not measured; measured: "
                         f"{' '.join(names)}")
        args.settings.setdefault(name, {})[key] = value
    return args


class Row(NamedTuple):
    name: str
    width: int
    device: str
    params: int
    state_max: int  # bytes per env at most
    state_after: int  # bytes per env after the sequence
    kept: float | None  # memories a cache holds after the prefill (mean), None without a cache
    forward_us: float  # per step
    train_us: float  # per step
    act_us: float  # per step


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Cell:
    """One memory at one width on one device, with its inputs and the three timed workloads."""

    def __init__(self, name: str, width: int, device: torch.device, args: argparse.Namespace):
        self.name, self.width, self.device = name, width, device
        self.t_len, self.batch = args.seq_len, args.batch_size
        self.with_aux = args.with_auxiliary_losses
        self.mem = build(name, width, args.input_dim, device, args.seed,
                         args.settings.get(name, {}))
        gen = torch.Generator().manual_seed(args.seed)
        self.x = torch.randn(self.t_len, self.batch, args.input_dim, generator=gen).to(device)
        self.starts = torch.zeros(self.t_len, self.batch, dtype=torch.bool, device=device)
        self.targets = torch.randn(self.t_len, self.batch, generator=gen).to(device)
        self.start = self.mem.initial_state(self.batch, device)
        if args.prefill:
            before = torch.randn(args.prefill, self.batch, args.input_dim, generator=gen)
            starts = torch.zeros(args.prefill, self.batch, dtype=torch.bool, device=device)
            starts[0] = True
            self.mem.eval()
            with torch.no_grad():
                _, self.start, _ = self.mem(before.to(device), self.start, starts)
        else:
            self.starts[0] = True
        self.times: dict[str, list[float]] = {k: [] for k in WORKLOADS}

    def forward(self) -> dict[str, torch.Tensor]:
        """Eval mode, no grad, one call over the sequence; the state after it."""
        self.mem.eval()
        with torch.no_grad():
            _, state, _ = self.mem(self.x, self.start, self.starts)
        return state

    def train(self) -> None:
        """Train mode, one call over the sequence, loss = mean output + ``loss_*``, backward."""
        self.mem.train()
        y, _, aux = self.mem(self.x, self.start, self.starts)
        loss = y.mean() + sum(v for k, v in aux.items() if k.startswith("loss_"))
        if self.with_aux:
            extra = self.mem.auxiliary_losses(self.x, self.starts, self.start, self.targets)
            loss = loss + sum(v for k, v in extra.items() if k.startswith("loss_"))
        self.mem.zero_grad(set_to_none=True)
        loss.backward()

    def act(self) -> None:
        """Eval mode, no grad, ``T`` one-step calls with the state passed along."""
        self.mem.eval()
        with torch.no_grad():
            state = self.start
            for t in range(self.t_len):
                _, state, _ = self.mem(self.x[t : t + 1], state, self.starts[t : t + 1])

    def run(self, timed: bool, clock: str = "wall") -> None:
        """Each workload once; ``timed`` records its seconds."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        now = time.process_time if clock == "cpu" else time.perf_counter
        for kind in WORKLOADS:
            fn = getattr(self, kind)
            sync()
            start = now()
            fn()
            sync()
            if timed:
                self.times[kind].append(now() - start)

    def row(self, times: dict[str, list[float]] | None = None) -> Row:
        times = self.times if times is None else times
        per_step = {k: statistics.median(v) / self.t_len * 1e6 for k, v in times.items()}
        valid = [v for k, v in self.start.items() if k.startswith("valid_")]
        kept = (float(torch.stack([v.sum(dim=1).float().mean() for v in valid]).mean())
                if valid else None)
        return Row(
            name=self.name,
            width=self.width,
            device=self.device.type,
            params=sum(p.numel() for p in self.mem.parameters()),
            state_max=self.mem.state_size_per_env(),
            state_after=state_nbytes(self.forward()),
            kept=kept,
            forward_us=per_step["forward"],
            train_us=per_step["train"],
            act_us=per_step["act"],
        )


def build(name: str, width: int, input_dim: int, device: torch.device, seed: int,
          settings: dict[str, Any]) -> Memory:
    torch.manual_seed(seed)
    config = {WIDTH_PARAM.get(name, "d_model"): width, **settings}
    return make_memory(name, input_dim, **config).to(device)


def warm_up(cells: list[Cell], warmup: int) -> None:
    for cell in cells:
        progress(f"warm-up: {cell.name}, width {cell.width}, {cell.device.type}")
        for _ in range(warmup):
            cell.run(timed=False)


def measure(cells: list[Cell], repeats: int, warmup: int, clock: str = "wall") -> list[Row]:
    """Warm every cell up, then time the cells round-robin, ``repeats`` rounds: load from other
    processes on a shared machine then falls on every memory alike, keeping the ratios fair."""
    warm_up(cells, warmup)
    for r in range(repeats):
        start = time.perf_counter()
        for cell in cells:
            cell.run(timed=True, clock=clock)
        progress(f"round {r + 1}/{repeats} ({time.perf_counter() - start:.1f} s)")
    return [cell.row() for cell in cells]


def child_argv(args: argparse.Namespace, code: Path) -> list[str]:
    """This script's command line for one timed round of every cell with ``code``'s memories."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--json", "--code", str(code),
            "--repeats", "1", "--warmup", str(args.warmup), "--memories", *args.memories,
            "--d-model", *map(str, args.d_model), "--seq-len", str(args.seq_len),
            "--batch-size", str(args.batch_size), "--input-dim", str(args.input_dim),
            "--prefill", str(args.prefill), "--device", *args.device,
            "--threads", str(args.threads), "--seed", str(args.seed), "--clock", args.clock]
    for name, key, value in args.set:
        argv += ["--set", f"{name}.{key}={value!r}"]
    if args.with_auxiliary_losses:
        argv.append("--with-auxiliary-losses")
    return argv


def measure_against(cells: list[Cell], args: argparse.Namespace) -> tuple[list[Row], list[Row]]:
    """Rows of this checkout and of ``args.baseline``, from child processes alternating round by
    round (each warms its cells up, then times one round)."""
    times: dict[str, list[list[dict[str, list[float]]]]] = {"this": [], "baseline": []}
    for r in range(args.repeats):
        order = (("this", ROOT), ("baseline", args.baseline))
        for tag, code in order if r % 2 == 0 else order[::-1]:
            out = subprocess.run(child_argv(args, code), capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"timing {code} failed:\n{out.stderr}")
            times[tag].append(json.loads(out.stdout))
        progress(f"round {r + 1}/{args.repeats}")

    def rows(tag: str) -> list[Row]:
        merged = []
        for i, cell in enumerate(cells):
            per = {k: [rnd[i][k][0] for rnd in times[tag]] for k in WORKLOADS}
            merged.append(cell.row(per))
        return merged

    return rows("this"), rows("baseline")


def kib(n: int) -> str:
    return f"{n / 1024:.1f}"


def table(rows: list[Row], args: argparse.Namespace, baseline: list[Row] | None = None) -> str:
    base = {(r.width, r.device): r for r in rows if r.name == BASELINE}
    aux = " + auxiliary_losses" if args.with_auxiliary_losses else ""
    header = [
        "memory", "width", "device", "params", "state KiB/env (max)", "state KiB/env (after T)",
        "forward µs/step", "fwd+bwd µs/step", "act µs/step",
        "forward / lstm", "fwd+bwd / lstm", "act / lstm",
    ]
    if args.prefill:
        header.insert(6, "cache (memories)")
    if baseline is not None:
        header += ["forward speedup", "fwd+bwd speedup", "act speedup"]
    prefill = (f" Every workload starts after {args.prefill} untimed steps of the same episode."
               if args.prefill else "")
    settings = "".join(f" {name}: {key}={value!r}." for name, key, value in args.set)
    against = (f" Speedups: time with the memories of {args.baseline} / this checkout's, in "
               "child processes alternating round by round." if baseline is not None else "")
    lines = [
        f"Memory cost per step: T={args.seq_len}, B={args.batch_size}, input {args.input_dim}; "
        f"median of {args.repeats} round-robin rounds after {args.warmup} warm-up runs; "
        f"{args.threads} torch thread(s); {args.clock} clock; "
        f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, "
        f"torch {torch.__version__}. forward: eval, no grad, one call over T steps; fwd+bwd: "
        f"train mode, loss = mean output + aux loss_*{aux}; act: T one-step calls, state passed "
        f"along. Times per step of B envs; ratios against {BASELINE} at the same width and "
        f"device.{prefill}{settings}{against}",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---:|---|" + "---:|" * (len(header) - 3),
    ]
    for i, r in enumerate(rows):
        b = base[(r.width, r.device)]
        cells = [
            f"`{r.name}`", str(r.width), r.device, f"{r.params:,}", kib(r.state_max),
            kib(r.state_after), f"{r.forward_us:,.0f}", f"{r.train_us:,.0f}", f"{r.act_us:,.0f}",
            f"{r.forward_us / b.forward_us:.2f}", f"{r.train_us / b.train_us:.2f}",
            f"{r.act_us / b.act_us:.2f}",
        ]
        if args.prefill:
            cells.insert(6, "" if r.kept is None else f"{r.kept:.0f}")
        if baseline is not None:
            o = baseline[i]
            cells += [f"{o.forward_us / r.forward_us:.2f}", f"{o.train_us / r.train_us:.2f}",
                      f"{o.act_us / r.act_us:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = []
    for name in args.device:
        if name == "cuda" and not torch.cuda.is_available():
            progress("cuda requested but not available: skipped")
            continue
        devices.append(torch.device(name))
    if not devices:
        raise SystemExit("no requested device is available")
    if args.clock == "cpu" and any(d.type != "cpu" for d in devices):
        raise SystemExit("--clock cpu times CPU work only; use --clock wall with cuda")
    cells = [
        Cell(name, width, device, args)
        for device in devices
        for width in args.d_model
        for name in args.memories
    ]
    if args.json:  # one child of --baseline: warm-up, then the rounds' times per cell
        warm_up(cells, args.warmup)
        for _ in range(args.repeats):
            for cell in cells:
                cell.run(timed=True, clock=args.clock)
        text = json.dumps([cell.times for cell in cells])
        print(text)
        return text
    baseline = None
    if args.baseline is not None:
        rows, baseline = measure_against(cells, args)
    else:
        rows = measure(cells, args.repeats, args.warmup, args.clock)
    for row in rows:
        progress(
            f"{row.name} width {row.width} {row.device}: forward {row.forward_us:,.0f} µs/step, "
            f"fwd+bwd {row.train_us:,.0f}, act {row.act_us:,.0f}"
        )
    text = table(rows, args, baseline)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        progress(f"wrote {args.out}")
    return text


if __name__ == "__main__":
    main()
