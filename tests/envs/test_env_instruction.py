"""The Instruction task's rules (queue, delay, tells, penalty) and its scripted policies."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from envs.instruction import CHARACTER_NAMES, Character, InstructionEnv
from envs.oracles import InstructionMemoryless, InstructionOracle

# no random events; a queue of 8 instructions per target (a delay of 10 over 80 steps)
QUIET = {"instruction_prob": 0.0, "distractor_prob": 0.0, "move_prob": 0.0,
         "episode_length": 100, "execute_delay": 10, "answer_window": 10}
TELL = 4  # first tell action
_NONE = 1 << 62  # an empty queue entry


def centre(env: InstructionEnv, obs: np.ndarray) -> set[str]:
    return set(env.decode(obs)[1][1])


def on_map(env: InstructionEnv) -> set[int]:
    """Kinds of the characters standing on the map."""
    return {int(v) - 2 for v in env.state.cells if v >= 2}


def neighbours(env: InstructionEnv) -> list[int]:
    """Kinds of the characters in the 8 cells around the agent, read from the drawn map."""
    grid, (x, y) = env.draw(env.state)
    cells = [grid.get(x + dx, y + dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    return sorted(c.kind for c in cells if isinstance(c, Character))


def pending(env: InstructionEnv) -> list[tuple[int, int]]:
    """The pending instructions, ``(target, subject)`` oldest first."""
    given, subjects = env.state.given, env.state.subjects
    return [(int(i) // env.queue, int(subjects[i])) for i in np.argsort(given, kind="stable")
            if given[i] < _NONE]


def set_pending(env: InstructionEnv, pending: list[tuple[int, int]]) -> None:
    """Replaces the queue by ``pending`` ``(target, subject)`` instructions, oldest first."""
    s, q = env.state, env.queue
    s.given[:], s.subjects[:] = _NONE, 0
    used = [0] * env.n_characters
    for t, (target, subject) in enumerate(pending):
        s.given[target * q + used[target]], s.subjects[target * q + used[target]] = t, subject
        used[target] += 1
    s.pending = sum(1 << c for c in {c for c, _ in pending})
    s.instructions_given = len(pending)


def stand_next_to(env: InstructionEnv, kind: int) -> None:
    """Puts the agent in room 1's centre, alone with character ``kind`` (north of it).

    The other characters go to room 2 (a two-room env has 7 free places there).
    """
    assert env.n_rooms == 2
    s, w, places = env.state, env.width, env._tables.place_cell
    s.cells[s.cells >= 2] = 0
    others = [c for c in range(env.n_characters) if c != kind]
    for c, place in zip(others, range(7, 14), strict=False):
        s.cells[places[place]], s.place[c] = 2 + c, place
    s.pos = 2 * w + 2  # room 1's centre; the place north of it is place 1
    s.cells[places[1]], s.place[kind] = 2 + kind, 1
    assert places[1] == w + 2
    env._look(s)
    assert neighbours(env) == [kind]


def test_instruction_heard_for_one_step_and_target_away_for_the_delay() -> None:
    env = InstructionEnv(
        n_rooms=2,
        episode_length=100,
        execute_delay=30,
        answer_window=10,
        instruction_prob=1.0,
        distractor_prob=0.0,
        move_prob=0.0,
    )
    env.reset(seed=0)
    obs, _, _, _, info = env.step(1)
    env.instruction_prob = 0.0
    heard = centre(env, obs)
    targets = [w for w in heard if w.startswith("target:")]
    subjects = [w for w in heard if w.startswith("subject:")]
    assert len(targets) == len(subjects) == 1 and targets[0][7:] != subjects[0][8:]
    target = CHARACTER_NAMES.index(targets[0][7:])
    subject = CHARACTER_NAMES.index(subjects[0][8:])
    assert pending(env) == [(target, subject)]
    assert info["instructions_given"] == 1
    assert target not in on_map(env) and len(on_map(env)) == env.n_characters - 1
    obs, *_ = env.step(3)
    assert centre(env, obs) == {"agent"}  # heard for one step only
    for t in range(3, 31):
        env.step(0)
        assert (target in on_map(env)) == (t >= 31), t
    env.step(0)  # step 31 = heard at step 1 + delay 30: back on the map
    assert target in on_map(env)


def test_instructions_only_while_reachable_and_fixed_episode_length() -> None:
    env = InstructionEnv(
        n_rooms=4,
        episode_length=120,
        execute_delay=40,
        answer_window=30,
        instruction_prob=0.5,
        distractor_prob=0.0,
    )
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(1)
    heard_at = []
    for t in range(1, 121):
        obs, _, terminated, truncated, info = env.step(int(rng.integers(4)))
        if any(w.startswith("target:") for w in centre(env, obs)):
            heard_at.append(t)
        assert not terminated and truncated == (t == 120)
    assert heard_at and max(heard_at) <= 120 - 40 - 30
    assert len(heard_at) == info["instructions_given"]
    assert info["success"] is False  # a random walk does not tell


def test_distractors_are_say_words() -> None:
    env = InstructionEnv(instruction_prob=0.0, distractor_prob=1.0)
    env.reset(seed=2)
    for _ in range(30):
        obs, *_ = env.step(1)
        said = centre(env, obs) - {"agent"}
        assert len(said) == 1 and next(iter(said)).startswith("say:")


def test_queue_tells_and_penalty() -> None:
    env = InstructionEnv(n_rooms=2, tell_penalty=0.25, **QUIET)
    env.reset(seed=3)
    butler, guard, cook, maid = range(4)
    stand_next_to(env, butler)
    set_pending(env, [(butler, guard), (butler, cook), (maid, guard)])
    # telling the second pending subject first is fine: the queue is not a stack
    _, reward, *_, info = env.step(TELL + cook)
    assert reward == 1.0 and pending(env) == [(butler, guard), (maid, guard)]
    assert info["instructions_done"] == 1
    # (maid, guard) is pending but the maid is not a neighbour: the butler's one is executed
    _, reward, *_, info = env.step(TELL + guard)
    assert reward == 1.0 and pending(env) == [(maid, guard)]
    # a tell matching nothing costs the penalty; nobody near waits for a message
    _, reward, *_, info = env.step(TELL + guard)
    assert reward == -0.25 and pending(env) == [(maid, guard)]
    assert (info["instructions_done"], info["instructions_failed"]) == (2, 0)
    assert info["instructions_pending"] == 1


def test_wrong_tell_fails_a_waiting_neighbours_oldest_instruction() -> None:
    env = InstructionEnv(n_rooms=2, **QUIET)
    env.reset(seed=4)
    butler, guard, cook, maid = range(4)
    stand_next_to(env, butler)
    set_pending(env, [(maid, cook), (butler, guard), (butler, cook)])
    _, reward, *_, info = env.step(TELL + maid)
    assert reward == -0.1
    assert pending(env) == [(maid, cook), (butler, cook)]
    assert info["instructions_failed"] == 1 and info["instructions_pending"] == 2


def test_tell_needs_the_target_as_a_neighbour() -> None:
    env = InstructionEnv(n_rooms=3, **QUIET)
    env.reset(seed=5)
    set_pending(env, [(0, 1)])
    assert neighbours(env) == []  # the corridor's west end: no character can stand next to it
    _, reward, *_ = env.step(TELL + 1)
    assert reward == -0.1 and pending(env) == [(0, 1)]


def test_characters_move_between_rooms_and_never_block_entrances() -> None:
    env = InstructionEnv(n_rooms=3, move_prob=0.2, instruction_prob=0.0)
    env.reset(seed=6)
    rng = np.random.default_rng(6)

    def rooms() -> dict[int, int]:
        grid, _ = env.draw(env.state)
        found = {}
        for i, obj in enumerate(grid.grid):
            if isinstance(obj, Character):
                x, y = i % grid.width, i // grid.width
                assert 1 <= y <= 3 and (x % 4, y) not in {(2, 2), (2, 3)}
                found[obj.kind] = (x - 1) // 4
        assert sorted(found) == list(range(env.n_characters))  # each on the map, once
        return found

    start, moved = rooms(), set()
    for _ in range(50):
        env.step(int(rng.integers(4)))
        moved |= {k for k, room in rooms().items() if room != start[k]}
    assert len(moved) >= env.n_characters // 2


def run(env: gym.Env, policy, episodes: int) -> tuple[int, int]:
    given = done = 0
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        policy.reset()
        while True:
            obs, _, terminated, truncated, info = env.step(policy.act(obs))
            if terminated or truncated:
                break
        given += info["instructions_given"]
        done += info["instructions_done"]
    return given, done


def test_oracle_executes_nearly_all_instructions() -> None:
    env = gym.make("MemoRL/Instruction-Short-v0")
    given, done = run(env, InstructionOracle(env.unwrapped.vocab), episodes=25)
    assert given >= 40 and done / given >= 0.9, (given, done)


def test_memoryless_is_near_zero_and_guessing_near_chance() -> None:
    env = gym.make("MemoRL/Instruction-Short-v0")
    given, done = run(env, InstructionMemoryless(env.unwrapped.vocab, seed=0), episodes=25)
    assert given >= 40 and done / given <= 0.05
    guesser = InstructionMemoryless(env.unwrapped.vocab, seed=0, guess=True)
    given, done = run(env, guesser, episodes=25)
    assert done / given <= 0.3  # chance: 1 / 7 with 8 kinds


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_rooms": 0}, "n_rooms"),
        ({"n_characters": 1}, "n_characters"),
        ({"n_characters": 9}, "n_characters"),
        ({"n_rooms": 1, "n_characters": 8}, "n_characters"),
        ({"execute_delay": 0}, "execute_delay"),
        ({"answer_window": 0}, "answer_window"),
        ({"episode_length": 300, "execute_delay": 200}, "episode_length"),
        ({"instruction_prob": 1.5}, "instruction_prob"),
        ({"distractor_prob": -0.1}, "distractor_prob"),
        ({"move_prob": "often"}, "move_prob"),
        ({"tell_penalty": 2.0}, "tell_penalty"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        InstructionEnv(**kwargs)


def test_paper_size_oracle_and_memoryless() -> None:
    env = gym.make("MemoRL/Instruction-v0")
    given, done = run(env, InstructionOracle(env.unwrapped.vocab), episodes=6)
    assert given >= 20 and done / given >= 0.9, (given, done)
    given, done = run(env, InstructionMemoryless(env.unwrapped.vocab, seed=1), episodes=6)
    assert done / given <= 0.05
