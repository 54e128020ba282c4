"""The multi-room Portal task's rules (paper appendix A.2.2) and its scripted policies."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs.oracles import PortalMemoryless, PortalOracle
from envs.portal import PortalEnv
from envs.task import MOVES


def doors_of(env: PortalEnv, room: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(correct door, wrong door) map positions of ``room`` (0-based), read from the state."""
    ox, oy = env.room_origin(room + 1)
    doors = env.doors(env.state, room + 1)
    right = [(ox + dx, oy + dy) for (dx, dy), _, ok in doors if ok]
    wrong = [(ox + dx, oy + dy) for (dx, dy), _, ok in doors if not ok]
    assert len(right) == len(wrong) == 1
    return right[0], wrong[0]


def agent_pos(env: PortalEnv) -> tuple[int, int]:
    return env.draw(env.state)[1]


def room_centre(env: PortalEnv, room: int) -> tuple[int, int]:
    """Centre floor cell of room ``room`` (0-based) on the drawn map."""
    ox, oy = env.room_origin(room + 1)
    return ox + 2, oy + 2


def walk_into(env: PortalEnv, door: tuple[int, int]) -> tuple:
    """Steps from the agent's cell to the floor cell in front of ``door``, then into it."""
    cx, cy = room_centre(env, env.state.room - 1)
    stand = (door[0] + np.sign(cx - door[0]), door[1] + np.sign(cy - door[1]))
    out = None
    while agent_pos(env) != stand:
        x, y = agent_pos(env)
        step = (np.sign(stand[0] - x), 0) if stand[0] != x else (0, np.sign(stand[1] - y))
        out = env.step(MOVES.index(step))
        assert out[1] == 0.0 and not out[2]
    into = (door[0] - stand[0], door[1] - stand[1])
    return env.step(MOVES.index(into))


def test_rewards_are_point_one_times_room_and_last_room_ends() -> None:
    env = PortalEnv(n_rooms=4)
    _, info = env.reset(seed=0)
    assert info == {"room": 1, "rooms_reached": 1}
    for k in (1, 2, 3):
        _, reward, terminated, truncated, info = walk_into(env, doors_of(env, k - 1)[0])
        assert reward == pytest.approx(0.1 * k)
        assert info["room"] == info["rooms_reached"] == k + 1
        assert agent_pos(env) == room_centre(env, k)
        assert terminated == (k == 3) and not truncated
    assert info["success"] is True


def test_wrong_door_teleports_back_to_room_one() -> None:
    env = PortalEnv(n_rooms=5)
    env.reset(seed=1)
    walk_into(env, doors_of(env, 0)[0])
    walk_into(env, doors_of(env, 1)[0])
    _, reward, terminated, _, info = walk_into(env, doors_of(env, 2)[1])
    assert reward == 0.0 and not terminated
    assert info == {"room": 1, "rooms_reached": 3}
    assert agent_pos(env) == room_centre(env, 0)
    obs = env.observe(env.state)
    assert "room:1" in env.decode(obs)[1][1]


def test_second_mistake_in_the_same_room_ends_the_episode() -> None:
    env = PortalEnv(n_rooms=5)
    env.reset(seed=2)
    # one mistake in room 1 and one in room 2: not two in the same room
    assert not walk_into(env, doors_of(env, 0)[1])[2]
    walk_into(env, doors_of(env, 0)[0])
    assert not walk_into(env, doors_of(env, 1)[1])[2]
    walk_into(env, doors_of(env, 0)[0])
    _, reward, terminated, truncated, info = walk_into(env, doors_of(env, 1)[1])
    assert terminated and not truncated and reward == 0.0
    assert info["success"] is False and info["rooms_reached"] == 2


def test_step_limit_truncates() -> None:
    env = PortalEnv(n_rooms=3, max_steps=7)
    env.reset(seed=3)
    # walk between the centre and a floor cell whose wall has no door: never through a door
    slots = {slot for slot, _, _ in env.doors(env.state, 1)}
    free = next(a for a, (dx, dy) in enumerate(MOVES) if (2 + 2 * dx, 2 + 2 * dy) not in slots)
    back = (free + 2) % 4
    for t in range(1, 8):
        _, _, terminated, truncated, info = env.step(free if t % 2 else back)
        assert not terminated and truncated == (t == 7)
    assert info["success"] is False and info["rooms_reached"] == 1


def test_room_word_and_doors_fixed_for_the_episode() -> None:
    env = PortalEnv(n_rooms=6)
    env.reset(seed=4)
    doors = [sorted(env.doors(env.state, room)) for room in range(1, 6)]
    walk_into(env, doors_of(env, 0)[0])
    walk_into(env, doors_of(env, 1)[1])
    assert [sorted(env.doors(env.state, room)) for room in range(1, 6)] == doors
    for room_doors in doors:  # two doors of different colours, one of them correct
        (_, a, ok_a), (_, b, ok_b) = room_doors
        assert a != b and ok_a != ok_b
    assert env.doors(env.state, 6) == []  # the last room has none


def test_oracle_reaches_the_last_room_of_a_short_portal() -> None:
    env = gym.make("MemoRL/Portal-R5-v0")
    oracle = PortalOracle(env.unwrapped.vocab)
    for seed in range(30):
        obs, _ = env.reset(seed=seed)
        oracle.reset()
        while True:
            obs, _, terminated, truncated, info = env.step(oracle.act(obs))
            if terminated or truncated:
                break
        assert info["success"] and info["rooms_reached"] == 5, seed


def test_memoryless_reaches_fewer_rooms() -> None:
    env = gym.make("MemoRL/Portal-R5-v0")
    policy = PortalMemoryless(env.unwrapped.vocab, seed=0)
    reached = []
    for seed in range(60):
        obs, _ = env.reset(seed=seed)
        while True:
            obs, _, terminated, truncated, info = env.step(policy.act(obs))
            if terminated or truncated:
                break
        reached.append(info["rooms_reached"])
    # it repeats its mistakes: most episodes end at the second mistake long before room 5
    assert np.mean(reached) < 3.5 and np.mean(np.equal(reached, 5)) < 0.4


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_rooms": 1}, "n_rooms"),
        ({"n_rooms": 0}, "n_rooms"),
        ({"n_rooms": 5000}, "n_rooms"),
        ({"max_steps": 0}, "max_steps"),
        ({"rooms_per_row": 0}, "rooms_per_row"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        PortalEnv(**kwargs)


def test_paper_portal_oracle_goes_far_memoryless_does_not() -> None:
    """Full 50-room portal, 1000 steps: the figure-5 metric of the two scripted policies."""
    env = gym.make("MemoRL/Portal-v0")
    vocab = env.unwrapped.vocab
    reached = {True: [], False: []}
    for memory, policy in ((True, PortalOracle(vocab)), (False, PortalMemoryless(vocab, seed=0))):
        for seed in range(5):
            obs, _ = env.reset(seed=seed)
            policy.reset()
            while True:
                obs, _, terminated, truncated, info = env.step(policy.act(obs))
                if terminated or truncated:
                    break
            reached[memory].append(info["rooms_reached"])
    assert np.mean(reached[True]) >= 30 and np.mean(reached[False]) <= 5, reached
