"""Supervised recall, parametrised over every registered memory (a new memory is covered
automatically).

The task: one of ``N_TOKENS`` tokens is shown at step 0 (a one-hot block of the input, beside
noise features), then only noise follows for ``GAP`` steps; a linear readout of the memory's
output at the last step must name the token. The gap spans several segments of the
segment-based memories (``segment_len = 8``), so the token has to survive repeated memory
rewrites. Every memory must reach ``MIN_ACCURACY`` on held-out sequences, while the memoryless
``none`` must stay at chance (the readout sees only the last step's noise): that is the naive
reference that makes the check meaningful. Training draws gaps of 1 to ``GAP`` steps; the held-out
sequences all have the full gap.

The learning run is behind ``-m slow``; a fast check that a few optimisation steps lower the loss
and reach the memory's parameters runs by default.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policies.memory import Memory, available_memories, make_memory

NAMES = available_memories()
MEMORYLESS = "none"  # the only memory that cannot recall

N_TOKENS = 4
N_NOISE = 4
D_IN = N_TOKENS + N_NOISE
GAP = 31  # noise steps after the token; the query is the last of GAP + 1 steps
BATCH = 64
MIN_ACCURACY = 0.9
MAX_CHANCE_ACCURACY = 0.4

# Small, fast models; any other (new) memory runs with its defaults. Transformer memories keep
# the whole gap in reach (``max_span``); the learning rate is per memory.
CONFIGS: dict[str, dict] = {
    "lstm": dict(hidden_dim=32),
    "gru": dict(hidden_dim=32),
    "none": dict(hidden_dim=32),
    "trxl": dict(d_model=32, num_heads=2, d_ff=64, max_span=64),
    "expire_span": dict(d_model=32, num_heads=2, d_ff=64, max_span=64),
    "rmt": dict(d_model=32, num_heads=2, segment_len=8),
    "memformer": dict(d_model=32, num_heads=2, segment_len=8),
    "rehearsal": dict(d_model=32, num_heads=2, segment_len=8),
}
DEFAULT_LR = 3e-3
LEARNING_RATES: dict[str, float] = {}
MAX_TRAIN_STEPS = 1000  # most runs stop early, after 200 to 400 steps
VALIDATE_EVERY = 100
STOP_ACCURACY = 0.98
EVAL_BATCH = 512

# task


def recall_batch(batch: int, generator: torch.Generator, gap: int = GAP) -> tuple[Tensor, Tensor]:
    """Inputs (gap + 1, batch, D_IN) and the token of each sequence (batch,) long."""
    tokens = torch.randint(N_TOKENS, (batch,), generator=generator)
    x = torch.zeros(gap + 1, batch, D_IN)
    x[0, torch.arange(batch), tokens] = 1.0
    x[:, :, N_TOKENS:] = torch.randn(gap + 1, batch, N_NOISE, generator=generator)
    return x, tokens


class RecallModel(nn.Module):
    """A memory and a linear readout of its output at the last step."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.memory: Memory = make_memory(name, D_IN, **CONFIGS.get(name, {}))
        self.readout = nn.Linear(self.memory.output_dim, N_TOKENS)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (B, N_TOKENS) at the last step and the sum of the memory's ``loss_*`` terms."""
        t_len, batch = x.shape[:2]
        starts = torch.zeros(t_len, batch, dtype=torch.bool, device=x.device)
        starts[0] = True
        state = self.memory.initial_state(batch, x.device)
        y, _, aux = self.memory(x, state, starts)
        aux_loss = sum((v for k, v in aux.items() if k.startswith("loss_")), x.new_zeros(()))
        return self.readout(y[-1]), aux_loss


def build(name: str, seed: int = 0) -> RecallModel:
    torch.manual_seed(seed)
    return RecallModel(name)


def train(model: RecallModel, lr: float, steps: int, generator: torch.Generator,
          gap: int = GAP, batch: int = BATCH, fixed: bool = False,
          validate: torch.Generator | None = None) -> list[float]:
    """Adam on the cross-entropy of the last step (plus the memory's own losses); the losses.

    ``fixed`` trains on one batch of ``gap`` throughout (the fast check). Otherwise each step
    draws a fresh batch whose gap is uniform in ``1..gap``: short gaps give the recurrent
    memories a gradient before they bridge long ones (an implicit curriculum), and the query
    falls at every phase of a segment. With ``validate``, training stops early once the accuracy
    on a validation batch of the full gap (drawn from ``validate``, every ``VALIDATE_EVERY``
    steps) reaches ``STOP_ACCURACY``.
    """
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    data = recall_batch(batch, generator, gap)
    for step in range(1, steps + 1):
        if not fixed:
            step_gap = int(torch.randint(1, gap + 1, (), generator=generator))
            data = recall_batch(batch, generator, step_gap)
        x, tokens = data
        logits, aux_loss = model(x)
        task = F.cross_entropy(logits, tokens)
        opt.zero_grad()
        (task + aux_loss).backward()
        opt.step()
        losses.append(task.item())
        if validate is not None and step % VALIDATE_EVERY == 0:
            if accuracy(model, validate, gap) >= STOP_ACCURACY:
                break
            model.train()
    return losses


@torch.no_grad()
def accuracy(model: RecallModel, generator: torch.Generator, gap: int = GAP) -> float:
    model.eval()
    x, tokens = recall_batch(EVAL_BATCH, generator, gap)
    logits, _ = model(x)
    return (logits.argmax(-1) == tokens).float().mean().item()


# tests


def test_task_needs_memory():
    """The label is only in step 0: the last step's input is independent of the token."""
    x, tokens = recall_batch(256, torch.Generator().manual_seed(0))
    assert x.shape == (GAP + 1, 256, D_IN)
    assert torch.equal(x[0, :, :N_TOKENS].argmax(-1), tokens)
    assert torch.all(x[1:, :, :N_TOKENS] == 0)
    assert set(tokens.tolist()) == set(range(N_TOKENS))


@pytest.mark.parametrize("name", NAMES)
def test_few_steps_lower_loss(name):
    """A handful of Adam steps on one batch lower the loss, and the task gradient reaches the
    memory's own (forward-trained) parameters, not only the readout."""
    model = build(name)
    gen = torch.Generator().manual_seed(1)
    x, tokens = recall_batch(32, gen, gap=17)
    model.train()
    logits, aux_loss = model(x)
    (F.cross_entropy(logits, tokens) + aux_loss).backward()
    skip = model.memory.separately_trained
    grads = [
        p.grad.abs().sum().item() if p.grad is not None else 0.0
        for n, p in model.memory.named_parameters()
        if not n.startswith(skip)
    ]
    assert grads and sum(grads) > 0.0, f"{name}: no gradient reaches the memory"
    model.zero_grad()

    losses = train(model, 1e-2, 8, torch.Generator().manual_seed(1), gap=17, batch=32, fixed=True)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_recall_after_gap(name):
    """Trained on fresh batches, each memory recalls the token across the gap on held-out
    sequences; the memoryless baseline cannot beat chance."""
    model = build(name)
    start = time.perf_counter()
    losses = train(model, LEARNING_RATES.get(name, DEFAULT_LR), MAX_TRAIN_STEPS,
                   torch.Generator().manual_seed(2), validate=torch.Generator().manual_seed(3))
    acc = accuracy(model, torch.Generator().manual_seed(12345))
    elapsed = time.perf_counter() - start
    print(f"\nrecall {name}: accuracy {acc:.3f} after {len(losses)} steps, "
          f"final loss {losses[-1]:.3f}, {elapsed:.1f} s")
    if name == MEMORYLESS:
        assert acc <= MAX_CHANCE_ACCURACY, f"{name} beat chance: {acc:.3f}"
    else:
        assert acc >= MIN_ACCURACY, f"{name}: accuracy {acc:.3f} < {MIN_ACCURACY}"
