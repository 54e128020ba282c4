"""History fragments and the history sampler of Rehearsal Memory (paper section 3.3.2).

A stored training sequence ``x`` (T, B, D) is cut, per env row, into fragments of ``length``
consecutive steps counted from each episode's first step in the sequence (or from the sequence
start when the row's episode began earlier). A fragment never crosses an episode start.

Fragments are kept on a time-major grid ``(C, B)`` with ``C = T // length``: column ``b`` lists
row ``b``'s fragments in time order, padded with invalid entries. Nothing here reads tensors back
to the host, so the sampler runs on the accelerator without synchronising.

The teacher (:class:`HistoryTeacher`, paper eq. 5) is a direct-reasoning model: it sees the raw
fragments of the history and, by additive attention from each step's query, predicts that step's
target, a per-step estimate of the return (:func:`policies.memory.memory_losses` passes it: the
returns under our trainer, the critic's values under stable-baselines3). Its attention weights
rank the fragments; the selection takes half of the picks from each half of a row's history
(paper eq. 6). The uniform sampler is the paper's "random sampler" ablation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "Fragments",
    "HistoryTeacher",
    "build_fragments",
    "fragment_items",
    "select_fragments",
]


class Fragments(NamedTuple):
    """Fragments of a sequence on a ``(C, B)`` grid (C fragments at most per env row)."""

    start: Tensor  # (C, B) long: time index of each fragment's first step (T where invalid)
    valid: Tensor  # (C, B) bool: the grid entry holds a fragment
    episode: Tensor  # (C, B) long: episode number of the fragment within its row
    length: int  # steps per fragment


# helpers


def last_start(episode_starts: Tensor) -> Tensor:
    """(T, B) long: index of the last episode start at or before each step, -1 if none."""
    t = episode_starts.shape[0]
    steps = torch.arange(t, device=episode_starts.device).unsqueeze(1)
    marked = torch.where(episode_starts, steps, torch.full_like(steps, -1))
    return torch.cummax(marked, dim=0).values


def next_start(episode_starts: Tensor) -> Tensor:
    """(T, B) long: index of the first episode start strictly after each step, T if none."""
    t = episode_starts.shape[0]
    steps = torch.arange(t, device=episode_starts.device).unsqueeze(1)
    marked = torch.where(episode_starts, steps, torch.full_like(steps, t))
    # first start at or after t, then shift by one to make it strictly after
    after = torch.cummin(marked.flip(0), dim=0).values.flip(0)
    tail = torch.full_like(after[:1], t)
    return torch.cat([after[1:], tail])


def build_fragments(x: Tensor, episode_starts: Tensor, length: int) -> Fragments:
    """Cut each env row of ``x`` (T, B, ...) into fragments of ``length`` steps.

    Fragments are consecutive, non-overlapping windows counted from each episode's first step in
    the sequence (or from step 0 for the row's first, already running, episode); a window that
    would cross an episode start or run past the sequence end is dropped.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if episode_starts.shape != x.shape[:2]:
        raise ValueError(
            f"episode_starts must have shape {tuple(x.shape[:2])}, "
            f"got {tuple(episode_starts.shape)}"
        )
    t_len, batch = episode_starts.shape
    device = episode_starts.device
    starts = episode_starts.bool()
    steps = torch.arange(t_len, device=device).unsqueeze(1).expand(t_len, batch)
    origin = last_start(starts).clamp(min=0)  # the row's first episode counts from step 0
    aligned = (steps - origin) % length == 0
    fits = next_start(starts) >= steps + length  # no start inside (t, t + length - 1]
    ok = aligned & fits & (steps + length <= t_len)
    n_max = t_len // length
    slot = torch.cumsum(ok.long(), dim=0) - 1
    slot = torch.where(ok, slot, torch.full_like(slot, n_max))  # a dump row for non-fragments
    start = torch.full((n_max + 1, batch), t_len, dtype=torch.long, device=device)
    start.scatter_(0, slot, torch.where(ok, steps, torch.full_like(steps, t_len)))
    start = start[:n_max]
    valid = start < t_len
    episode_of_step = torch.cumsum(starts.long(), dim=0)
    episode = torch.gather(episode_of_step, 0, start.clamp(max=max(t_len - 1, 0)))
    return Fragments(start=start, valid=valid, episode=episode, length=length)


def fragment_items(x: Tensor, fragments: Fragments) -> Tensor:
    """The steps of each fragment: (C, B, length, D) from ``x`` (T, B, D) (zeros where invalid)."""
    t_len, batch, dim = x.shape
    offsets = torch.arange(fragments.length, device=x.device)
    times = (fragments.start.unsqueeze(-1) + offsets).clamp(max=t_len - 1)  # (C, B, N)
    rows = torch.arange(batch, device=x.device).view(1, batch, 1).expand_as(times)
    items = x[times, rows]  # (C, B, N, D)
    return items * fragments.valid.unsqueeze(-1).unsqueeze(-1).to(x.dtype)


# the teacher


class TeacherOutput(NamedTuple):
    prediction: Tensor  # (T, B) predicted (standardised) target
    weights: Tensor  # (T, B, C) attention of each step's query over the fragments it sees
    visible: Tensor  # (T, B, C) bool: fragment c is in the step's episode and ended before it
    importance: Tensor  # (C, B) mean weight relative to a uniform share (1 = average)


class HistoryTeacher(nn.Module):
    """The history sampler's direct-reasoning model (paper eq. 5), trained on its own loss.

    Each step ``t`` is a query ``q_t``; the fragments of the same episode that ended at or before
    ``t`` are its history, each summarised by the mean of its item features ``h_c``. Additive
    attention ``beta_c = w^T tanh(W1 q + W2 h_c + b)`` over those fragments gives ``e``, and a small
    head predicts the step's target from ``[e; q]``.
    """

    def __init__(self, input_dim: int, *, hidden_dim: int = 64) -> None:
        """
        Args:
            input_dim: size of each step's features.
            hidden_dim: width of the teacher's item, query and attention features.
        """
        super().__init__()
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
        self.item = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU())
        self.query = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU())
        self.w_query = nn.Linear(hidden_dim, hidden_dim, bias=True)  # W1h, bh
        self.w_fragment = nn.Linear(hidden_dim, hidden_dim, bias=False)  # W2h
        self.score = nn.Linear(hidden_dim, 1, bias=False)  # wh
        self.head = nn.Sequential(
            nn.Linear(2 * hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1)
        )

    def forward(self, x: Tensor, episode_starts: Tensor, fragments: Fragments) -> TeacherOutput:
        """Predict every step's target from its past fragments. ``x``: (T, B, D)."""
        t_len = x.shape[0]
        h = self.item(fragment_items(x, fragments)).mean(dim=2)  # (C, B, H)
        q = self.query(x)  # (T, B, H)
        a = self.w_query(q).unsqueeze(2) + self.w_fragment(h).transpose(0, 1).unsqueeze(0)
        beta = self.score(torch.tanh(a)).squeeze(-1)  # (T, B, C)
        steps = torch.arange(t_len, device=x.device).view(t_len, 1, 1)
        episode_of_step = torch.cumsum(episode_starts.long(), dim=0)  # (T, B)
        visible = (
            fragments.valid.t().unsqueeze(0)
            & (fragments.episode.t().unsqueeze(0) == episode_of_step.unsqueeze(-1))
            & ((fragments.start.t() + fragments.length - 1).unsqueeze(0) <= steps)
        )
        beta = beta.masked_fill(~visible, float("-inf"))
        seen = visible.any(dim=-1, keepdim=True)
        weights = torch.softmax(torch.where(seen, beta, torch.zeros_like(beta)), dim=-1)
        weights = weights * visible.to(weights.dtype)
        e = torch.einsum("tbc,cbh->tbh", weights, h)
        prediction = self.head(torch.cat([e, q], dim=-1)).squeeze(-1)
        n_visible = visible.sum(dim=-1, keepdim=True).to(weights.dtype)
        share = (weights * n_visible).sum(dim=0)  # (B, C)
        count = visible.sum(dim=0).to(weights.dtype)
        importance = (share / count.clamp(min=1.0)).t()
        return TeacherOutput(prediction, weights, visible, importance.detach())

    def loss(self, out: TeacherOutput, targets: Tensor) -> Tensor:
        """Mean squared error on standardised targets, over steps that see some fragment."""
        seen = out.visible.any(dim=-1)
        targets = targets.detach().to(out.prediction.dtype)
        count = seen.sum().clamp(min=1)
        mean = (targets * seen).sum() / count
        std = (((targets - mean) ** 2 * seen).sum() / count).sqrt().clamp(min=1e-6)
        err = (out.prediction - (targets - mean) / std) ** 2
        return (err * seen).sum() / count


# selection


def select_fragments(
    scores: Tensor, candidates: Tensor, k: int, halves: bool
) -> tuple[Tensor, Tensor]:
    """Pick ``k`` fragments per env row by score among ``candidates`` (C, B) bool.

    With ``halves`` (the teacher's rule, paper eq. 6), ``ceil(k/2)`` picks come from the first
    half of each row's candidates (in time order) and the rest from the second half, so the
    rehearsal covers the whole history. Returns the picked grid indices (k', B) and whether each
    pick is a real candidate (k' = min(k, C); rows with too few candidates get invalid picks).
    """
    n_frag = scores.shape[0]
    k = min(k, n_frag)
    neg = torch.full_like(scores, float("-inf"))
    scores = torch.where(candidates, scores, neg)
    if not halves or k < 2:
        top = torch.topk(scores, k, dim=0)
        return top.indices, torch.isfinite(top.values)
    rank = torch.cumsum(candidates.long(), dim=0) - 1
    first = rank < (candidates.sum(dim=0, keepdim=True) + 1) // 2
    k1 = (k + 1) // 2
    top1 = torch.topk(torch.where(first, scores, neg), k1, dim=0)
    top2 = torch.topk(torch.where(first, neg, scores), k - k1, dim=0)
    indices = torch.cat([top1.indices, top2.indices])
    ok = torch.cat([torch.isfinite(top1.values), torch.isfinite(top2.values)])
    return indices, ok
