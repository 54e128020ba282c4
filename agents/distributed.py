"""Data-parallel training over processes with ``torch.distributed``, launched by ``torchrun``.

Each process (rank) steps its own envs and collects its own rollout; the ranks train one set of
parameters. The trainer keeps them identical by construction:

* rank 0's initial parameters and buffers are broadcast to every rank (:meth:`broadcast_module`);
* after each minibatch's backward pass the gradients are averaged over the ranks with one
  all-reduce of a flattened bucket (:meth:`average_gradients`), before clipping and the optimizer
  step, so every rank takes the same step; the average of the per-rank mean losses is the mean
  loss of the combined batch (every rank holds the same number of sequences);
* advantages are normalised with the statistics of the global minibatch
  (:meth:`normalize_advantages`: one all-reduce of the sum, the sum of squares and the count), so
  N ranks of B envs normalise like one process of N*B envs;
* decisions taken from data agree because they are taken from reduced values: a non-finite
  gradient on any rank makes the averaged gradient non-finite on every rank (NaN and inf survive
  the sum), so every rank skips the update; the target-KL early stop compares the rank-mean KL.

The process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``; ``init_method="env://"``), or is an existing one (a caller that
initialised ``torch.distributed`` itself). The backend is nccl when the rank's device is a GPU and
gloo on CPU; a rank's device under ``auto`` (or ``cuda``) is ``cuda:LOCAL_RANK`` when GPUs exist,
else the CPU. With ``WORLD_SIZE`` unset or 1 every method is a no-op and nothing is initialised.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .validation import check_device, check_int

__all__ = [
    "Distributed",
    "LaunchInfo",
    "average_dicts",
    "launch_info",
    "process_device",
    "rank_device",
    "resolve_device",
    "setup",
    "shutdown",
]


@dataclass(frozen=True)
class LaunchInfo:
    """Where this process sits in a launch (torchrun's environment variables)."""

    rank: int = 0
    """Global rank, 0 .. world_size - 1 (``RANK``)."""

    world_size: int = 1
    """Number of processes (``WORLD_SIZE``)."""

    local_rank: int = 0
    """Rank on this machine, which picks its GPU (``LOCAL_RANK``)."""


def _int_var(env: Mapping[str, str], name: str, default: int, lo: int, hi: int | None) -> int:
    text = env.get(name, "")
    if text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {text!r}") from None
    return check_int(f"environment variable {name}", value, ge=lo, le=hi)


def launch_info(environ: Mapping[str, str] | None = None) -> LaunchInfo:
    """Read torchrun's variables from ``environ`` (default ``os.environ``).

    ``WORLD_SIZE`` unset or 1 is a single process. Otherwise ``RANK`` must be in
    ``[0, WORLD_SIZE)`` and ``MASTER_ADDR``/``MASTER_PORT`` must be set; ``LOCAL_RANK`` defaults
    to ``RANK``.
    """
    env = os.environ if environ is None else environ
    world = _int_var(env, "WORLD_SIZE", 1, 1, None)
    if world == 1:
        return LaunchInfo()
    rank = _int_var(env, "RANK", -1, 0, world - 1)
    if rank < 0:
        raise ValueError(f"WORLD_SIZE is {world} but RANK is not set (launch with torchrun)")
    local = _int_var(env, "LOCAL_RANK", rank, 0, world - 1)
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not env.get(k)]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is {world} but {', '.join(missing)} is not set (launch with torchrun)"
        )
    return LaunchInfo(rank, world, local)


def rank_device(device: str | torch.device, local_rank: int) -> torch.device:
    """The device of a rank: ``auto`` is ``cuda:local_rank`` when CUDA is available, else cpu;
    ``cuda`` is ``cuda:local_rank``; ``cpu`` and ``cuda:N`` are kept as given."""
    text = str(device)
    if text == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if text in ("auto", "cuda"):
        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n_gpus and local_rank >= n_gpus:
            raise ValueError(
                f"LOCAL_RANK {local_rank} has no GPU of its own ({n_gpus} visible): launch at "
                f"most {n_gpus} rank(s) per machine, or pass --device cpu"
            )
        return torch.device(f"cuda:{local_rank}")
    return torch.device(text)


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> cuda when available else cpu; a CUDA device must exist."""
    text = check_device("device", device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {text!r}: index must be < {torch.cuda.device_count()} "
                "(the number of CUDA devices)"
            )
    return dev


def process_device(device: str | torch.device, ctx: Distributed) -> torch.device:
    """The device of this process: the rank's device under several ranks, else ``device``."""
    return resolve_device(ctx.device if ctx.enabled and ctx.device is not None else device)


class Distributed:
    """The process group as the trainer uses it; with ``world_size`` 1 every method is a no-op
    that returns its input unchanged (so a single process behaves exactly as without it).

    Every method that communicates is a collective: all ranks must call it, in the same order.
    """

    def __init__(
        self,
        rank: int = 0,
        world_size: int = 1,
        local_rank: int = 0,
        device: torch.device | None = None,
    ) -> None:
        self.rank = rank
        """This process's global rank."""
        self.world_size = world_size
        """Number of ranks."""
        self.local_rank = local_rank
        """Rank on this machine."""
        self.device = device
        """The rank's device (None when not distributed: the caller's choice stands)."""

    @property
    def enabled(self) -> bool:
        """More than one rank."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the one that logs and writes checkpoints."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Distributed(rank={self.rank}, world_size={self.world_size}, device={self.device})"

    # parameters and gradients

    @torch.no_grad()
    def broadcast_module(self, module: nn.Module) -> None:
        """Overwrite ``module``'s parameters and buffers with rank 0's (one broadcast per dtype)."""
        if not self.enabled:
            return
        tensors = list(module.parameters()) + list(module.buffers())
        for group in _by_dtype(tensors).values():
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            for t, chunk in zip(group, flat.split([t.numel() for t in group]), strict=True):
                t.copy_(chunk.view_as(t))

    @torch.no_grad()
    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Replace every ``.grad`` with its mean over the ranks: one all-reduce of a flattened
        bucket of all gradients (per dtype, so one call for an ordinary model).

        A rank without a gradient for a parameter contributes zeros; a parameter that has no
        gradient on any rank keeps ``grad=None`` (the optimizer skips it, as in one process).
        """
        if not self.enabled:
            return
        params = [p for p in parameters if p.requires_grad]
        for group in _by_dtype(params).values():
            if any(p.grad is not None and p.grad.is_sparse for p in group):
                raise ValueError("average_gradients: sparse gradients are not supported")
            local_has = [p.grad is not None for p in group]
            has = torch.tensor(local_has, dtype=group[0].dtype, device=group[0].device)
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in group]
            flat = torch.cat([g.reshape(-1) for g in grads] + [has])
            dist.all_reduce(flat)
            flat.div_(self.world_size)
            chunks = flat.split([p.numel() for p in group] + [len(group)])
            # a host read only when this rank lacks a gradient that another rank may have
            any_grad = local_has if all(local_has) else (chunks[-1] > 0).tolist()
            for p, chunk, keep in zip(group, chunks[:-1], any_grad, strict=True):
                if not keep:
                    p.grad = None
                elif p.grad is None:
                    p.grad = chunk.view_as(p).clone()
                else:
                    p.grad.copy_(chunk.view_as(p))

    def normalize_advantages(self, adv: Tensor, std_floor: float = 0.0) -> Tensor:
        """``(adv - mean) / (max(std, std_floor) + 1e-8)`` with the mean and (Bessel-corrected)
        std of every rank's ``adv`` together: one all-reduce of the sum, sum of squares and count
        (in float64, so the one-pass variance loses nothing that matters)."""
        if not self.enabled:
            scale = adv.std().clamp_min(std_floor) + 1e-8
            return (adv - adv.mean()) / scale
        a = adv.double()
        count = torch.full((), float(a.numel()), dtype=torch.float64, device=a.device)
        stats = torch.stack([a.sum(), a.square().sum(), count])
        dist.all_reduce(stats)
        total, total_sq, n = stats.unbind()
        mean = total / n
        var = ((total_sq - n * mean * mean) / (n - 1).clamp_min(1.0)).clamp_min(0.0)
        scale = var.sqrt().clamp_min(std_floor) + 1e-8
        return ((a - mean) / scale).to(adv.dtype)

    # scalars and objects

    def mean(self, x: Tensor) -> Tensor:
        """The mean of ``x`` over the ranks (a new tensor; ``x`` itself when not distributed)."""
        if not self.enabled:
            return x
        out = x.detach().clone()
        dist.all_reduce(out)
        return out.div_(self.world_size)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        return self.any_each([flag])[0]

    def any_each(self, flags: Sequence[bool]) -> list[bool]:
        """For each flag, whether it is true on at least one rank (one all-reduce for all)."""
        if not self.enabled:
            return [bool(f) for f in flags]
        device = self.device if self.device is not None else torch.device("cpu")
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
        dist.all_reduce(t)
        return [bool(v > 0) for v in t.tolist()]

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable objects)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def gather_object(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj``, in rank order, on rank 0 (None on the others)."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        """Wait until every rank is here."""
        if self.enabled:
            dist.barrier()


def average_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the mean over the dicts that have it (keys in first-seen order)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            sums[k] = sums.get(k, 0.0) + float(v)
            counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in sums}


def setup(device: str | torch.device = "auto", *, enabled: bool | None = None) -> Distributed:
    """The process group of this launch, initialised if needed.

    Args:
        device: the requested device (``auto``, ``cpu``, ``cuda``, ``cuda:N``); under several
            ranks ``auto`` and ``cuda`` become ``cuda:LOCAL_RANK`` (:func:`rank_device`).
        enabled: None follows the environment (an initialised process group, else torchrun's
            ``WORLD_SIZE``); False is a single process whatever the environment says; True
            requires a launch of more than one rank.
    """
    if enabled is False:
        return Distributed()
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        dev = rank_device(device, local)
        if world > 1 and dev.type == "cpu" and dist.get_backend() == "nccl":
            raise ValueError(
                f"device {str(device)!r} is the CPU but the process group's backend is nccl "
                "(use a GPU device, or a gloo process group)"
            )
        return Distributed(rank, world, local, dev if world > 1 else None)
    info = launch_info()
    if info.world_size == 1:
        if enabled:
            raise ValueError(
                "distributed=True needs a launch of more than one process "
                "(torchrun --nproc-per-node N ...); WORLD_SIZE is unset or 1"
            )
        return Distributed()
    if not dist.is_available():
        raise ValueError(f"WORLD_SIZE is {info.world_size} but torch.distributed is unavailable")
    dev = rank_device(device, info.local_rank)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, init_method="env://", rank=info.rank, world_size=info.world_size
    )
    return Distributed(info.rank, info.world_size, info.local_rank, dev)


def shutdown() -> None:
    """Destroy the process group (after the last collective); a no-op when there is none."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# helpers


def _by_dtype(tensors: list[Tensor]) -> dict[torch.dtype, list[Tensor]]:
    groups: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    return groups
