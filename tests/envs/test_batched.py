"""The batched tasks against a SyncVectorEnv of the single envs: the same episodes, bit for bit."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import envs  # noqa: F401  (registers the ids)
from envs.batched.corridor import CorridorVectorEnv
from envs.batched.instruction import InstructionVectorEnv
from envs.batched.keyed_random import below, hash_draw
from envs.batched.portal import PortalVectorEnv

torch = pytest.importorskip("torch")

# Short variants, so a few hundred steps cover many episodes and autoresets.
CASES = {
    "corridor": (
        CorridorVectorEnv,
        "envs.corridor:CorridorEnv",
        {"min_length": 3, "max_length": 6},
    ),
    "portal": (PortalVectorEnv, "envs.portal:PortalEnv", {"n_rooms": 4, "max_steps": 40}),
    "instruction": (
        InstructionVectorEnv,
        "envs.instruction:InstructionEnv",
        {
            "n_rooms": 2,
            "n_characters": 5,
            "episode_length": 60,
            "execute_delay": 10,
            "answer_window": 10,
            "instruction_prob": 0.2,
            "move_prob": 0.1,
        },
    ),
}
# "masked": torch on the CPU running the accelerator code path (full-width masked writes, no
# host sync in a step, draws refilled every `ring` steps); "numpy-ring1": numpy with the draws
# refilled at every step.
DEVICES = ["numpy", "cpu", "masked", "numpy-ring1"]


def host(x: Any) -> np.ndarray:
    """A numpy copy of a numpy array or a torch tensor."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def host_info(info: dict[str, Any]) -> dict[str, Any]:
    """The info as numpy arrays (nested dicts kept), without keys that no env reports (on an
    accelerator path every key is always there)."""
    out = {k: v if isinstance(v, dict) else host(v) for k, v in info.items()}
    for key in [k for k in out if not k.startswith("_")]:
        if not out[f"_{key}"].any():
            del out[key], out[f"_{key}"]
    return out


def assert_same_info(got: dict[str, Any], want: dict[str, Any], where: str) -> None:
    """Same keys, masks, dtypes and values; ``final_obs`` compared at the envs that ended (the
    torch backends return one tensor, zero elsewhere, SyncVectorEnv an object array)."""
    got = host_info(got)
    assert sorted(got) == sorted(want), where
    for key, value in want.items():
        if isinstance(value, dict):
            assert_same_info(got[key], value, f"{where}: info[{key!r}]")
            continue
        if key == "final_obs":
            rows = np.flatnonzero(want["_final_obs"])
            assert all(value[i] is None for i in np.flatnonzero(~want["_final_obs"]))
            np.testing.assert_array_equal(
                np.stack([np.asarray(got[key][i]) for i in rows]),
                np.stack([value[i] for i in rows]),
                err_msg=f"{where}: final_obs",
            )
            if got[key].dtype != object:  # the tensor form: zero where no episode ended
                assert not got[key][~want["_final_obs"]].any(), where
            continue
        value = np.asarray(value)
        assert got[key].dtype == value.dtype, (where, key)
        np.testing.assert_array_equal(got[key], value, err_msg=f"{where}: info[{key!r}]")


def drive(
    case: str,
    device: str,
    num_envs: int = 6,
    steps: int = 300,
    seed: int = 11,
    mode: AutoresetMode = AutoresetMode.NEXT_STEP,
) -> int:
    """Steps the batched env and a SyncVectorEnv side by side, both in autoreset ``mode``;
    returns the episodes ended."""
    cls, _, kwargs = CASES[case]
    if device == "masked":
        batched = cls(num_envs, **kwargs, device="cpu", ring=3, autoreset_mode=mode)
        batched.xp.force_masked = True
        device = "cpu"
    elif device == "numpy-ring1":
        batched = cls(num_envs, **kwargs, ring=1, autoreset_mode=mode)
        device = "numpy"
    else:
        batched = cls(num_envs, **kwargs, device=device, autoreset_mode=mode)
    assert batched.metadata["autoreset_mode"] == mode
    sync = gym.vector.SyncVectorEnv(
        [lambda: cls.single_env_class(**kwargs) for _ in range(num_envs)], autoreset_mode=mode
    )
    n_actions = int(batched.single_action_space.n)
    rng = np.random.default_rng(seed)
    obs_b, info_b = batched.reset(seed=seed)
    obs_s, info_s = sync.reset(seed=seed)
    np.testing.assert_array_equal(host(obs_b), obs_s)
    assert_same_info(info_b, info_s, "reset")
    episodes = 0
    for t in range(steps):
        if case == "instruction":  # mostly moves, some tells
            actions = np.where(
                rng.random(num_envs) < 0.7,
                rng.integers(4, size=num_envs),
                rng.integers(n_actions, size=num_envs),
            )
        else:
            actions = rng.integers(n_actions, size=num_envs)
        act_b = actions if device == "numpy" else torch.as_tensor(actions, device=device)
        out_b = batched.step(act_b)
        out_s = sync.step(actions)
        for name, got, want in zip(
            ("obs", "reward", "terminated", "truncated"), out_b, out_s, strict=False
        ):
            got = host(got)
            assert got.dtype == want.dtype, (t, name)
            np.testing.assert_array_equal(got, want, err_msg=f"step {t}: {name}")
        assert_same_info(out_b[4], out_s[4], f"step {t}")
        episodes += int(np.sum(out_s[2] | out_s[3]))
    return episodes


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_equals_sync_vector_env(case: str, device: str) -> None:
    episodes = drive(case, device)
    assert episodes >= 12  # several episodes per env: autoresets were exercised


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_equals_sync_vector_env_same_step(case: str, device: str) -> None:
    # final_obs and final_info (values and masks) compared too, at every step
    episodes = drive(case, device, mode=AutoresetMode.SAME_STEP)
    assert episodes >= 12


def test_same_step_final_obs_is_the_last_observation() -> None:
    # A naive reference: a single env stepped by hand, reset by hand when its episode ends.
    kwargs = CASES["corridor"][2]
    vec = CorridorVectorEnv(2, **kwargs, autoreset_mode="SameStep")
    single = CorridorVectorEnv.single_env_class(**kwargs)
    obs, _ = vec.reset(seed=4)
    ref_obs, _ = single.reset(seed=4)
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(120):
        a = int(rng.integers(4))
        obs, _, term, trunc, info = vec.step(np.array([a, 0]))
        ref_obs, _, ref_term, ref_trunc, ref_info = single.step(a)
        assert (term[0], trunc[0]) == (ref_term, ref_trunc)
        if ref_term or ref_trunc:
            ended += 1
            np.testing.assert_array_equal(info["final_obs"][0], ref_obs)
            assert info["final_info"]["success"][0] == ref_info["success"]
            ref_obs, _ = single.reset()
        else:
            assert "final_obs" not in info or not info["_final_obs"][0]
        np.testing.assert_array_equal(obs[0], ref_obs)
    assert ended >= 3


@pytest.mark.parametrize(
    ("device", "other"), [("numpy", "numpy"), ("cpu", "numpy"), ("masked", "masked"),
                          ("numpy", "masked")]
)
@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_get_state_set_state_continue_exactly(device: str, other: str, mode: AutoresetMode):
    # saved on one backend, restored on the same or another: the same steps follow
    cls, _, kwargs = CASES["instruction"]

    def make(device: str) -> Any:
        env = cls(4, **kwargs, device="cpu" if device == "masked" else device,
                  autoreset_mode=mode, ring=2 if device == "masked" else None)
        env.xp.force_masked = device == "masked"
        return env

    rng = np.random.default_rng(1)
    actions = rng.integers(int(make(device).single_action_space.n), size=(80, 4))
    a = make(device)
    a.reset(seed=3)
    for t in range(40):
        a.step(actions[t])
    saved = a.get_state()
    b = make(other)
    b.reset(seed=99)  # other episodes, overwritten by the state
    b.set_state(saved)
    for t in range(40, 80):
        out_a, out_b = a.step(actions[t]), b.step(actions[t])
        for x, y in zip(out_a[:4], out_b[:4], strict=True):
            np.testing.assert_array_equal(host(x), host(y))
    with pytest.raises(ValueError, match="different env"):
        cls(3, **kwargs).set_state(saved)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (CorridorVectorEnv, {"min_length": 3, "max_length": 200}),
        (CorridorVectorEnv, {"min_length": 10, "max_length": 10}),  # no length draw
        (CorridorVectorEnv, {"min_length": 3, "max_length": 10_000}),
        (PortalVectorEnv, {"n_rooms": 50, "max_steps": 10}),
    ],
)
def test_batched_draws_equal_the_single_env_draws(cls: type, kwargs: dict[str, Any]) -> None:
    # _draw_many (the batched draws: raw words, min/max networks) against _draw (the single
    # env's own calls), for the same generators; an env repeated draws its episodes in turn
    fast, slow = cls(4, **kwargs), cls(4, **kwargs)
    fast.reset(seed=7)
    slow.reset(seed=7)
    order = [0, 3, 3, 1, 0, 2, 3] * 20
    want = np.stack([slow._draw(slow._rngs[i]) for i in order])
    np.testing.assert_array_equal(fast._draw_many(order), want)


def test_words_give_numpys_bounded_integers() -> None:
    # BatchedTaskEnv._integers against Generator.integers, with spans whose draws are redrawn
    # often (2**31 + 1: about half the words), never (powers of two) or not drawn at all (1)
    vec = CorridorVectorEnv(1)
    vec.reset(seed=0)
    vec._rngs[0], ref = np.random.default_rng(5), np.random.default_rng(5)
    spans = [2**31 + 1, 3, 2, 1, 2**31 + 1, 7, 2**32 - 1, 198, 2] * 300
    got = [vec._integers(0, span) for span in spans]
    assert got == [int(ref.integers(span)) for span in spans]


def test_keyed_draws_agree_across_backends() -> None:
    keys = np.array([0, 1, 2**31, 2**32 - 1], np.int64)
    steps = np.array([0, 7, 499, 10**6], np.int64)
    want = [hash_draw(int(k), int(s), 5) for k, s in zip(keys, steps, strict=True)]
    assert hash_draw(keys, steps, 5).tolist() == want
    assert hash_draw(torch.as_tensor(keys), torch.as_tensor(steps), 5).tolist() == want
    draws = below(np.arange(20000, dtype=np.int64), 3, 1, 6)
    counts = np.bincount(draws, minlength=6)
    assert draws.min() >= 0 and draws.max() < 6 and counts.min() > 3000  # roughly uniform


@pytest.mark.parametrize(
    ("env_id", "cls"),
    [
        ("MemoRL/Corridor-v0", CorridorVectorEnv),
        ("MemoRL/Portal-R5-v0", PortalVectorEnv),
        ("MemoRL/Instruction-Short-v0", InstructionVectorEnv),
    ],
)
def test_make_vec_vector_entry_point_returns_the_batched_env(env_id: str, cls: type) -> None:
    vec = gym.make_vec(env_id, num_envs=8, vectorization_mode="vector_entry_point")
    assert isinstance(vec.unwrapped, cls) and vec.num_envs == 8
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (8, 3, 3, len(vec.unwrapped.vocab)) and obs.dtype == np.uint8
    assert vec.observation_space.contains(obs)
    same = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point",
                        autoreset_mode=AutoresetMode.SAME_STEP, device="cpu")
    assert same.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert isinstance(same.reset(seed=0)[0], torch.Tensor)


def test_seed_list_and_reset_mask_match_single_envs() -> None:
    kwargs = CASES["portal"][2]
    vec = PortalVectorEnv(3, **kwargs)
    singles = [PortalVectorEnv.single_env_class(**kwargs) for _ in range(3)]
    obs, _ = vec.reset(seed=[5, None, 9])
    for i in (0, 2):
        np.testing.assert_array_equal(obs[i], singles[i].reset(seed=[5, None, 9][i])[0])
    mask = np.array([True, False, False])
    obs2, info = vec.reset(seed=[7, 0, 0], options={"reset_mask": mask})
    np.testing.assert_array_equal(obs2[0], singles[0].reset(seed=7)[0])
    np.testing.assert_array_equal(obs2[1:], obs[1:])
    assert info["_room"].tolist() == [True, False, False]


def test_render_draws_env_0() -> None:
    kwargs = CASES["corridor"][2]
    vec = CorridorVectorEnv(2, **kwargs, render_mode="rgb_array")
    single = CorridorVectorEnv.single_env_class(**kwargs, render_mode="rgb_array")
    vec.reset(seed=3)
    single.reset(seed=3)
    for a in (1, 1, 3, 1):
        vec.step(np.array([a, 0]))
        single.step(a)
    frame = vec.render()
    assert frame.shape[2] == 3
    np.testing.assert_array_equal(frame, single.render())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_envs": 0}, "num_envs"),
        ({"num_envs": 2, "device": "nonsense"}, "device"),
        ({"num_envs": 2, "render_mode": "human"}, "render_mode"),
        ({"num_envs": 2, "ring": 0}, "ring"),
        ({"num_envs": 2, "autoreset_mode": "Disabled"}, "autoreset_mode"),
        ({"num_envs": 2, "autoreset_mode": "same"}, "autoreset_mode"),
        ({"num_envs": 2, "min_length": 2}, "min_length"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CorridorVectorEnv(**kwargs)


def test_bad_actions_and_seeds_raise() -> None:
    vec = CorridorVectorEnv(2, min_length=3, max_length=4)
    with pytest.raises(ValueError, match="seed"):
        vec.reset(seed=[1, 2, 3])
    vec.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.array([0, 4]))
    with pytest.raises(ValueError, match="actions"):
        vec.step(np.array([0]))
