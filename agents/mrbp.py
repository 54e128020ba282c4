"""Gradient through time for training sequences: truncated BPTT and memory-replay
back-propagation (MRBP, Memformer section 3.5, algorithm 1).

Both take a :class:`~agents.buffer.SequenceBatch` of ``L`` steps and a loss function, and leave the
gradient of the loss summed over the sequence in the parameters' ``.grad``:

* :func:`bptt_backward` runs the whole sequence with its graph, then one backward.
* :func:`mrbp_backward` runs the sequence in chunks without a graph, keeping only the memory state
  at each chunk boundary; then, from the last chunk to the first, recomputes each chunk with its
  graph from its stored state (float tensors made leaves requiring grad) and back-propagates the
  chunk's loss plus the dot product of its output state with the gradient that the next chunk
  sent to its input state. The gradients equal full BPTT's at the activation memory of one chunk.
  The RNG state (CPU and CUDA) is restored before each recompute, so stochastic layers (dropout,
  random memory shortening) replay exactly what the forward pass drew.

Works with every memory: states are dicts of batch-first tensors; integer/bool tensors carry no
gradient; states may change size from chunk to chunk (the recompute reproduces the same sizes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.distributions import Categorical

from policies.actor_critic import ActorCritic
from policies.memory import State

from .buffer import SequenceBatch
from .validation import check_int

__all__ = ["ChunkOutput", "LossFn", "bptt_backward", "mrbp_backward", "run_policy"]


class ChunkOutput(NamedTuple):
    """The policy's outputs on a (chunk of a) training sequence."""

    dist: Categorical  # batch shape (L, N)
    values: Tensor  # (L, N)
    state: State  # memory state after the last step
    aux: dict[str, Tensor]  # the memory's aux dict
    features: Tensor  # (L, N, features_dim): the memory's input
    state_in: State  # memory state before the first step


#: ``loss_fn(batch, out, fraction) -> (loss, stats)``: the loss of ``batch`` (a chunk of the
#: sequences) scaled by ``fraction`` (the chunk's share of the sequence's steps), so that the
#: chunks' losses sum to the sequence's; ``stats`` are detached scalars scaled the same way.
LossFn = Callable[[SequenceBatch, ChunkOutput, float], tuple[Tensor, dict[str, Tensor]]]


def run_policy(policy: ActorCritic, batch: SequenceBatch, state: State) -> ChunkOutput:
    """The policy on ``batch`` from memory ``state``."""
    x = policy.features(batch.obs)
    dist, values, state_out, aux = policy.heads(x, state, batch.episode_starts)
    return ChunkOutput(dist, values, state_out, aux, x, state)


def _add(total: dict[str, Tensor], stats: dict[str, Tensor]) -> None:
    for k, v in stats.items():
        total[k] = total[k] + v if k in total else v


def bptt_backward(policy: ActorCritic, batch: SequenceBatch, loss_fn: LossFn) -> dict[str, Tensor]:
    """Backward of the loss over whole sequences (gradient through all ``L`` steps)."""
    out = run_policy(policy, batch, batch.state)
    loss, stats = loss_fn(batch, out, 1.0)
    loss.backward()
    return stats


# rng


def _rng_devices(policy: ActorCritic) -> list[int]:
    devices = {p.device for p in policy.parameters()}
    return sorted({d.index or 0 for d in devices if d.type == "cuda"})


def _get_rng(cuda_devices: list[int]) -> tuple[Tensor, list[Tensor]]:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in cuda_devices]


def _set_rng(rng: tuple[Tensor, list[Tensor]], cuda_devices: list[int]) -> None:
    torch.set_rng_state(rng[0])
    for d, s in zip(cuda_devices, rng[1], strict=True):
        torch.cuda.set_rng_state(s, d)


def _leaves(state: State) -> State:
    """The state as new graph leaves: float tensors require grad, others pass through."""
    return {
        k: v.detach().requires_grad_(True) if v.is_floating_point() else v
        for k, v in state.items()
    }


def mrbp_backward(
    policy: ActorCritic, batch: SequenceBatch, loss_fn: LossFn, chunk_len: int
) -> dict[str, Tensor]:
    """Memory-replay back-propagation over ``batch`` in chunks of ``chunk_len`` steps.

    Leaves in ``.grad`` the same gradients as :func:`bptt_backward` with the sequences run chunk by
    chunk (identical to one call over the sequence for a memory that honours the chunk invariance
    of the contract).
    """
    length = batch.actions.shape[0]
    check_int("chunk_len", chunk_len, ge=1)
    bounds = list(range(0, length, chunk_len)) + [length]
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    cuda = _rng_devices(policy)

    # 1. forward without graph: keep the state entering each chunk and the RNG state it saw
    states: list[State] = [batch.state]
    rngs = []
    with torch.no_grad():
        for lo, hi in spans[:-1]:
            rngs.append(_get_rng(cuda))
            out = run_policy(policy, batch.time_slice(lo, hi), states[-1])
            states.append(out.state)
    rngs.append(_get_rng(cuda))

    # 2. chunks in reverse, recomputed with graph; the last chunk needs no replay
    stats: dict[str, Tensor] = {}
    grad_next: dict[str, Tensor | None] | None = None
    for i in range(len(spans) - 1, -1, -1):
        lo, hi = spans[i]
        if i < len(spans) - 1:
            _set_rng(rngs[i], cuda)
        state_in = _leaves(states[i]) if i > 0 else states[i]
        chunk = batch.time_slice(lo, hi, state_in)
        out = run_policy(policy, chunk, state_in)
        if i == len(spans) - 1:
            rng_end = _get_rng(cuda)
        loss, chunk_stats = loss_fn(chunk, out, (hi - lo) / length)
        _add(stats, chunk_stats)
        tensors, grads = [loss], [torch.ones_like(loss)]
        if grad_next is not None:
            # d(loss + <state_out, g>) = what full BPTT would send back from the later chunks
            for k, g in grad_next.items():
                s_out = out.state.get(k)
                if g is not None and s_out is not None and s_out.requires_grad:
                    tensors.append(s_out)
                    grads.append(g)
        torch.autograd.backward(tensors, grads)
        if i > 0:
            grad_next = {k: v.grad if v.is_floating_point() else None for k, v in state_in.items()}
    _set_rng(rng_end, cuda)  # continue as if the sequence had been run once
    return stats
