"""Learning: every memory trains without error (BPTT and MRBP); on the short corridor the default
policy with PPO learns to carry the ball's colour while the memoryless policy cannot.

Success is the final policy's, acting deterministically over 200 fresh episodes (not the training
curve's last updates). The default suite trains one seed of the default policy to >= 95% and
checks that the memoryless policy stays at the 50% of guessing the door; the runs over several
seeds are slow.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from agents import A2C, PPO
from agents.buffer import RolloutBuffer
from agents.evaluation import success_rate
from agents.loss import make_loss_fn
from agents.mrbp import bptt_backward
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


@pytest.mark.parametrize("name", available_memories())
def test_every_memory_update_lowers_its_loss(name):
    """One rollout of a 3-cell corridor (a random walk reaches the doors, so there are rewards to
    fit), then PPO's update (8 epochs) on it: the value loss and the whole loss on that rollout go
    down, for every memory (its optimisation works end to end: gradients through the memory, its
    state at the sequence starts, the optimizer step)."""
    model = PPO(name, "MemoRL/Corridor-v0", env_kwargs={"min_length": 3, "max_length": 3},
                tensorboard_log=None, seed=0, n_envs=8, rollout_len=32, bptt_len=16,
                n_minibatches=2, n_epochs=8, lr=1e-3, ent_coef=0.0)
    buffer = RolloutBuffer(32, 8, model.observation_space, 16, model.device)
    model.stepper.reset(seed=0)
    model.memory_state = model.policy.initial_state(8, model.device)
    model._collect(buffer)
    loss_fn = make_loss_fn(model.policy, model.config)

    def losses() -> tuple[float, float]:
        model.policy.eval()
        model.optimizer.zero_grad(set_to_none=True)
        stats = bptt_backward(model.policy, next(buffer.minibatches(1)), loss_fn)
        model.optimizer.zero_grad(set_to_none=True)
        return float(stats["losses/value_loss"]), float(stats["losses/loss"])

    v0, l0 = losses()
    assert model._update(buffer) is not None
    v1, l1 = losses()
    assert v1 < 0.97 * v0, (v0, v1)
    assert l1 < l0, (l0, l1)


def test_entropy_bonus_starts_at_ent_start_step():
    """Before ``ent_start_step`` the update is exactly the one without a bonus; from it on, the
    bonus acts."""

    def params_after(**kw):
        model = PPO("gru", ENV, tensorboard_log=None, seed=0, **TINY, **kw)
        model.learn(4 * 32, progress_bar=False)
        return torch.cat([p.detach().flatten() for p in model.policy.parameters()])

    no_bonus = params_after(ent_coef=0.0)
    bonus = params_after(ent_coef=0.05)
    assert torch.equal(params_after(ent_coef=0.05, ent_start_step=10**9), no_bonus)
    assert torch.equal(params_after(ent_coef=0.05, ent_start_step=0), bonus)
    late = params_after(ent_coef=0.05, ent_start_step=2 * 32)  # the last two updates
    assert not torch.equal(late, no_bonus) and not torch.equal(late, bonus)
    with pytest.raises(ValueError, match="ent_start_step must be an integer >= 0, got -1"):
        PPO("gru", ENV, tensorboard_log=None, ent_start_step=-1)


def test_memory_losses_start_at_aux_start_step():
    """Before ``aux_start_step`` the update is exactly the one without Expire-Span's span
    penalty; from it on, the penalty acts."""

    def params_after(alpha, **kw):
        model = PPO("expire_span", ENV, tensorboard_log=None, seed=0,
                    policy_kwargs={"alpha": alpha}, **TINY, **kw)
        model.learn(4 * 32, progress_bar=False)
        return torch.cat([p.detach().flatten() for p in model.policy.parameters()])

    no_penalty = params_after(0.0)
    penalty = params_after(0.5)
    assert not torch.equal(penalty, no_penalty)
    assert torch.equal(params_after(0.5, aux_start_step=10**9), no_penalty)
    assert torch.equal(params_after(0.5, aux_start_step=0), penalty)
    late = params_after(0.5, aux_start_step=2 * 32)  # the last two updates
    assert not torch.equal(late, no_penalty) and not torch.equal(late, penalty)
    with pytest.raises(ValueError, match="aux_start_step must be an integer >= 0, got -2"):
        PPO("gru", ENV, tensorboard_log=None, aux_start_step=-2)


def test_a2c_trains():
    model = A2C("gru", ENV, tensorboard_log=None, n_envs=2, rollout_len=20, bptt_len=10)
    assert isinstance(model.optimizer, torch.optim.RMSprop)
    model.learn(80, progress_bar=False)
    assert np.isfinite(model.last_stats["losses/policy_loss"])
    assert model.last_stats["losses/clipfrac"] == 0.0


def evaluate(model) -> float:
    """Success rate of the final policy, acting deterministically, over 200 episodes of fresh
    envs (seeds unseen in training)."""
    return success_rate(model, ENV, 200, n_envs=50, seed=10_000)


def success_after(policy: str, steps: int, seed: int = 0, **kw) -> tuple[float, float]:
    """Train ``steps`` env steps with PPO on one torch thread (the same float reductions on any
    machine); the final policy's deterministic success rate and the wall time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        model = PPO(policy, ENV, tensorboard_log=None, seed=seed, **kw)
        model.learn(steps, progress_bar=False)
        return evaluate(model), time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)


#: the fast variant: shorter rollouts and a higher learning rate
FAST = dict(rollout_len=32, bptt_len=32, lr=1e-3, anneal_lr=False)
FAST_STEPS = 32_768
LEARN_STEPS = 98_304


def test_default_policy_learns_the_short_corridor():
    """About 200 s: PPO with its defaults and the default policy (Expire-Span) reaches >= 95%
    deterministic success on the 10-cell corridor in 98,304 steps on at least one of seeds 0
    and 1 (a seed learns it about 3 times in 4, so one seed alone would fail on a numerically
    neutral change one time in four: measured 0.785 / 1.000 for seeds 0 / 1, and before the
    fused optimizer 1.000 / 0.455). The slow test below runs seeds 0-7."""
    rates = []
    for seed in (0, 1):
        rate, wall = success_after(default_policy(), LEARN_STEPS, seed=seed)
        print(f"{default_policy()} seed {seed}: success {rate:.3f} after {LEARN_STEPS} steps in "
              f"{wall:.0f} s")
        rates.append(rate)
        if rate >= 0.95:
            break
    assert max(rates) >= 0.95, rates


def test_memoryless_policy_stays_at_chance_fast():
    """The memoryless policy cannot beat the 50% of guessing the door."""
    rate, wall = success_after("none", FAST_STEPS, seed=1, **FAST)
    print(f"none: success {rate:.3f} after {FAST_STEPS} steps in {wall:.0f} s")
    assert rate <= 0.6, rate


@pytest.mark.slow
def test_default_policy_learns_corridor_over_seeds():
    """PPO defaults, seeds 0-7, about 100 s a seed (the table of ``scripts/learning_seeds.py``):
    measured 1.00 for seeds 0-2 and 4-7 and 0.73 for seed 3 on the tasks' earlier draws; on
    today's, seeds 0-3: 0.785, 1.000, 1.000, 0.000 (4-7 not rerun)."""
    rates = [success_after(default_policy(), LEARN_STEPS, seed=s)[0] for s in range(8)]
    print(f"{default_policy()}: deterministic success per seed {rates}")
    assert sum(r >= 0.95 for r in rates) >= 6, rates


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_memoryless_policy_stays_at_chance(seed):
    rate, wall = success_after("none", LEARN_STEPS, seed=seed)
    print(f"none seed {seed}: success {rate:.3f} after {LEARN_STEPS} steps in {wall:.0f} s")
    assert rate <= 0.6, rate
