"""Cost of each memory: time per step (forward, forward+backward, acting), parameters, state size.

For every registered memory (or ``--memories``) at each width (``--d-model``), on each device:

* forward: one eval-mode, no-grad call over a ``(T, B)`` sequence, divided by ``T``;
* forward+backward: the same call in train mode, loss = mean output + the ``loss_*`` terms of
  ``aux`` (``--with-auxiliary-losses`` adds :meth:`Memory.auxiliary_losses` too, as a training
  update does for memories with self-supervised losses), backward included, divided by ``T``;
* acting: ``T`` one-step calls with the state passed along, as a rollout does, divided by ``T``;
* parameters (all of them, separately trained ones included), the state bytes one env carries at
  most (``state_size_per_env``) and the bytes it carries after the ``T``-step sequence
  (``state_nbytes``).

Times are the median of ``--repeats`` runs after ``--warmup`` runs; the runs go round-robin
over all memories, so load from other processes falls on every memory alike. LSTM is always
measured too, in the same run, and the ratio columns divide each time by LSTM's at the same width
and device::

    python scripts/bench_memories.py --threads 1
    python scripts/bench_memories.py --memories trxl rmt --d-model 64 --out docs/memory_cost.md
    python scripts/bench_memories.py --device cpu cuda --batch-size 64
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies.memory import (  # noqa: E402
    Memory,
    available_memories,
    make_memory,
    state_nbytes,
)

BASELINE = "lstm"
#: The hyperparameter that sets each memory's width; any memory not listed takes ``d_model``.
WIDTH_PARAM: dict[str, str] = {"lstm": "hidden_dim", "gru": "hidden_dim", "none": "hidden_dim"}


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
    return args


class Row(NamedTuple):
    name: str
    width: int
    device: str
    params: int
    state_max: int  # bytes per env at most
    state_after: int  # bytes per env after the sequence
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
        self.mem = build(name, width, args.input_dim, device, args.seed)
        gen = torch.Generator().manual_seed(args.seed)
        self.x = torch.randn(self.t_len, self.batch, args.input_dim, generator=gen).to(device)
        self.starts = torch.zeros(self.t_len, self.batch, dtype=torch.bool, device=device)
        self.starts[0] = True
        self.targets = torch.randn(self.t_len, self.batch, generator=gen).to(device)
        self.times: dict[str, list[float]] = {"forward": [], "train": [], "act": []}

    def forward(self) -> dict[str, torch.Tensor]:
        """Eval mode, no grad, one call over the sequence; the state after it."""
        self.mem.eval()
        with torch.no_grad():
            _, state, _ = self.mem(self.x, self.mem.initial_state(self.batch, self.device),
                                   self.starts)
        return state

    def train(self) -> None:
        """Train mode, one call over the sequence, loss = mean output + ``loss_*``, backward."""
        self.mem.train()
        state = self.mem.initial_state(self.batch, self.device)
        y, _, aux = self.mem(self.x, state, self.starts)
        loss = y.mean() + sum(v for k, v in aux.items() if k.startswith("loss_"))
        if self.with_aux:
            extra = self.mem.auxiliary_losses(self.x, self.starts, state, self.targets)
            loss = loss + sum(v for k, v in extra.items() if k.startswith("loss_"))
        self.mem.zero_grad(set_to_none=True)
        loss.backward()

    def act(self) -> None:
        """Eval mode, no grad, ``T`` one-step calls with the state passed along."""
        self.mem.eval()
        with torch.no_grad():
            state = self.mem.initial_state(self.batch, self.device)
            for t in range(self.t_len):
                _, state, _ = self.mem(self.x[t : t + 1], state, self.starts[t : t + 1])

    def run(self, timed: bool) -> None:
        """Each workload once; ``timed`` records its seconds."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        for kind, fn in (("forward", self.forward), ("train", self.train), ("act", self.act)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if timed:
                self.times[kind].append(time.perf_counter() - start)

    def row(self) -> Row:
        per_step = {k: statistics.median(v) / self.t_len * 1e6 for k, v in self.times.items()}
        return Row(
            name=self.name,
            width=self.width,
            device=self.device.type,
            params=sum(p.numel() for p in self.mem.parameters()),
            state_max=self.mem.state_size_per_env(),
            state_after=state_nbytes(self.forward()),
            forward_us=per_step["forward"],
            train_us=per_step["train"],
            act_us=per_step["act"],
        )


def build(name: str, width: int, input_dim: int, device: torch.device, seed: int) -> Memory:
    torch.manual_seed(seed)
    return make_memory(name, input_dim, **{WIDTH_PARAM.get(name, "d_model"): width}).to(device)


def measure(cells: list[Cell], repeats: int, warmup: int) -> list[Row]:
    """Warm every cell up, then time the cells round-robin, ``repeats`` rounds: load from other
    processes on a shared machine then falls on every memory alike, keeping the ratios fair."""
    for cell in cells:
        progress(f"warm-up: {cell.name}, width {cell.width}, {cell.device.type}")
        for _ in range(warmup):
            cell.run(timed=False)
    for r in range(repeats):
        start = time.perf_counter()
        for cell in cells:
            cell.run(timed=True)
        progress(f"round {r + 1}/{repeats} ({time.perf_counter() - start:.1f} s)")
    return [cell.row() for cell in cells]


def kib(n: int) -> str:
    return f"{n / 1024:.1f}"


def table(rows: list[Row], args: argparse.Namespace) -> str:
    base = {(r.width, r.device): r for r in rows if r.name == BASELINE}
    aux = " + auxiliary_losses" if args.with_auxiliary_losses else ""
    header = [
        "memory", "width", "device", "params", "state KiB/env (max)", "state KiB/env (after T)",
        "forward µs/step", "fwd+bwd µs/step", "act µs/step",
        "forward / lstm", "fwd+bwd / lstm", "act / lstm",
    ]
    lines = [
        f"Memory cost per step: T={args.seq_len}, B={args.batch_size}, input {args.input_dim}; "
        f"median of {args.repeats} round-robin rounds after {args.warmup} warm-up runs; "
        f"{args.threads} torch thread(s); {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, "
        f"torch {torch.__version__}. forward: eval, no grad, one call over T steps; fwd+bwd: "
        f"train mode, loss = mean output + aux loss_*{aux}; act: T one-step calls, state passed "
        f"along. Times per step of B envs; ratios against {BASELINE} at the same width and "
        "device.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|---:|---|" + "---:|" * (len(header) - 3),
    ]
    for r in rows:
        b = base[(r.width, r.device)]
        cells = [
            f"`{r.name}`", str(r.width), r.device, f"{r.params:,}", kib(r.state_max),
            kib(r.state_after), f"{r.forward_us:,.0f}", f"{r.train_us:,.0f}", f"{r.act_us:,.0f}",
            f"{r.forward_us / b.forward_us:.2f}", f"{r.train_us / b.train_us:.2f}",
            f"{r.act_us / b.act_us:.2f}",
        ]
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
    cells = [
        Cell(name, width, device, args)
        for device in devices
        for width in args.d_model
        for name in args.memories
    ]
    rows = measure(cells, args.repeats, args.warmup)
    for row in rows:
        progress(
            f"{row.name} width {row.width} {row.device}: forward {row.forward_us:,.0f} µs/step, "
            f"fwd+bwd {row.train_us:,.0f}, act {row.act_us:,.0f}"
        )
    text = table(rows, args)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        progress(f"wrote {args.out}")
    return text


if __name__ == "__main__":
    main()
