"""The config dataclasses: every field declared once (type, range, help text), presets that change
defaults only, validation by type and range with one-line errors, and the command line generated
from the types."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from agents import PPO, A2CConfig, AgentConfig, PPOConfig, field_docs
from agents.cli import OneLineParser, add_config_options, config_options, parse_kv
from agents.config import OPTIMIZERS, OptimizerName, field_types
from agents.vec import VEC_KINDS, VecMode


def test_every_field_has_its_help_text_once():
    docs = field_docs(AgentConfig)
    assert set(docs) == {f.name for f in dataclasses.fields(AgentConfig)} and all(docs.values())
    for cls in (PPOConfig, A2CConfig):
        assert field_docs(cls) == docs  # inherited, not repeated
        own = typing.get_type_hints(cls).keys() & vars(cls).get("__annotations__", {}).keys()
        assert own, cls  # the preset does change defaults ...
        for name in own:  # ... and declares no help text of its own
            assert not cls.__dataclass_fields__[name].metadata, name
    assert "RMSprop" in docs["optimizer"]
    assert "docs/results/defaults.md" in docs["adv_std_floor"]  # the narrative moved out


def test_choices_are_defined_once():
    assert set(OPTIMIZERS) == set(typing.get_args(OptimizerName))
    assert VEC_KINDS == typing.get_args(VecMode)
    assert typing.get_args(field_types(AgentConfig)["vec"]) == VEC_KINDS


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"gamma": "0.9"}, "gamma must be a finite number in [0, 1], got '0.9' (a str)"),
        ({"gamma": 1.5}, "gamma must be a finite number in [0, 1], got 1.5"),
        ({"lr": float("inf")}, "lr must be a finite number > 0, got inf"),
        ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
        ({"lr": 0}, "lr must be a finite number > 0, got 0"),
        ({"ent_coef": True}, "ent_coef must be a finite number >= 0, got True (a bool)"),
        ({"n_envs": 2.0}, "n_envs must be an integer >= 1, got 2.0"),
        ({"n_envs": True}, "n_envs must be an integer >= 1, got True (a bool)"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"mrbp": 1}, "mrbp must be True or False, got 1"),
        ({"optimizer": "sgd"}, "optimizer must be one of: adam, rmsprop, got 'sgd'"),
        ({"optimizer_eps": 0}, "optimizer_eps must be a finite number > 0, got 0"),
        ({"ent_start_step": 100, "ent_end_step": 100},
         "ent_end_step must be 0 (no decay) or after ent_start_step (100), got 100"),
        ({"vec": "x"}, "vec must be one of: auto, batched, sync, async, got 'x'"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
        ({"device": "cuda:x"}, "device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
        ({"clip_coef": -0.1}, "clip_coef must be a finite number > 0 or None, got -0.1"),
        ({"target_kl": float("inf")}, "target_kl must be a finite number > 0 or None, got inf"),
        ({"policy_kwargs": "x"}, "policy_kwargs must be a dict with string keys, got 'x'"),
        ({"rollout_len": 100, "bptt_len": 30}, "bptt_len must be a divisor of rollout_len (100)"),
        ({"n_envs": 3, "n_minibatches": 2}, "n_minibatches must be a divisor of the number"),
        ({"mrbp": True, "rollout_len": 128, "bptt_len": 128, "mrbp_chunk_len": 30},
         "mrbp_chunk_len must be a divisor of bptt_len (128)"),
    ],
)
def test_validation_names_the_field_and_what_is_allowed(changes, message):
    with pytest.raises(ValueError) as info:
        dataclasses.replace(PPOConfig(), **changes).validate()
    assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="must be"):  # the agents refuse it the same way
        PPO("gru", "MemoRL/Corridor-L10-v0", tensorboard_log=None, **changes)


def test_good_values_pass():
    PPOConfig(clip_coef=None, target_kl=0.02, device="cuda:1", lr=1, seed=2**40).validate()
    with pytest.raises(ValueError, match="unknown option.*'n_env'.*n_envs"):
        PPO("gru", "MemoRL/Corridor-L10-v0", tensorboard_log=None, n_env=3)


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_the_optimizers_epsilon_reaches_every_group_but_one_with_its_own(optimizer):
    def eps_of(**kw):
        model = PPO("expire_span", "MemoRL/Corridor-L10-v0", tensorboard_log=None,
                    optimizer=optimizer, **kw)
        return [g["eps"] for g in model.optimizer.param_groups]

    assert set(eps_of()) == {1e-5}
    assert set(eps_of(optimizer_eps=1e-3)) == {1e-3}
    own = eps_of(optimizer_eps=1e-3, policy_kwargs={"span_eps": 0.5})
    assert sorted(set(own)) == [1e-3, 0.5]


def test_the_entropy_bonus_schedule():
    from agents.schedules import update_config

    def coef(step, **kw):
        return update_config(PPOConfig(ent_coef=0.004, **kw).validate(), step).ent_coef

    assert [coef(t) for t in (0, 10**6)] == [0.004, 0.004]  # (no schedule)
    assert [coef(t, ent_start_step=100) for t in (0, 99, 100)] == [0.0, 0.0, 0.004]
    decay = [coef(t, ent_end_step=1000) for t in (0, 250, 1000, 2000)]
    assert decay == pytest.approx([0.004, 0.003, 0.0, 0.0])
    late = [coef(t, ent_start_step=100, ent_end_step=300) for t in (50, 100, 200, 300)]
    assert late == pytest.approx([0.0, 0.004, 0.002, 0.0])


def parser_for(cls=AgentConfig) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="t")
    add_config_options(parser, cls, {"ppo": PPOConfig(), "a2c": A2CConfig()})
    return parser


def test_the_command_line_is_generated_from_the_types():
    parser = parser_for()
    args = parser.parse_args([
        "--n-envs", "8", "--no-norm-adv", "--mrbp", "--clip-coef", "none", "--target-kl", "0.1",
        "--optimizer", "rmsprop", "--vec", "sync", "--policy-kwargs", "alpha=0", "name=x",
        "--device", "cpu", "--lr", "1e-3",
    ])
    got = config_options(args, AgentConfig)
    assert got == {"n_envs": 8, "norm_adv": False, "mrbp": True, "clip_coef": None,
                   "target_kl": 0.1, "optimizer": "rmsprop", "vec": "sync",
                   "policy_kwargs": {"alpha": 0, "name": "x"}, "device": "cpu", "lr": 1e-3}
    assert config_options(parser.parse_args([]), AgentConfig) == {}  # nothing given: no field
    text = parser.format_help()
    flat = " ".join(text.split())
    for f in dataclasses.fields(AgentConfig):
        assert "--" + f.name.replace("_", "-") in text, f.name
        first = " ".join(field_docs(AgentConfig)[f.name].split()[:4])
        assert first in flat, f.name
    assert "(default: a2c: 16, ppo: 32)" in flat or "(default: ppo: 32, a2c: 16)" in flat


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n-envs", "x"], "argument --n-envs: invalid int value: 'x'"),
        (["--clip-coef", "y"], "argument --clip-coef: invalid float or none value: 'y'"),
        (["--vec", "fast"], "argument --vec: invalid choice: 'fast'"),
        (["--policy-kwargs", "alpha"], "--policy-kwargs entries must be key=value, got 'alpha'"),
    ],
)
def test_command_line_errors_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        parser_for().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "usage" not in err, err
    assert err.startswith("t: error: ") and err.rstrip().endswith("(see --help)")


def test_parse_kv():
    assert parse_kv(["a=1", "b=x", "c=[1, 2]", "d=a=b"], "--x") == {
        "a": 1, "b": "x", "c": [1, 2], "d": "a=b"}
    with pytest.raises(ValueError, match="--x entries must be key=value, got '=3'"):
        parse_kv(["=3"], "--x")
