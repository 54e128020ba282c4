"""The batched tasks against a SyncVectorEnv of the single envs: the same episodes, bit for bit."""

from __future__ import annotations

import types
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
    # crowded rooms: characters find their room full (a place drawn anywhere) or no free place
    # at all (the agent on the last one: they stay away and try again), several events per env
    "instruction-crowded": (
        InstructionVectorEnv,
        "envs.instruction:InstructionEnv",
        {
            "n_rooms": 2,
            "n_characters": 8,
            "episode_length": 60,
            "execute_delay": 10,
            "answer_window": 10,
            "instruction_prob": 0.3,
            "move_prob": 0.3,
        },
    ),
    "instruction-one-room": (
        InstructionVectorEnv,
        "envs.instruction:InstructionEnv",
        {
            "n_rooms": 1,
            "n_characters": 7,
            "episode_length": 60,
            "execute_delay": 5,
            "answer_window": 10,
            "instruction_prob": 0.3,
            "move_prob": 0.2,
        },
    ),
}
STEPS = {"instruction-crowded": 150, "instruction-one-room": 150}  # (busy steps: 2.5 episodes)
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
        if case.startswith("instruction"):  # mostly moves, some tells
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
    episodes = drive(case, device, steps=STEPS.get(case, 300))
    assert episodes >= 12  # several episodes per env: autoresets were exercised


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_batched_equals_sync_vector_env_same_step(case: str, device: str) -> None:
    # final_obs and final_info (values and masks) compared too, at every step
    episodes = drive(case, device, steps=STEPS.get(case, 300), mode=AutoresetMode.SAME_STEP)
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
    # _draw_many (the batched draws: raw words, comparison tables) against _draw (the single
    # env's own calls), for the same generators; an env's episodes drawn in turn, twice (the
    # generators carry on from the first call)
    fast, slow = cls(4, **kwargs), cls(4, **kwargs)
    fast.reset(seed=7)
    slow.reset(seed=7)
    for rows, counts in (([0, 3, 1, 2], [20, 1, 35, 7]), ([3, 0], [30, 2])):
        order = np.repeat(rows, counts).tolist()
        want = np.stack([slow._draw(slow._rngs[i]) for i in order])
        np.testing.assert_array_equal(fast._draw_many(np.array(rows), np.array(counts)), want)


def test_portal_draws_break_ties_as_a_stable_argsort() -> None:
    # uniforms from {0, 1/8, ..., 7/8}: most rooms have equal uniforms among their slots' or
    # colours' draws; the batched draw (comparison patterns, a table) must order them as
    # draw_doors' stable argsort does, from the same raw 64-bit words
    from envs.batched.portal import pack_rooms
    from envs.portal import draw_doors

    rooms, episodes = 30, 4
    u = np.random.default_rng(3).integers(8, size=(episodes, rooms - 1, 10)) / 8
    raw = (u * 2.0**53).astype(np.uint64) << np.uint64(11)  # Generator.random: (raw >> 11) / 2**53

    class Words:  # a generator whose raw words are given
        def __init__(self, words: np.ndarray) -> None:
            self.words = list(words.reshape(-1))

        def random_raw(self, size: int) -> np.ndarray:
            out, self.words = self.words[:size], self.words[size:]
            return np.array(out, np.uint64)

    class Uniforms:  # draw_doors' view of the same numbers
        def __init__(self, values: np.ndarray) -> None:
            self.values = values

        def random(self, shape: tuple[int, int]) -> np.ndarray:
            return self.values.reshape(shape)

    vec = PortalVectorEnv(2, n_rooms=rooms)
    vec._rngs = [types.SimpleNamespace(bit_generator=Words(raw[:3])), None]
    got = vec._draw_many(np.array([0]), np.array([3]))
    for e in range(3):
        want = pack_rooms(*draw_doors(Uniforms(u[e]), rooms))
        np.testing.assert_array_equal(got[e, :-1], want)
    assert (np.diff(np.sort(u[..., :4], axis=-1), axis=-1) == 0).any(axis=-1).mean() > 0.5


@pytest.mark.parametrize("case", ["corridor", "portal"])
def test_draws_in_chunks_give_the_same_episodes(case: str) -> None:
    # the ring refilled in many small _draw_many calls (a chunk of 1 or 3 episodes) against one
    # call for all envs: the same episodes, step by step
    cls, _, kwargs = CASES[case]
    vecs = [cls(5, **kwargs, ring=4) for _ in range(3)]
    vecs[1].draw_chunk, vecs[2].draw_chunk = 1, 3
    actions = np.random.default_rng(0).integers(int(vecs[0].single_action_space.n), size=(150, 5))
    outs = [env.reset(seed=2)[0] for env in vecs]
    for a in actions:
        outs = [env.step(a) for env in vecs]
        for out in outs[1:]:
            for x, y in zip(out[:4], outs[0][:4], strict=True):
                np.testing.assert_array_equal(x, y)
    assert all(int(env._drawn.sum()) >= 5 * 4 + 10 for env in vecs)  # refills drew episodes


def test_words_give_numpys_bounded_integers() -> None:
    # BatchedTaskEnv._integers against Generator.integers, with spans whose draws are redrawn
    # often (2**31 + 1: about half the words), never (powers of two) or not drawn at all (1)
    vec = CorridorVectorEnv(1)
    vec.reset(seed=0)
    vec._rngs[0], ref = np.random.default_rng(5), np.random.default_rng(5)
    spans = [2**31 + 1, 3, 2, 1, 2**31 + 1, 7, 2**32 - 1, 198, 2] * 300
    got = [vec._integers(0, span) for span in spans]
    assert got == [int(ref.integers(span)) for span in spans]


@pytest.mark.parametrize("spans", [(198, 2, 2), (2**31 + 1, 3, 1, 2), (7,), (1, 1)])
def test_integers_many_give_numpys_bounded_integers(spans: tuple[int, ...]) -> None:
    # BatchedTaskEnv._integers_many (one raw draw per env, array products, a word-by-word
    # replay where a word may be redrawn: about half the words of 2**31 + 1) against
    # Generator.integers, envs interleaved and repeated, pending half words carried between
    # calls and into _integers
    vec = CorridorVectorEnv(3)
    vec.reset(seed=0)
    vec._rngs = [np.random.default_rng(s) for s in (5, 6, 7)]
    vec._half_word[:] = -1
    refs = [np.random.default_rng(s) for s in (5, 6, 7)]
    for rows, counts in (([0, 2, 1], [2, 3, 1]), ([1], [1]), ([2, 0, 1], [1, 4, 2])):
        got = vec._integers_many(np.array(rows), np.array(counts), spans)
        want = [
            [int(refs[i].integers(span)) for span in spans]
            for i, c in zip(rows, counts, strict=True)
            for _ in range(c)
        ]
        assert got.tolist() == want
        assert vec._integers(2, 11) == int(refs[2].integers(11))
    assert vec._integers_many(np.array([1]), np.array([0]), spans).shape == (0, len(spans))


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
