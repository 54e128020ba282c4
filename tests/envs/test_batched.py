"""The batched vector envs against a SyncVectorEnv of the single envs: the same episodes, bit for
bit, for every registered id, both autoreset modes, numpy and torch; their errors and state."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import envs
from envs.arrays import MASK32, Batch, Numpy, Scalar, Torch, mix
from envs.corridor import CorridorEnv, CorridorVectorEnv
from envs.instruction import InstructionVectorEnv
from envs.portal import PortalVectorEnv
from envs.tmaze import TMazeVectorEnv

torch = pytest.importorskip("torch")

IDS = envs.registered_ids()
MODES = [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP]
# "masked": torch on the CPU running the accelerator code path (full-width masked writes, no
# host sync in a step, every info key always present)
DEVICES = ["numpy", "cpu", "masked"]
# Short variants, so a few hundred steps cover many episodes and autoresets.
CASES = {
    "corridor": (CorridorVectorEnv, {"min_length": 3, "max_length": 6}),
    "portal": (PortalVectorEnv, {"n_rooms": 4, "max_steps": 40}),
    "tmaze": (TMazeVectorEnv, {"length": 3}),
    "instruction": (InstructionVectorEnv, {
        "n_rooms": 2, "n_characters": 5, "episode_length": 60, "execute_delay": 10,
        "answer_window": 10, "instruction_prob": 0.2, "move_prob": 0.1,
    }),
    # crowded rooms: characters find their room full (a place drawn anywhere) or no free place
    # at all (the agent on the last one: they stay away and try again), several events per env
    "instruction-crowded": (InstructionVectorEnv, {
        "n_rooms": 2, "n_characters": 8, "episode_length": 60, "execute_delay": 10,
        "answer_window": 10, "instruction_prob": 0.3, "move_prob": 0.3,
    }),
    "instruction-one-room": (InstructionVectorEnv, {
        "n_rooms": 1, "n_characters": 7, "episode_length": 60, "execute_delay": 5,
        "answer_window": 10, "instruction_prob": 0.3, "move_prob": 0.2,
    }),
}


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
    got, want = host_info(got), host_info(want)
    assert sorted(got) == sorted(want), where
    for key, value in want.items():
        if isinstance(value, dict):
            assert_same_info(got[key], value, f"{where}: info[{key!r}]")
            continue
        if key == "final_obs":
            rows = np.flatnonzero(want["_final_obs"])
            np.testing.assert_array_equal(
                np.stack([np.asarray(got[key][i]) for i in rows]),
                np.stack([value[i] for i in rows]), err_msg=f"{where}: final_obs",
            )
            if got[key].dtype != object:  # the tensor form: zero where no episode ended
                assert not got[key][~want["_final_obs"]].any(), where
            continue
        assert got[key].dtype == value.dtype, (where, key)
        np.testing.assert_array_equal(got[key], value, err_msg=f"{where}: info[{key!r}]")


def make_batched(cls: type, kwargs: dict[str, Any], device: str, mode: AutoresetMode,
                 num_envs: int) -> Any:
    vec = cls(num_envs, **kwargs, device="cpu" if device == "masked" else device,
              autoreset_mode=mode)
    vec.xp.force_masked = device == "masked"
    return vec


def drive(cls: type, kwargs: dict[str, Any], device: str, mode: AutoresetMode,
          steps: int = 300, num_envs: int = 6, seed: int = 11) -> int:
    """Steps the batched env and a SyncVectorEnv side by side; returns the episodes ended."""
    batched = make_batched(cls, kwargs, device, mode, num_envs)
    assert batched.metadata["autoreset_mode"] == mode
    sync = gym.vector.SyncVectorEnv(
        [lambda: cls.task_class(**kwargs) for _ in range(num_envs)], autoreset_mode=mode
    )
    n_actions = int(batched.single_action_space.n)
    rng = np.random.default_rng(seed)
    obs_b, info_b = batched.reset(seed=seed)
    obs_s, info_s = sync.reset(seed=seed)
    np.testing.assert_array_equal(host(obs_b), obs_s)
    assert_same_info(info_b, info_s, "reset")
    episodes = 0
    for t in range(steps):
        # mostly moves (so that walks get somewhere), some task actions
        actions = np.where(rng.random(num_envs) < 0.7, rng.integers(4, size=num_envs),
                           rng.integers(n_actions, size=num_envs))
        out_b = batched.step(actions if device == "numpy" else torch.as_tensor(actions))
        out_s = sync.step(actions)
        for name, got, want in zip(("obs", "reward", "terminated", "truncated"), out_b, out_s,
                                   strict=False):
            got = host(got)
            assert got.dtype == want.dtype, (t, name)
            np.testing.assert_array_equal(got, want, err_msg=f"step {t}: {name}")
        assert_same_info(out_b[4], out_s[4], f"step {t}")
        episodes += int(np.sum(out_s[2] | out_s[3]))
    return episodes


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("env_id", IDS)
def test_every_registered_id_equals_sync_vector_env(env_id: str, mode: AutoresetMode,
                                                   device: str) -> None:
    spec = gym.spec(env_id)
    cls = gym.envs.registration.load_env_creator(spec.vector_entry_point)
    drive(cls, spec.kwargs, device, mode, steps=120, num_envs=4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("case", sorted(CASES))
def test_short_tasks_equal_sync_vector_env_over_many_episodes(case: str, mode: AutoresetMode,
                                                             device: str) -> None:
    cls, kwargs = CASES[case]
    assert drive(cls, kwargs, device, mode) >= 12  # several episodes per env: autoresets


def test_same_step_final_obs_is_the_last_observation() -> None:
    # A naive reference: a single env stepped by hand, reset by hand when its episode ends.
    kwargs = CASES["corridor"][1]
    vec = CorridorVectorEnv(2, **kwargs, autoreset_mode="SameStep")
    single = CorridorEnv(**kwargs)
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


@pytest.mark.parametrize(("device", "other"), [("numpy", "numpy"), ("cpu", "numpy"),
                                               ("masked", "masked"), ("numpy", "masked")])
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_get_state_set_state_continue_exactly(device: str, other: str, mode: AutoresetMode):
    # saved on one backend, restored on the same or another: the same steps follow
    cls, kwargs = CASES["instruction"]
    rng = np.random.default_rng(1)
    actions = rng.integers(9, size=(80, 4))
    a = make_batched(cls, kwargs, device, mode, 4)
    a.reset(seed=3)
    for t in range(40):
        a.step(actions[t])
    saved = a.get_state()
    b = make_batched(cls, kwargs, other, mode, 4)
    b.reset(seed=99)  # other episodes, overwritten by the state
    b.set_state(saved)
    for t in range(40, 80):
        out_a, out_b = a.step(actions[t]), b.step(actions[t])
        for x, y in zip(out_a[:4], out_b[:4], strict=True):
            np.testing.assert_array_equal(host(x), host(y))
    with pytest.raises(ValueError, match="state is of a different env"):
        cls(3, **kwargs).set_state(saved)
    with pytest.raises(ValueError, match="state is of a different env"):
        cls(4, **{**kwargs, "n_rooms": 3}).set_state(saved)


@pytest.mark.parametrize("env_id", IDS)
def test_make_vec_vector_entry_point_returns_the_batched_env(env_id: str) -> None:
    spec = gym.spec(env_id)
    cls = gym.envs.registration.load_env_creator(spec.vector_entry_point)
    vec = gym.make_vec(env_id, num_envs=8, vectorization_mode="vector_entry_point")
    assert isinstance(vec.unwrapped, cls) and vec.num_envs == 8
    assert vec.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (8, 3, 3, len(vec.unwrapped.vocab)) and obs.dtype == np.uint8
    assert vec.observation_space.contains(obs)
    same = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point",
                        autoreset_mode=AutoresetMode.SAME_STEP, device="cpu")
    assert same.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert isinstance(same.reset(seed=0)[0], torch.Tensor)


def test_seed_list_and_reset_mask_match_single_envs() -> None:
    cls, kwargs = CASES["portal"]
    vec = cls(3, **kwargs)
    singles = [cls.task_class(**kwargs) for _ in range(3)]
    obs, _ = vec.reset(seed=[5, None, 9])
    for i in (0, 2):
        np.testing.assert_array_equal(obs[i], singles[i].reset(seed=[5, None, 9][i])[0])
    mask = np.array([True, False, False])
    obs2, info = vec.reset(seed=[7, 0, 0], options={"reset_mask": mask})
    np.testing.assert_array_equal(obs2[0], singles[0].reset(seed=7)[0])
    np.testing.assert_array_equal(obs2[1:], obs[1:])
    assert info["_room"].tolist() == [True, False, False]
    # an unseeded reset continues each env with its next episode, as the single env does
    obs3, _ = vec.reset()
    np.testing.assert_array_equal(obs3[0], singles[0].reset()[0])


def test_render_draws_env_0() -> None:
    kwargs = CASES["corridor"][1]
    vec = CorridorVectorEnv(2, **kwargs, render_mode="rgb_array")
    single = CorridorEnv(**kwargs, render_mode="rgb_array")
    vec.reset(seed=3)
    single.reset(seed=3)
    for a in (1, 1, 3, 1):
        vec.step(np.array([a, 0]))
        single.step(a)
    frame = vec.render()
    assert frame.shape[2] == 3
    np.testing.assert_array_equal(frame, single.render())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_envs": 0}, "num_envs must be an integer >= 1, got 0"),
        ({"num_envs": 2, "device": "nonsense"}, "device must be None, 'numpy' or a torch device"),
        ({"num_envs": 2, "render_mode": "human"}, "render_mode must be None or 'rgb_array'"),
        ({"num_envs": 2, "autoreset_mode": "Disabled"}, "autoreset_mode must be one of"),
        ({"num_envs": 2, "autoreset_mode": "same"}, "autoreset_mode must be one of"),
    ],
)
def test_bad_vector_arguments_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CorridorVectorEnv(**kwargs)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (CorridorVectorEnv, {"min_length": 2}),
        (CorridorVectorEnv, {"min_length": 10, "max_length": 9}),
        (PortalVectorEnv, {"n_rooms": 1}),
        (PortalVectorEnv, {"max_steps": 0}),
        (InstructionVectorEnv, {"move_prob": "often"}),
        (InstructionVectorEnv, {"n_rooms": 1, "n_characters": 8}),
        (TMazeVectorEnv, {"length": 0}),
        (TMazeVectorEnv, {"penalty": 2.0}),
    ],
)
def test_task_arguments_are_refused_with_the_single_envs_error(cls: type, kwargs: dict) -> None:
    # one place validates a task's arguments: the batched env gives the single env's error
    with pytest.raises(ValueError) as single:
        cls.task_class(**kwargs)
    with pytest.raises(ValueError) as batched:
        cls(2, **kwargs)
    assert str(batched.value) == str(single.value)
    with pytest.raises(TypeError, match="unexpected keyword argument 'lenght'"):
        cls(2, lenght=3)


def test_the_batched_env_refuses_what_the_single_env_refuses() -> None:
    vec = CorridorVectorEnv(2, min_length=3, max_length=4)
    with pytest.raises(RuntimeError, match=r"^call reset\(\) before step\(\)$"):
        vec.step(np.array([0, 1]))
    with pytest.raises(ValueError, match=r"seed must be an int or a list of 2 seeds"):
        vec.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer or None, got -1"):
        vec.reset(seed=-1)
    vec.reset(seed=0)
    for bad, message in [
        (np.array([0.0, 1.0]), r"actions must be integers in \[0, 3\], got dtype float64"),
        (np.array([True, False]), r"actions must be integers in \[0, 3\], got dtype bool"),
        (torch.tensor([0.5, 1.0]), r"actions must be integers in \[0, 3\], got dtype torch"),
        (np.array([0, 4]), r"actions must be in \[0, 3\], got \[0 4\]"),
        (np.array([-1, 0]), r"actions must be in \[0, 3\], got \[-1  0\]"),
        (np.array([0]), r"actions must have shape \(2,\), got \(1,\)"),
        ([0, 1, 2], r"actions must have shape \(2,\), got \(3,\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            vec.step(bad)
    vec.step([0, 1])  # a list of ints is fine
    torch_vec = CorridorVectorEnv(2, device="cpu")
    torch_vec.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must be in \[0, 3\]"):
        torch_vec.step(torch.tensor([0, 7]))


def test_keyed_draws_agree_across_backends() -> None:
    # the hash on Python ints, numpy uint32 and torch int64 (split products): the same bits
    keys = np.array([0, 1, 2**31, 2**32 - 1, 123456789], np.int64)
    steps = np.array([0, 7, 499, 10**6, 2**32 - 1], np.int64)
    want = [mix(mix(int(k) ^ mix(int(t) & MASK32)) ^ 5) for k, t in zip(keys, steps, strict=True)]
    one, batch, tensor = Scalar(), Numpy(), Torch("cpu")
    assert [one.draw(one.base(int(k), int(t)), 5) for k, t in zip(keys, steps, strict=True)] \
        == want
    assert batch.draw(batch.base(keys, steps), 5).tolist() == want
    t_keys, t_steps = torch.as_tensor(keys), torch.as_tensor(steps)
    assert tensor.draw(tensor.base(t_keys, t_steps), 5).tolist() == want
    # a column of slots at once, and bounded integers roughly uniform
    slots = batch.column([5, 6])
    np.testing.assert_array_equal(batch.draw(batch.base(keys, steps), slots)[0], want)
    draws = batch.below(batch.draw(batch.base(np.arange(20000), np.full(20000, 3)), 1), 6)
    counts = np.bincount(draws, minlength=6)
    assert draws.min() >= 0 and draws.max() < 6 and counts.min() > 3000


def _backend(device: str) -> Numpy:
    if device == "numpy":
        return Numpy()
    xp = Torch("cpu")
    xp.force_masked = device == "masked"
    return xp


@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_sub_states_read_and_write_their_parents_fields(device: str) -> None:
    # puts and reads of a map (env-major, 20 cells) and a per-kind field in nested sub-states
    # of some envs (host backends; numpy's write into their parents' arrays), also after a
    # sub-state took its own copy, against the same writes on plain numpy arrays
    xp, n = _backend(device), 6
    s = Batch(xp, None, n)
    s.grid, s.small = s.full(xp.column(range(20))), s.full(xp.column([0, 0, 0]))
    grid, small = np.tile(np.arange(20)[:, None], (1, n)), np.zeros((3, n), np.int64)
    rows = np.array([1, 2, 4, 5])
    sub = s.select(xp.asarray(np.isin(np.arange(n), rows), "bool"))
    sub.put("grid", xp.asarray([3, 4, 5, 6], "int64"), xp.asarray([-1, -2, -3, -4], "int64"))
    grid[[3, 4, 5, 6], rows] = [-1, -2, -3, -4]
    got = host(sub.at("grid", xp.asarray([3, 0, 5, 1], "int64"), xp.column([0, 1])))
    np.testing.assert_array_equal(got, grid[np.array([[3, 0, 5, 1], [4, 1, 6, 2]]), rows])
    inner = np.array([0, 3])  # (of sub's envs: envs 1 and 5)
    sub2 = sub.select(xp.asarray(np.isin(np.arange(4), inner), "bool"))
    sub2.put("grid", xp.asarray([7, 8], "int64"), 100, where=xp.asarray([True, False], "bool"))
    sub2.put("small", xp.asarray([2, 1], "int64"), xp.asarray([9, 8], "int64"))
    grid[7, rows[inner[0]]] = 100
    small[[2, 1], rows[inner]] = [9, 8]
    sub.update(sub2)
    np.testing.assert_array_equal(host(sub.grid), grid[:, rows])  # (its own copy from here)
    sub.put("grid", xp.asarray([0, 0, 0, 0], "int64"), 50)
    grid[0, rows] = 50
    s.update(sub)
    np.testing.assert_array_equal(host(s.grid), grid)
    np.testing.assert_array_equal(host(s.small), small)


@pytest.mark.parametrize("device", DEVICES)
def test_rounds_handle_each_entry_once_in_order(device: str) -> None:
    # each round handles the first pending entry of each env: its round number is written at
    # it (in a field the rounds do not clear); the envs without entries take no part
    xp, n = _backend(device), 7
    pending = np.random.default_rng(3).random((5, n)) < 0.4
    pending[:, 2] = False
    want = np.where(pending, np.cumsum(pending, 0) - 1, -1)  # (each entry's rank in its env)
    s = Batch(xp, None, n)
    s.pending, s.order, s.done = xp.asarray(pending.copy(), "bool"), \
        s.full(xp.column([-1] * 5)), s.full(0)
    for r, one in enumerate(s.rounds("pending", 5)):
        k = xp.first_true(one.pending)
        one.put("order", k, r)
        one.put("pending", k, False)
        one.done = one.done + 1
    np.testing.assert_array_equal(host(s.order), want)
    np.testing.assert_array_equal(host(s.done), pending.sum(0))
