"""Envs we did not write, minigrid's first: ids of every form resolve (or fail naming what is
allowed), minigrid's observations reach the policy as category codes, and checkpoints rebuild the
env they were trained on, wrappers included, or say why not."""

from __future__ import annotations

import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import SyncVectorEnv

from agents import PPO, CheckpointError
from agents.env_ids import library_wrappers, make_env, resolve_env
from agents.evaluation import evaluate
from envs.wrappers import (
    MINIGRID_CODE_HIGH,
    CodeImage,
    MissionWords,
    SuccessInfo,
    is_minigrid_code_image,
    mission_vocabulary,
)
from policies.encoders import BoxEncoder, SymbolicGridEncoder, is_symbolic_grid, make_encoder

MEMORY = "MiniGrid-MemoryS7-v0"
#: a tiny run: short episodes, few envs, one minibatch
TINY = {"n_envs": 2, "rollout_len": 16, "bptt_len": 16, "n_minibatches": 1, "n_epochs": 1}


def tiny(env, **kwargs) -> PPO:
    return PPO("lstm", env, tensorboard_log=None, policy_kwargs={"hidden_dim": 16},
               **{**TINY, **kwargs})


# ids


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("corridor", "MemoRL/Corridor-v0"),
        ("MemoRL/Corridor-L10-v0", "MemoRL/Corridor-L10-v0"),
        ("envs:MemoRL/Corridor-v0", "MemoRL/Corridor-v0"),  # imported by the library anyway
        (MEMORY, MEMORY),
        (f"minigrid:{MEMORY}", MEMORY),
        ("CartPole-v1", "CartPole-v1"),
    ],
)
def test_every_form_of_id_resolves(name: str, expected: str) -> None:
    assert resolve_env(name) == expected
    assert gym.spec(expected.rpartition(":")[2]) is not None


def test_a_users_module_id_keeps_its_module(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_tasks_mod.py").write_text(textwrap.dedent("""
        import gymnasium as gym
        import numpy as np

        class TinyEnv(gym.Env):
            observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
            action_space = gym.spaces.Discrete(2)

            def reset(self, *, seed=None, options=None):
                super().reset(seed=seed)
                return np.zeros(2, np.float32), {}

            def step(self, action):
                return np.ones(2, np.float32), 1.0, True, False, {}

        gym.register("MyTasks/Tiny-v0", entry_point=TinyEnv)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    env_id = resolve_env("my_tasks_mod:MyTasks/Tiny-v0")
    assert env_id == "my_tasks_mod:MyTasks/Tiny-v0"  # a fresh process can make it again
    assert make_env(env_id).observation_space.shape == (2,)
    try:
        model = tiny(env_id)
        assert model.env_id == env_id and model.env.num_envs == 2
        model.env.close()
    finally:
        gym.registry.pop("MyTasks/Tiny-v0", None)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("MiniGrid-MemoryS8-v0",
         r"unknown env 'MiniGrid-MemoryS8-v0': choose a short name \['corridor'.*a minigrid id "
         r".*'module:Env-v0'.*did you mean MiniGrid-Memory"),
        ("corridoor", r"unknown env 'corridoor'.*did you mean corridor"),
        ("no_such_module_xyz:Env-v0", r"the module 'no_such_module_xyz' .* cannot be imported"),
        ("envs:MemoRL/Nope-v0", r"importing 'envs' registered no env 'MemoRL/Nope-v0'"),
    ],
)
def test_unknown_ids_are_refused_naming_what_is_allowed(name: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        resolve_env(name)


# observations


def test_mission_words_drop_a_constant_mission_and_bag_a_varying_one() -> None:
    memory = make_env(MEMORY)
    assert set(memory.observation_space.spaces) == {"image", "direction"}
    obs, _ = memory.reset(seed=0)
    assert set(obs) == {"image", "direction"}

    raw = gym.make("MiniGrid-GoToObject-6x6-N2-v0")
    vocab = mission_vocabulary(raw.observation_space["mission"])
    assert {"go", "to", "the", "blue", "yellow", "key", "ball", "box"} <= set(vocab)
    env = MissionWords(raw)
    assert env.observation_space["mission"].shape == (len(vocab),)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        words = set(raw.unwrapped.mission.split())
        assert {vocab[i] for i in np.flatnonzero(obs["mission"])} == words
        assert env.observation_space.contains(obs)


def test_free_text_missions_are_refused_clearly() -> None:
    env = gym.make("BabyAI-GoToLocal-v0")
    with pytest.raises(ValueError, match="cannot be enumerated.*free-text missions are not"):
        MissionWords(env)


def test_library_wraps_minigrid_only() -> None:
    names = [w["name"] for w in library_wrappers(gym.make(MEMORY))]
    assert names == ["MissionWords", "SuccessInfo"]
    assert library_wrappers(gym.make("MemoRL/Corridor-L10-v0")) == ()


def test_success_info_reports_minigrid_goals() -> None:
    env = SuccessInfo(gym.make("MiniGrid-Empty-5x5-v0"))
    env.reset(seed=0)  # agent at (1, 1) facing east, goal at (3, 3)
    for action in (2, 2, 1, 2):  # forward, forward, turn right, forward
        *_, info = env.step(action)
        assert "success" not in info
    _, reward, terminated, _, info = env.step(2)
    assert terminated and reward > 0 and info["success"] is True
    short = SuccessInfo(gym.make("MiniGrid-Empty-5x5-v0", max_steps=2))
    short.reset(seed=0)
    short.step(0)
    _, _, terminated, truncated, info = short.step(0)
    assert truncated and not terminated and info["success"] is False


def _hand_built_obs() -> dict[str, np.ndarray]:
    image = np.zeros((7, 7, 3), np.uint8)
    image[:, 4] = (2, 5, 0)  # a row of grey walls
    image[3, 6] = (5, 1, 0)  # a green key in front of the agent: (object, colour, state)
    image[1, 1] = (4, 3, 2)  # a purple locked door
    return {"image": image, "direction": np.int64(3)}


def test_the_encoder_reads_category_codes_not_pixels() -> None:
    space = make_env(MEMORY).observation_space
    assert is_symbolic_grid(space)
    torch.manual_seed(0)
    enc = make_encoder(space, features_dim=16)
    assert isinstance(enc, SymbolicGridEncoder) and enc.features_dim == 16
    obs = _hand_built_obs()
    image = torch.as_tensor(obs["image"])
    rows = enc.code_indices(image)
    assert enc.offsets.tolist() == [0, 256, 512]  # one table row per value of each channel
    assert rows[3, 6].tolist() == [5, 256 + 1, 512 + 0]
    assert rows[1, 1].tolist() == [4, 256 + 3, 512 + 2]
    assert rows[0, 4].tolist() == [2, 256 + 5, 512]
    # a naive reference: each cell the concatenated rows of its codes, then the same layers
    table = enc.codes.weight
    cells = torch.zeros(7, 7, 3 * table.shape[1])
    for i in range(7):
        for j in range(7):
            cells[i, j] = torch.cat([table[k * 256 + int(obs["image"][i, j, k])]
                                     for k in range(3)])
    grid = enc.cnn(cells.permute(2, 0, 1).unsqueeze(0)).flatten(1)
    want = enc.mix(torch.cat([grid, enc.direction.weight[3].unsqueeze(0)], dim=-1))
    batch = {"image": image.unsqueeze(0), "direction": torch.tensor([3])}
    torch.testing.assert_close(enc(batch), want)
    # time-major batches keep their leading dims; one code changed changes the features
    tm = {k: v.unsqueeze(0).expand(2, 3, *v.shape[1:]) for k, v in batch.items()}
    assert enc(tm).shape == (2, 3, 16)
    other = image.clone()
    other[3, 6, 0] = 6  # the key becomes a ball
    assert not torch.allclose(enc({"image": other.unsqueeze(0), "direction": batch["direction"]}),
                              enc(batch))


def test_a_raw_minigrid_space_ignores_a_constant_mission_and_refuses_a_varying_one() -> None:
    enc = make_encoder(gym.make(MEMORY).observation_space, features_dim=8)
    assert isinstance(enc, SymbolicGridEncoder) and len(enc.others) == 0
    with pytest.raises(ValueError, match="'mission' is a minigrid mission that varies.*Mission"):
        make_encoder(gym.make("MiniGrid-GoToObject-6x6-N2-v0").observation_space)
    # with its bag of words, the mission is one more input
    words = make_encoder(make_env("MiniGrid-GoToObject-6x6-N2-v0").observation_space)
    assert list(words.others) == ["mission"]


def test_an_image_of_codes_alone_is_declared_and_read_as_codes() -> None:
    from minigrid.wrappers import FullyObsWrapper, ImgObsWrapper, RGBImgPartialObsWrapper

    bare = ImgObsWrapper(gym.make(MEMORY))  # Box(0, 255, (7, 7, 3)): pixels, by its space
    assert is_minigrid_code_image(bare)
    assert is_minigrid_code_image(ImgObsWrapper(FullyObsWrapper(gym.make(MEMORY))))
    assert not is_minigrid_code_image(ImgObsWrapper(RGBImgPartialObsWrapper(gym.make(MEMORY))))
    assert not is_minigrid_code_image(gym.make(MEMORY))  # (the dict: is_symbolic_grid's)
    assert [w["name"] for w in library_wrappers(bare)] == ["CodeImage", "SuccessInfo"]
    with pytest.raises(ValueError, match="CodeImage wraps a minigrid env.*got"):
        CodeImage(gym.make("MemoRL/Corridor-L10-v0"))
    env = CodeImage(bare)
    assert env.observation_space.high[0, 0].tolist() == list(MINIGRID_CODE_HIGH)
    full = CodeImage(ImgObsWrapper(FullyObsWrapper(gym.make(MEMORY))))
    for e in (env, full):  # every code of real episodes lies in the declared space
        obs, _ = e.reset(seed=0)
        for t in range(30):
            assert e.observation_space.contains(obs)
            obs, *_ = e.step(t % 3)
    torch.manual_seed(0)
    enc = make_encoder(env.observation_space, features_dim=16)
    assert isinstance(enc, SymbolicGridEncoder) and enc.direction is None
    assert enc.offsets.tolist() == [0, 11, 17]  # 11 objects, 6 colours, then the states
    image = torch.as_tensor(_hand_built_obs()["image"])
    # a naive reference: each cell the concatenated rows of its codes, then the same layers
    table, offsets = enc.codes.weight, (0, 11, 17)
    cells = torch.stack([torch.stack([
        torch.cat([table[offsets[k] + int(image[i, j, k])] for k in range(3)])
        for j in range(7)]) for i in range(7)])
    want = enc.mix(enc.cnn(cells.permute(2, 0, 1).unsqueeze(0)).flatten(1))
    torch.testing.assert_close(enc(image.unsqueeze(0)), want)
    assert enc(image.expand(2, 3, 7, 7, 3)).shape == (2, 3, 16)
    # an image up to 255 stays pixels, a binary grid stays a bag of words
    assert isinstance(make_encoder(bare.observation_space), BoxEncoder)
    assert isinstance(make_encoder(gym.spaces.Box(0, 1, (3, 3, 5), np.uint8)), BoxEncoder)


def test_an_image_of_codes_alone_trains_and_reaches_the_sb3_extractor() -> None:
    from minigrid.wrappers import ImgObsWrapper
    from stable_baselines3.common.preprocessing import preprocess_obs

    from policies.sb3 import BagOfWordsExtractor

    model = tiny(ImgObsWrapper(gym.make(MEMORY, max_steps=12))).learn(64, progress_bar=False)
    assert isinstance(model.env.envs[0].env, CodeImage)  # (the library's, inside SuccessInfo)
    assert isinstance(model.policy.encoder, SymbolicGridEncoder)
    space = model.observation_space
    extractor = BagOfWordsExtractor(space, features_dim=16)
    image = torch.as_tensor(_hand_built_obs()["image"])[None]
    pre = preprocess_obs(image, space)  # (floats, not scaled: the space is not an image's)
    torch.testing.assert_close(extractor(pre), extractor.encoder(image))


def test_the_sb3_extractor_restores_the_codes_sb3_preprocessed() -> None:
    from stable_baselines3.common.preprocessing import preprocess_obs

    from policies.sb3 import BagOfWordsExtractor

    space = make_env(MEMORY).observation_space
    torch.manual_seed(0)
    extractor = BagOfWordsExtractor(space, features_dim=16)
    obs = _hand_built_obs()
    batch = {"image": torch.as_tensor(obs["image"])[None],
             "direction": torch.tensor([[3]])}  # SB3's buffers keep Discrete as (N, 1)
    pre = preprocess_obs(batch, space)  # image / 255, direction one-hot
    want = extractor.encoder({"image": batch["image"], "direction": torch.tensor([3])})
    torch.testing.assert_close(extractor(pre), want)


# training, checkpoints, evaluation


def test_the_cli_trains_and_evaluates_a_minigrid_id(train, script, tmp_path, capsys) -> None:
    argv = ["--env", MEMORY, "--env-kwargs", "max_steps=12", "--policy", "lstm",
            "--total-steps", "192", "--n-envs", "4", "--rollout-len", "16", "--bptt-len", "16",
            "--n-minibatches", "1", "--log-dir", str(tmp_path), "--no-progress"]
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert f"on {MEMORY}" in out and "steps:         192" in out
    (ckpt,) = tmp_path.glob("*/checkpoint.pt")
    assert script("evaluate_agent").main([str(ckpt), "--episodes", "4", "--n-envs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"lstm on {MEMORY}: success rate" in out and "over 4 episodes" in out


def test_save_load_evaluate_without_env(tmp_path) -> None:
    model = tiny(MEMORY, env_kwargs={"max_steps": 12}).learn(64, progress_bar=False)
    assert [w["name"] for w in model.env_wrappers] == ["MissionWords", "SuccessInfo"]
    model.save(tmp_path / "m.pt")
    loaded = PPO.load(tmp_path / "m.pt")  # no env=: rebuilt from the checkpoint
    assert isinstance(loaded.env, SyncVectorEnv)
    assert (loaded.env_id, loaded.env_kwargs, loaded.env_wrappers) == (
        model.env_id, model.env_kwargs, model.env_wrappers)
    assert loaded.observation_space == model.observation_space
    obs, _ = loaded.env.reset(seed=3)
    a, _ = model.predict(obs, deterministic=True)
    b, _ = loaded.predict(obs, deterministic=True)
    assert np.array_equal(a, b)
    assert loaded.env.envs[0].unwrapped.max_steps == 12  # the run's env arguments came back
    out = evaluate(loaded, loaded.env_id, 4, n_envs=2, env_kwargs=loaded.env_kwargs)
    assert out["length"].max() <= 12
    assert set(np.unique(out["success"])) <= {0.0, 1.0}
    loaded.learn(128, progress_bar=False, reset_num_timesteps=False)  # and it trains on


def test_a_users_recordable_wrapper_is_rebuilt(tmp_path) -> None:
    env = gym.wrappers.FlattenObservation(gym.make("MemoRL/Corridor-L10-v0"))
    model = tiny(env)
    assert [w["name"] for w in model.env_wrappers] == ["FlattenObservation"]
    model.save(tmp_path / "m.pt")
    loaded = PPO.load(tmp_path / "m.pt")
    assert loaded.env.single_observation_space == env.observation_space
    assert loaded.env_wrappers == model.env_wrappers


def test_an_unknown_wrapper_is_a_clear_error_saying_to_pass_env(tmp_path, script,
                                                                 capsys) -> None:
    from minigrid.wrappers import ImgObsWrapper

    def make() -> gym.Env:
        return ImgObsWrapper(gym.make(MEMORY, max_steps=12))

    model = tiny(make())
    assert "ImgObsWrapper" in model.env_rebuild_error
    model.save(tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"wrapped in ImgObsWrapper "
                       r"\(minigrid.wrappers:ImgObsWrapper\).*cannot be rebuilt.*env="):
        PPO.load(tmp_path / "m.pt")
    loaded = PPO.load(tmp_path / "m.pt", env=make())
    assert loaded.observation_space == model.observation_space
    with pytest.raises(SystemExit) as info:  # the command line says the same, in one line
        script("evaluate_agent").main([str(tmp_path / "m.pt")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "ImgObsWrapper" in err and "cannot be rebuilt" in err and "env=" in err


def test_a_users_own_env_class_is_a_clear_error(tmp_path) -> None:
    from envs.corridor import CorridorEnv

    model = tiny(CorridorEnv(min_length=3, max_length=3))
    model.save(tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="CorridorEnv was not made by gymnasium.make.*env="):
        PPO.load(tmp_path / "m.pt")
    assert PPO.load(tmp_path / "m.pt", env=CorridorEnv(min_length=3, max_length=3)).env


def test_a_minigrid_argument_typo_is_refused_by_the_cli(train, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(["--env", MEMORY, "--env-kwargs", "max_stpes=5", "--total-steps", "16"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "takes no argument 'max_stpes' (did you mean 'max_steps'?)" in err
    assert "agent_view_size" in err  # minigrid's own arguments, through MemoryEnv's **kwargs


def test_a_users_vector_env_is_rebuilt_with_the_single_envs_arguments(tmp_path) -> None:
    from gymnasium.vector import AutoresetMode

    venv = gym.make_vec("MemoRL/Corridor-v0", 2, vectorization_mode="vector_entry_point",
                        autoreset_mode=AutoresetMode.SAME_STEP, min_length=4, max_length=6)
    model = tiny(venv)
    # make_vec's spec mixes its own arguments in: only the env's are kept
    assert model.env_kwargs == {"min_length": 4, "max_length": 6}
    model.save(tmp_path / "m.pt")
    loaded = PPO.load(tmp_path / "m.pt")
    assert loaded.env.num_envs == 2 and loaded.env_kwargs == model.env_kwargs


def test_predict_on_a_raw_minigrid_observation_says_how_to_make_the_env() -> None:
    model = tiny(MEMORY)
    raw, _ = gym.make(MEMORY).reset(seed=0)
    with pytest.raises(ValueError, match=r"got \['direction', 'image', 'mission'\].*make_env"):
        model.predict(raw)
    obs, _ = make_env(model.env_id, model.env_kwargs, model.env_wrappers).reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert model.action_space.contains(int(action))
