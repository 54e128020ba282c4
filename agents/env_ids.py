"""Env ids, and how an env is built: what an agent records so its checkpoint can rebuild the env.

Ids (:func:`resolve_env`, the one place that maps a name to an env): our short names
(``corridor``), any id registered with gymnasium (ours, ``MemoRL/Corridor-v0``, and minigrid's,
``MiniGrid-MemoryS7-v0``, registered on first use: minigrid is a dependency), and gymnasium's
``module:Env-v0`` form (``module`` is imported first, as ``gymnasium.make`` does; the id keeps
its module so a fresh process can make it again).

How an env is built (:func:`make_env`): ``gymnasium.make(id, **kwargs)``, then the wrappers the
library applies (:func:`library_wrappers`: :class:`envs.wrappers.MissionWords` for minigrid's
text missions), or an explicit list of wrappers (a checkpoint's). A wrapper is recorded as
gymnasium records it in ``env.spec.additional_wrappers``: its name, ``module:Class`` and
constructor arguments; a wrapper that does not record its arguments
(``gymnasium.utils.RecordConstructorArgs``) cannot be rebuilt, and the error says so.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec, load_env_creator

__all__ = [
    "EnvRecipe",
    "apply_wrappers",
    "built_with",
    "env_recipe",
    "env_spec",
    "library_wrappers",
    "make_env",
    "resolve_env",
    "wrappers_for",
]

#: arguments of ``gymnasium.make_vec`` (and of our batched envs) that its spec keeps among the
#: env's own, and that a single env does not take
VECTOR_KEYWORDS = ("num_envs", "vectorization_mode", "vector_kwargs", "wrappers",
                   "autoreset_mode", "device")

#: packages whose ids the library registers on first use (they are its dependencies)
AUTO_IMPORTS = ("minigrid",)


def _import_dependencies() -> None:
    import envs  # noqa: F401  (our tasks)

    for name in AUTO_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:  # pragma: no cover - a dependency, but not required to resolve ours
            pass


def resolve_env(name: str) -> str:
    """The gymnasium id of ``name``: a short name (``"corridor"``), a registered id (ours,
    minigrid's or any other package's already imported) or ``"module:Env-v0"``.

    Raises:
        ValueError: ``name`` is none of these; the message lists what is allowed and the closest
            known ids.
    """
    import envs

    if not isinstance(name, str) or not name:
        raise ValueError(f"env must be a non-empty id or short name, got {name!r}")
    if name in envs.SHORT_NAMES:
        return envs.SHORT_NAMES[name]
    module, _, env_name = name.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(
                f"unknown env {name!r}: the module {module!r} of this 'module:Env-v0' id cannot "
                f"be imported ({err})"
            ) from None
        if env_name in envs.registered_ids() or env_name in _dependency_ids():
            return env_name  # the library imports these itself: the short form is enough
        if env_name in gym.registry:
            return name
        raise ValueError(
            f"unknown env {name!r}: importing {module!r} registered no env {env_name!r}"
            f"{_did_you_mean(env_name)}"
        )
    if name not in gym.registry:
        _import_dependencies()
    if name in gym.registry:
        return name
    raise ValueError(
        f"unknown env {name!r}: choose a short name {sorted(envs.SHORT_NAMES)}, one of our ids "
        f"(e.g. {envs.registered_ids()[:3]}), a minigrid id (e.g. 'MiniGrid-MemoryS7-v0'), any "
        "id registered with gymnasium, or 'module:Env-v0' (the module that registers Env-v0, "
        f"imported first){_did_you_mean(name)}"
    )


def _dependency_ids() -> set[str]:
    _import_dependencies()
    return {k for k, s in gym.registry.items()
            if isinstance(s.entry_point, str) and s.entry_point.split(".")[0] in AUTO_IMPORTS}


def _did_you_mean(name: str) -> str:
    import envs

    close = difflib.get_close_matches(name, [*envs.SHORT_NAMES, *gym.registry], n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def env_spec(env_id: str) -> EnvSpec:
    """The registered spec of a resolved id (``module:`` prefix allowed; the module imported)."""
    return gym.spec(resolve_env(env_id).rpartition(":")[2])


# how an env is built


@dataclasses.dataclass(frozen=True)
class EnvRecipe:
    """How to build one env: ``gymnasium.make(id, **kwargs)`` and then ``wrappers``."""

    id: str
    """A resolved id (:func:`resolve_env`)."""
    kwargs: dict[str, Any]
    """Keyword arguments of ``gymnasium.make`` (the env's own and ``max_episode_steps``)."""
    wrappers: tuple[dict[str, Any], ...]
    """Applied in order after ``make``: ``{"name", "entry_point", "kwargs"}`` each, as in
    ``spec.additional_wrappers``; ``kwargs`` None for a wrapper that cannot be rebuilt."""


def wrapper_record(spec: Any) -> dict[str, Any]:
    """A ``gymnasium`` ``WrapperSpec`` as plain data (what a checkpoint stores)."""
    return {"name": spec.name, "entry_point": spec.entry_point,
            "kwargs": None if spec.kwargs is None else dict(spec.kwargs)}


def library_wrappers(env: gym.Env) -> tuple[dict[str, Any], ...]:
    """The wrappers the library puts around ``env`` so that the agents can take its
    observations and report its successes: :class:`envs.wrappers.MissionWords` when the
    observation dict has a minigrid ``MissionSpace`` (text), :class:`envs.wrappers.CodeImage`
    when a minigrid env is observed through its symbolic image alone (minigrid's
    ``ImgObsWrapper``: codes declared as pixels), :class:`envs.wrappers.SuccessInfo` for
    minigrid's envs (which report no ``success``)."""
    from envs.wrappers import (
        CodeImage,
        MissionWords,
        SuccessInfo,
        is_minigrid_code_image,
        is_minigrid_env,
        needs_mission_words,
    )

    chosen = []
    if needs_mission_words(env.observation_space):
        chosen.append(MissionWords)
    if is_minigrid_code_image(env):
        chosen.append(CodeImage)
    if is_minigrid_env(env):
        chosen.append(SuccessInfo)
    return tuple({"name": w.__name__, "entry_point": f"{w.__module__}:{w.__name__}", "kwargs": {}}
                 for w in chosen)


def apply_wrappers(env: gym.Env, wrappers: tuple[dict[str, Any], ...] | None) -> gym.Env:
    """``env`` inside ``wrappers`` (None: :func:`library_wrappers` of ``env``).

    Raises:
        ValueError: a wrapper without recorded arguments (one that cannot be rebuilt), or one
            that cannot be imported.
    """
    for w in library_wrappers(env) if wrappers is None else wrappers:
        if w.get("kwargs") is None:
            raise ValueError(
                f"the wrapper {w['name']} ({w['entry_point']}) cannot be rebuilt: it does not "
                "record its constructor arguments (gymnasium.utils.RecordConstructorArgs); pass "
                "the wrapped env as env="
            )
        try:
            creator = load_env_creator(w["entry_point"])
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(
                f"the wrapper {w['name']} ({w['entry_point']}) cannot be imported ({err}); pass "
                "the wrapped env as env="
            ) from None
        env = creator(env=env, **w["kwargs"])
    return env


def make_env(
    env_id: str,
    kwargs: dict[str, Any] | None = None,
    wrappers: tuple[dict[str, Any], ...] | None = None,
) -> gym.Env:
    """One env: ``gymnasium.make(resolve_env(env_id), **kwargs)`` inside ``wrappers`` (None: the
    wrappers the library applies, :func:`library_wrappers`)."""
    return apply_wrappers(gym.make(resolve_env(env_id), **dict(kwargs or {})), wrappers)


def env_recipe(env: Any) -> EnvRecipe | str:
    """How ``env`` (a user's env or vector env) was built, read from its ``spec`` (a vector env's:
    its first env's); or, as a string, why it cannot be rebuilt (not made by ``gymnasium.make``
    from a registered id, or wrapped by a wrapper that does not record its arguments)."""
    from gymnasium.vector import SyncVectorEnv, VectorEnv

    first = env.envs[0] if isinstance(env, SyncVectorEnv) else env
    name = type(getattr(first, "unwrapped", first)).__name__
    spec = _first_spec(env)
    if spec is None or not getattr(spec, "id", None):
        return (f"the env {name} was not made by gymnasium.make from a registered id, so it "
                "cannot be rebuilt")
    try:
        registered = gym.spec(spec.id)
    except gym.error.Error:
        return f"the env {spec.id!r} is not registered in this process, so it cannot be rebuilt"
    kwargs = dict(spec.kwargs)
    if spec is getattr(env, "spec", None) and isinstance(env, VectorEnv):
        # a vector env's own spec (gymnasium.make_vec's) holds the vector env's arguments too
        kwargs = {k: v for k, v in kwargs.items() if k not in VECTOR_KEYWORDS}
    if spec.max_episode_steps != registered.max_episode_steps:
        kwargs["max_episode_steps"] = spec.max_episode_steps
    wrappers = _added_wrappers(spec)
    for w in wrappers:
        if w["kwargs"] is None:
            return (f"the env {spec.id!r} is wrapped in {w['name']} ({w['entry_point']}), which "
                    "does not record its constructor arguments "
                    "(gymnasium.utils.RecordConstructorArgs), so it cannot be rebuilt")
    return EnvRecipe(spec.id, kwargs, wrappers)


def built_with(env: Any, venv: Any, env_id: str, kwargs: dict[str, Any]) -> EnvRecipe | str:
    """How an agent's vector env ``venv`` was built from its ``env`` argument: an id with
    ``kwargs`` (and the wrappers its envs got), or a user's env object (:func:`env_recipe`); a
    string says why it cannot be rebuilt."""
    if isinstance(env, str):
        spec = _first_spec(venv)
        return EnvRecipe(env_id, dict(kwargs), _added_wrappers(spec) if spec else ())
    return env_recipe(venv)  # its envs: the user's, inside the wrappers the library added


def _first_spec(env: Any) -> EnvSpec | None:
    """The spec of ``env``, or of a vector env's first env (asked of a subprocess worker)."""
    from gymnasium.vector import AsyncVectorEnv, SyncVectorEnv

    if isinstance(env, SyncVectorEnv):
        return env.envs[0].spec
    if isinstance(env, AsyncVectorEnv):
        return env.get_attr("spec")[0]
    return getattr(env, "spec", None)


def _added_wrappers(spec: EnvSpec) -> tuple[dict[str, Any], ...]:
    """The wrappers of ``spec`` beyond those its registered id applies itself."""
    try:
        prior = len(gym.spec(spec.id).additional_wrappers)
    except gym.error.Error:
        prior = 0
    return tuple(wrapper_record(w) for w in spec.additional_wrappers[prior:])


def wrappers_for(model: Any, env_id: str) -> tuple[dict[str, Any], ...] | None:
    """The wrappers for an env of ``env_id`` that ``model`` (an agent) acts in: the ones its own
    env was built with when ``env_id`` is its env's id, else None (the library's choice)."""
    own = getattr(model, "env_id", None)
    try:
        same = bool(own) and resolve_env(env_id) == resolve_env(str(own))
    except ValueError:
        same = False
    return tuple(getattr(model, "env_wrappers", ())) if same else None
