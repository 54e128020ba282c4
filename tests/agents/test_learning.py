"""Learning: every memory trains without error (BPTT and MRBP); on the short corridor the default
policy with PPO learns to carry the ball's colour while the memoryless policy cannot.

The full learning checks (>= 95% success) take minutes on a CPU and are marked slow; the fast
variant checks that a memory policy clearly beats the memoryless ceiling (50%) after a short run.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from agents import A2C, PPO
from policies import default_policy
from policies.memory import available_memories

ENV = "MemoRL/Corridor-L10-v0"
TINY = dict(n_envs=2, rollout_len=16, bptt_len=16, n_minibatches=2, n_epochs=1)


@pytest.mark.parametrize("mrbp", [False, True], ids=["bptt", "mrbp"])
@pytest.mark.parametrize("name", available_memories())
def test_every_memory_trains(name, mrbp):
    model = PPO(name, ENV, tensorboard_log=None, mrbp=mrbp, mrbp_chunk_len=4, seed=0, **TINY)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(2 * 32, progress_bar=False)
    stats = model.last_stats
    for k in ("losses/policy_loss", "losses/value_loss", "losses/entropy"):
        assert np.isfinite(stats[k]), (k, stats[k])
    assert model.nonfinite_in_a_row == 0
    changed = sum(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters(),
                                                        strict=True))
    assert changed > 0


def test_a2c_trains():
    model = A2C("gru", ENV, tensorboard_log=None, n_envs=2, rollout_len=20, bptt_len=10)
    assert isinstance(model.optimizer, torch.optim.RMSprop)
    model.learn(80, progress_bar=False)
    assert np.isfinite(model.last_stats["losses/policy_loss"])
    assert model.last_stats["losses/clipfrac"] == 0.0


def success_after(policy: str, steps: int, seed: int = 0, **kw) -> tuple[float, float]:
    """Mean success over the last updates of a run, and its wall time."""
    t0 = time.perf_counter()
    rates: list[float] = []

    def track(model):
        if "charts/success_rate" in model.last_stats:
            rates.append(model.last_stats["charts/success_rate"])

    model = PPO(policy, ENV, tensorboard_log=None, seed=seed, **kw)
    model.learn(steps, progress_bar=False, callback=track)
    return float(np.mean(rates[-5:])), time.perf_counter() - t0


#: the fast variant: shorter rollouts and a higher learning rate learn sooner (less stably)
FAST = dict(rollout_len=32, bptt_len=32, lr=1e-3, anneal_lr=False)


def test_memory_policy_learns_corridor_fast():
    """About 15 s: the default policy, PPO with FAST settings, far above the memoryless 50%."""
    rate, wall = success_after(default_policy(), 16_384, **FAST)
    print(f"{default_policy()}: success {rate:.3f} after 16384 steps in {wall:.0f} s")
    assert rate >= 0.8, rate


@pytest.mark.slow
def test_default_policy_learns_corridor():
    """The default policy with PPO's default settings reaches >= 95% success."""
    rate, wall = success_after(default_policy(), 49_152)
    print(f"{default_policy()}: success {rate:.3f} after 49152 steps in {wall:.0f} s")
    assert rate >= 0.95, rate


@pytest.mark.slow
def test_memoryless_policy_stays_at_chance():
    rate, wall = success_after("none", 49_152)
    print(f"none: success {rate:.3f} after 49152 steps in {wall:.0f} s")
    assert rate <= 0.6, rate
