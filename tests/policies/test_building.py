"""Building policies: the Box encoder against a per-(cell, word) loop, config routing errors, and
the state padding helper."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from policies import make_policy
from policies.encoders import BoxEncoder, make_encoder
from policies.memory import UnknownHyperparameterError, make_memory, pad_to

GRID = gym.spaces.Box(0, 1, (3, 3, 5), np.uint8)  # our bag-of-words observations, V = 5


def test_box_encoder_sums_one_embedding_per_cell_and_word():
    torch.manual_seed(0)
    enc = make_encoder(GRID, features_dim=8)
    assert isinstance(enc, BoxEncoder) and enc.scale == 1.0
    obs = torch.randint(0, 2, (4, 2, 3, 3, 5), dtype=torch.uint8)  # (T, B, H, W, V)
    lin1, lin2 = enc.net[0], enc.net[2]
    want = torch.empty(4, 2, 8)
    for t in range(4):
        for b in range(2):
            h = lin1.bias.detach().clone()
            for i, j, w in torch.nonzero(obs[t, b]).tolist():  # the words present, cell by cell
                h += lin1.weight.detach()[:, (i * 3 + j) * 5 + w]
            want[t, b] = torch.relu(lin2(torch.relu(h)))
    with torch.no_grad():
        torch.testing.assert_close(enc(obs), want)


def test_box_encoder_scales_images_and_keeps_leading_dims():
    torch.manual_seed(0)
    enc = make_encoder(gym.spaces.Box(0, 255, (2, 4, 4), np.uint8), features_dim=6)
    obs = torch.randint(0, 256, (5, 2, 4, 4), dtype=torch.uint8)
    with torch.no_grad():
        got = enc(obs)
        want = enc.net(obs.float().reshape(5, -1) / 255.0)
    torch.testing.assert_close(got, want)
    assert enc(torch.rand(3, 5, 2, 4, 4)).shape == (3, 5, 6)


def test_unknown_keys_are_refused_with_the_policy_level_keys():
    with pytest.raises(ValueError, match=r"\['hiden_dim'\].*allowed: hidden_dim.*policy-level"):
        make_policy("gru", GRID, gym.spaces.Discrete(3), hiden_dim=4)
    with pytest.raises(UnknownHyperparameterError) as err:
        make_memory("gru", 4, hiden_dim=4)
    assert err.value.unknown == ["hiden_dim"] and "hidden_dim" in err.value.allowed
    # a memory's own check of a known key is passed on as it is
    with pytest.raises(ValueError, match="hidden_dim") as err:
        make_policy("gru", GRID, gym.spaces.Discrete(3), hidden_dim=0)
    assert not isinstance(err.value, UnknownHyperparameterError)
    assert "policy-level" not in str(err.value)


def test_pad_to_zero_pads_every_dim_and_refuses_to_shrink():
    t = torch.arange(6.0).view(2, 3)
    padded = pad_to(t, (3, 5))
    assert torch.equal(padded[:2, :3], t) and padded.sum() == t.sum() and padded.shape == (3, 5)
    assert pad_to(t, (2, 3)) is t
    with pytest.raises(ValueError, match=r"cannot zero-pad shape \(2, 3\) to \(2, 2\)"):
        pad_to(t, (2, 2))
    with pytest.raises(ValueError, match="cannot zero-pad"):
        pad_to(t, (2, 3, 1))
