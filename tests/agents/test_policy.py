"""The actor-critic policy: acting step by step equals the training forward over stored
sequences (through the rollout buffer), and bad arguments are refused."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from agent_helpers import ACT_SPACE, OBS_SPACE, episode_starts, small_policy

from agents.buffer import RolloutBuffer
from agents.mrbp import run_policy
from policies import available_policies, default_policy, make_policy
from policies.memory import available_memories

NAMES = available_memories()


@pytest.mark.parametrize("name", NAMES)
def test_training_forward_equals_acting(name):
    """Collect T steps with ``act`` (one step at a time, state carried, resets mid-rollout),
    store them in a RolloutBuffer cut into sequences, then rerun every sequence at once from its
    stored state: log-probs and values match what acting produced."""
    policy = small_policy(name)
    policy.eval()
    t_len, n, bptt = 24, 3, 8
    g = torch.Generator().manual_seed(0)
    obs = torch.rand(t_len, n, *OBS_SPACE.shape, generator=g)
    starts = episode_starts(t_len, n)
    starts[9, 1] = True  # a reset right after a sequence boundary
    buffer = RolloutBuffer(t_len, n, OBS_SPACE, bptt, "cpu")
    state = policy.initial_state(n)
    torch.manual_seed(1)
    for t in range(t_len):
        out = policy.act(obs[t], state, starts[t])
        buffer.add(t, obs[t], starts[t], state, out.actions, out.log_probs, out.values)
        state = out.state
    seqs = buffer.sequences()
    assert seqs.actions.shape == (bptt, n * t_len // bptt)
    with torch.no_grad():
        res = run_policy(policy, seqs, seqs.state)
    torch.testing.assert_close(res.dist.log_prob(seqs.actions), seqs.log_probs, atol=1e-5,
                               rtol=1e-4)
    torch.testing.assert_close(res.values, seqs.values, atol=1e-5, rtol=1e-4)
    # the sequence layout: sequence k * n + b holds env b's steps k * bptt ...
    torch.testing.assert_close(seqs.obs[:, 1 * n + 2], obs[bptt : 2 * bptt, 2])


def test_forward_shapes_and_act():
    policy = small_policy("lstm")
    obs = torch.rand(5, 2, 6)
    dist, values, state, aux = policy(obs, policy.initial_state(2), torch.ones(5, 2, dtype=bool))
    assert dist.logits.shape == (5, 2, 4) and values.shape == (5, 2)
    assert "memory_size" in aux
    out = policy.act(obs[0], policy.initial_state(2), torch.ones(2, dtype=bool),
                     deterministic=True)
    assert out.actions.shape == (2,) and out.actions.dtype == torch.long
    torch.testing.assert_close(out.actions, dist.probs[0].argmax(-1))


def test_registry_and_errors():
    assert available_policies() == available_memories()
    assert default_policy() in available_policies()
    with pytest.raises(ValueError, match="unknown policy 'nope'.*lstm"):
        make_policy("nope", OBS_SPACE, ACT_SPACE)
    with pytest.raises(ValueError, match="action_space must be gymnasium.spaces.Discrete"):
        make_policy("lstm", OBS_SPACE, gym.spaces.Box(-1, 1, (2,)))
    with pytest.raises(ValueError, match="hiden_dim.*policy-level keys"):
        make_policy("lstm", OBS_SPACE, ACT_SPACE, hiden_dim=3)
    with pytest.raises(ValueError, match="head_hidden"):
        make_policy("lstm", OBS_SPACE, ACT_SPACE, head_hidden=0)


def test_config_routing():
    policy = make_policy("gru", OBS_SPACE, ACT_SPACE, features_dim=8, hidden_dim=12,
                         head_hidden=5, head_layers=2)
    assert policy.encoder.features_dim == 8 and policy.memory.input_dim == 8
    assert policy.memory.output_dim == 12
    assert policy.policy_head[0].out_features == 5 and len(policy.policy_head) == 5


def test_dict_observations_and_discrete_start():
    space = gym.spaces.Dict({"a": gym.spaces.Box(0, 1, (3,), np.float32),
                             "b": gym.spaces.Discrete(5)})
    policy = make_policy("gru", space, gym.spaces.Discrete(3, start=1))
    obs = {"a": torch.rand(2, 3), "b": torch.tensor([0, 4])}
    out = policy.act(obs, policy.initial_state(2), torch.ones(2, dtype=bool))
    env_actions = policy.to_env_actions(out.actions)
    assert ((env_actions >= 1) & (env_actions <= 3)).all()
