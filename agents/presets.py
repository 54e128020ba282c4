"""Per-env presets: the settings a task needs beyond the algorithm's defaults, keyed by env id,
then by algorithm (trainer fields) or policy (memory hyperparameters).

One table, read by everything that needs it: the agents' constructor applies it
(``PPO("expire_span", "MemoRL/Corridor-v0")``), so the command line, which builds its agent the
same way, trains with the same config; ``--help`` and README print it (:func:`describe_presets`);
tests import it. A value the user gives (a keyword of the constructor, a command-line option, a
key of ``policy_kwargs``) always wins over the preset, and a ``config`` object passed whole is used
as it is. Why each value: ``docs/results/defaults.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import AgentConfig, replace_config

__all__ = ["PRESETS", "EnvPreset", "apply_preset", "configure", "describe_presets", "preset_for"]


@dataclass(frozen=True)
class EnvPreset:
    """What one env id changes."""

    config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Trainer fields per algorithm (``"ppo"``, ``"a2c"``: the CLI's ``--algo`` names)."""

    policy_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Policy hyperparameters per policy name (``--policy``)."""


PRESETS: dict[str, EnvPreset] = {
    # a far, sparse reward: many envs, the entropy bonus after the walk is learned, Expire-Span
    # without its span penalty (docs/results/defaults.md, "The full corridor's preset")
    "MemoRL/Corridor-v0": EnvPreset(
        config={
            "ppo": {"n_envs": 64, "ent_coef": 0.0005, "ent_start_step": 819_200},
            "a2c": {"n_envs": 64},
        },
        policy_kwargs={"expire_span": {"alpha": 0.0}},
    ),
}


def preset_for(env_id: str, algo: str, policy: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The preset's trainer fields and policy hyperparameters for ``env_id`` (a registered id),
    ``algo`` and ``policy`` (both empty where the table has nothing)."""
    preset = PRESETS.get(env_id, EnvPreset())
    return dict(preset.config.get(algo, {})), dict(preset.policy_kwargs.get(policy, {}))


def apply_preset(
    config: AgentConfig, env_id: str, algo: str, policy: str, given: Iterable[str] = ()
) -> AgentConfig:
    """``config`` with the preset of ``env_id`` for ``algo`` and ``policy``, except the fields
    named in ``given`` (the user's own values, which win); the preset's policy hyperparameters go
    under ``config.policy_kwargs``, whose keys win."""
    fields, kwargs = preset_for(env_id, algo, policy)
    changes = {k: v for k, v in fields.items() if k not in set(given)}
    given_kwargs = config.policy_kwargs
    if not isinstance(given_kwargs, dict):  # left for validate() to refuse
        return replace_config(config, **changes)
    return replace_config(config, **changes, policy_kwargs={**kwargs, **given_kwargs})


def configure(
    config_class: type[AgentConfig],
    config: AgentConfig | None,
    overrides: Mapping[str, Any],
    env_id: str,
    algo: str,
    policy: str,
    n_envs: int | None = None,
) -> AgentConfig:
    """An agent's config: ``config`` as given, or ``config_class()`` with the preset of
    ``env_id``; then ``overrides``; then ``n_envs`` when the env fixes it (a given vector env);
    validated."""
    if config is None:
        cfg = replace_config(config_class(), **overrides)
        cfg = apply_preset(cfg, env_id, algo, policy, given=overrides)
    else:
        cfg = replace_config(config, **overrides)
    if n_envs is not None:
        cfg = replace_config(cfg, n_envs=n_envs)
    return cfg.validate()


def describe_presets(markdown: bool = False) -> str:
    """The table as text: indented lines (for ``--help``) or a Markdown table (README's)."""
    rows = [
        (env_id, f"--{kind} {name}", ", ".join(f"{k}={v!r}" for k, v in values.items()))
        for env_id, preset in PRESETS.items()
        for kind, table in (("algo", preset.config), ("policy", preset.policy_kwargs))
        for name, values in table.items()
    ]
    if markdown:
        head = ["| env id | with | settings |", "|---|---|---|"]
        return "\n".join(head + [f"| `{e}` | `{w}` | `{s}` |" for e, w, s in rows])
    return "\n".join(f"  {e}, {w}: {s}" for e, w, s in rows)
