"""Vector environments for the agents: creation from an id, a short name or an env, and a stepper
that turns the env's batches (numpy arrays, or tensors of a batched env) into torch tensors on the
device.

Kinds of vector env (``vec``): ``batched``, the native vector implementation of an id (its
``vector_entry_point``, e.g. :class:`envs.corridor.CorridorVectorEnv`: all envs stepped at once
with array operations; on a CUDA training device it runs on that device, so observations arrive
as tensors where the policy is and never cross the host); ``sync`` (``SyncVectorEnv`` of the
single env, in this process) and ``async`` (``AsyncVectorEnv``, in subprocesses). ``auto`` picks
``batched`` for our registered ids that have a vector entry point and ``sync`` otherwise. Batched
and sync envs give the same episodes for the same seeds, so they are interchangeable.

Autoreset: we create every vector env with ``AutoresetMode.SAME_STEP``. The step that ends an
episode returns the next episode's first observation, with the last one in
``info["final_obs"]`` and the ending step's info in ``info["final_info"]``. Every step the agent
takes is then a real transition (gymnasium's default ``NEXT_STEP`` spends one step per episode on
a reset whose action is ignored, which would have to be masked out of the loss), and the final
observation is at hand for the time-limit bootstrap. A user-made vector env must use ``SAME_STEP``
too; any other mode is refused with an error saying how to create it.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import load_env_creator
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from torch import Tensor
from torch.utils._pytree import tree_map

from .env_ids import apply_wrappers, env_spec, make_env, resolve_env
from .validation import check_choice, check_int

__all__ = [
    "VEC_KINDS",
    "EnvStepper",
    "StepResult",
    "VecMode",
    "check_env_kwargs",
    "env_id_of",
    "make_agent_env",
    "make_vec_env",
    "resolve_env",
    "task_metrics",
]

VecMode = Literal["auto", "batched", "sync", "async"]
"""The kinds of vector env (see the module docstring)."""

VEC_KINDS: tuple[str, ...] = get_args(VecMode)


#: keywords of ``gymnasium.make`` itself, accepted for every id
MAKE_KEYWORDS = ("max_episode_steps", "disable_env_checker")


def check_env_kwargs(env_id: str, kwargs: dict[str, Any]) -> None:
    """Refuse arguments that the env of ``env_id`` does not take (by its constructor's
    signature), naming them and the ones it takes. A class whose ``__init__`` passes ``**kwargs``
    on takes those of its base classes' too (minigrid's envs: their own and ``MiniGridEnv``'s); an
    env whose constructors all take ``**kwargs`` takes all."""
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"env_kwargs must be a dict with string keys, got {kwargs!r}")
    creator = env_spec(env_id).entry_point
    if isinstance(creator, str):
        creator = load_env_creator(creator)
    chain = [c.__init__ for c in inspect.getmro(creator) if "__init__" in vars(c)
             and c is not object] if inspect.isclass(creator) else [creator]
    takes: list[str] = []
    open_ended = False  # the last constructor read passes **kwargs on
    for fn in chain:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):  # a builtin or C entry point: nothing to read
            return
        takes += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and p.name != "self" and p.name not in takes]
        open_ended = any(p.kind is p.VAR_KEYWORD for p in params)
        if not open_ended:
            break
    if open_ended:
        return  # **kwargs all the way down: nothing to check against
    takes += list(MAKE_KEYWORDS)
    unknown = [k for k in kwargs if k not in takes]
    if unknown:
        close = difflib.get_close_matches(unknown[0], takes, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"env {env_id!r} takes no argument {', '.join(map(repr, unknown))}{hint}; it takes: "
            f"{', '.join(takes)}"
        )


def env_id_of(env: Any) -> str:
    """The id of an env or vector env (its spec id), or its class name."""
    spec = getattr(env, "spec", None)
    if spec is not None and getattr(spec, "id", None):
        return spec.id
    inner = getattr(env, "envs", None)
    if inner:
        return env_id_of(inner[0])
    return type(getattr(env, "unwrapped", env)).__name__


def has_batched(env_id: str) -> bool:
    """Whether ``env_id`` is one of our registered tasks with a batched implementation."""
    import envs

    return env_id in envs.registered_ids() and env_spec(env_id).vector_entry_point is not None


def vec_kind(env: str | gym.Env | VectorEnv, vec: VecMode = "auto") -> str:
    """The kind of vector env that :func:`make_vec_env` builds for ``env``: ``batched``, ``sync``
    or ``async`` (``vector`` for a ``VectorEnv``, used as it is)."""
    check_choice("vec", vec, VEC_KINDS)
    if isinstance(env, VectorEnv):
        return "vector"
    if vec == "auto":
        return "batched" if isinstance(env, str) and has_batched(resolve_env(env)) else "sync"
    if vec == "batched":
        if not isinstance(env, str):
            raise ValueError(
                f"vec='batched' needs an env id with a batched implementation, got a "
                f"{type(env).__name__}; use vec='sync' or 'async'"
            )
        env_id = resolve_env(env)
        if env_spec(env_id).vector_entry_point is None:
            import envs

            ours = [i for i in envs.registered_ids() if gym.spec(i).vector_entry_point]
            raise ValueError(
                f"vec='batched': env {env_id!r} has no batched implementation (no "
                f"vector_entry_point); use vec='sync' or 'async', or one of {ours}"
            )
    return vec


def make_vec_env(
    env: str | gym.Env | VectorEnv,
    n_envs: int,
    *,
    vec: VecMode = "auto",
    env_kwargs: dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    wrappers: tuple[dict[str, Any], ...] | None = None,
) -> VectorEnv:
    """A ``SAME_STEP`` vector env of ``n_envs`` copies of ``env``.

    Args:
        env: an id or short name (made with ``gymnasium.make(id, **env_kwargs)``, or the id's
            batched implementation), a single ``gymnasium.Env`` (copied ``n_envs`` times), or a
            ``VectorEnv`` (returned as is after checking its autoreset mode; ``vec`` is then
            ignored).
        n_envs: number of envs.
        vec: ``auto``, ``batched``, ``sync`` or ``async`` (see the module docstring).
        env_kwargs: arguments of the env (the task's configuration).
        device: the training device: a batched env of our tasks runs on it when it is an
            accelerator (observations are then tensors there); on the CPU it uses numpy.
        wrappers: put around each single env (id or ``gymnasium.Env``), as recorded by
            :class:`~agents.env_ids.EnvRecipe`; None: the wrappers the library applies
            (:func:`~agents.env_ids.library_wrappers`, e.g. for minigrid's text missions).
    """
    check_int("n_envs", n_envs, ge=1)
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise ValueError(f"env_kwargs must be a dict, got {env_kwargs!r}")
    kind = vec_kind(env, vec)
    if wrappers and kind == "batched":  # a batched env has no single envs to wrap
        if vec == "batched":
            raise ValueError(
                f"vec='batched' cannot apply the wrappers {[w['name'] for w in wrappers]}; use "
                "vec='sync' or 'async'"
            )
        kind = "sync"
    if isinstance(env, str):
        check_env_kwargs(resolve_env(env), dict(env_kwargs or {}))
    if kind == "batched":
        return _make_batched(resolve_env(env), n_envs, dict(env_kwargs or {}), device)
    if isinstance(env, VectorEnv):
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if mode != AutoresetMode.SAME_STEP:
            raise ValueError(
                f"the vector env's autoreset mode is {mode}; the agents need "
                "AutoresetMode.SAME_STEP (create it with "
                "SyncVectorEnv(fns, autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP))"
            )
        if not isinstance(env.single_action_space, gym.spaces.Discrete):
            raise ValueError(
                f"the env's action space must be Discrete, got {env.single_action_space!r}"
            )
        return env
    if isinstance(env, str):
        env_id = resolve_env(env)
        kwargs = dict(env_kwargs or {})
        fns = [_maker(env_id, kwargs, wrappers) for _ in range(n_envs)]
    elif isinstance(env, gym.Env):
        fns = [_copier(env, i, wrappers) for i in range(n_envs)]
    else:
        raise ValueError(
            f"env must be an env id, a gymnasium.Env or a gymnasium VectorEnv, got {type(env)}"
        )
    cls = AsyncVectorEnv if kind == "async" else SyncVectorEnv
    return cls(fns, autoreset_mode=AutoresetMode.SAME_STEP)


def make_agent_env(
    env: str | gym.Env | VectorEnv | None,
    n_envs: int,
    vec: VecMode,
    env_kwargs: dict[str, Any],
    device: torch.device,
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
    wrappers: tuple[dict[str, Any], ...] | None = None,
) -> tuple[VectorEnv | None, gym.Space, gym.Space]:
    """An agent's vector env (:func:`make_vec_env`; None without ``env``) and its single-env
    spaces; spaces given with an env must be the env's, and without an env both are needed."""
    if env is None:
        if observation_space is None or action_space is None:
            raise ValueError("without an env, pass observation_space and action_space")
        return None, observation_space, action_space
    venv = make_vec_env(env, n_envs, vec=vec, env_kwargs=env_kwargs, device=device,
                        wrappers=wrappers)
    for kind, given in (("observation", observation_space), ("action", action_space)):
        have = getattr(venv, f"single_{kind}_space")
        if given is not None and given != have:
            raise ValueError(f"the env {env_id_of(venv)} has the {kind} space {have}, not the "
                             f"{given} given")
    return venv, venv.single_observation_space, venv.single_action_space


def _make_batched(
    env_id: str, n_envs: int, kwargs: dict[str, Any], device: str | torch.device | None
) -> VectorEnv:
    import envs

    if env_id in envs.registered_ids():
        dev = torch.device(device) if device is not None else torch.device("cpu")
        kwargs.setdefault("device", dev if dev.type != "cpu" else "numpy")
    try:
        venv = gym.make_vec(
            env_id, num_envs=n_envs, vectorization_mode="vector_entry_point",
            autoreset_mode=AutoresetMode.SAME_STEP, **kwargs,
        )
    except TypeError as err:
        raise ValueError(
            f"vec='batched': the vector env of {env_id!r} does not accept "
            f"autoreset_mode=SAME_STEP or these arguments ({err}); use vec='sync'"
        ) from None
    mode = venv.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode != AutoresetMode.SAME_STEP:
        raise ValueError(
            f"vec='batched': the vector env of {env_id!r} runs in autoreset mode {mode}, not "
            "SAME_STEP; use vec='sync'"
        )
    return venv


def _metric_names(obj: Any) -> tuple[str, ...]:
    """``obj.metrics`` when it is a tuple (or list) of names, else ``()``."""
    names = getattr(obj, "metrics", None)
    if isinstance(names, (tuple, list)) and all(isinstance(n, str) for n in names):
        return tuple(names)
    return ()


def task_metrics(venv: VectorEnv) -> tuple[str, ...]:
    """The task's own measures that the envs of ``venv`` report in an episode's last ``info``:
    the ``metrics`` a task declares (:attr:`envs.task.TaskEnv.metrics`, e.g.
    ``("rooms_reached",)`` on the Portal), read from a batched env's task or from the first
    single env of a ``SyncVectorEnv`` / ``AsyncVectorEnv``; ``()`` for envs that declare none
    (gymnasium's and minigrid's)."""
    base = venv.unwrapped
    task = getattr(base, "task", None)
    if task is not None:
        return _metric_names(task)
    if isinstance(base, SyncVectorEnv):
        return _metric_names(base.envs[0].unwrapped)
    fns = getattr(base, "env_fns", None)  # AsyncVectorEnv: a throwaway copy of one env
    if fns:
        env = fns[0]()
        try:
            return _metric_names(env.unwrapped)
        finally:
            env.close()
    return ()


def _maker(
    env_id: str, kwargs: dict[str, Any], wrappers: tuple[dict[str, Any], ...] | None
) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        # resolved again inside subprocess workers: registers our tasks and minigrid's there too
        return make_env(env_id, kwargs, wrappers)

    return make


def _copier(
    env: gym.Env, i: int, wrappers: tuple[dict[str, Any], ...] | None
) -> Callable[[], gym.Env]:
    def copy_env() -> gym.Env:
        return apply_wrappers(env if i == 0 else copy.deepcopy(env), wrappers)

    return copy_env


@dataclass
class StepResult:
    """One vector step as tensors on the device, plus what ended."""

    obs: Any  # next observations (B, ...), the next episode's first where an episode ended
    rewards: Tensor  # (B,) float32
    terminated: Tensor  # (B,) bool
    truncated: Tensor  # (B,) bool
    final_obs: Any | None  # final observations of the truncated envs (N, ...), or None
    truncated_idx: Tensor | None  # (N,) indices of those envs
    # ended episodes' stats: return, length, env (its index), success where the env reports it,
    # and "metrics", {name: value} of the task's own measures (task_metrics) where it has some
    episodes: list[dict[str, Any]] = field(default_factory=list)


class EnvStepper:
    """Steps a ``SAME_STEP`` vector env with tensor actions; tracks episode returns and lengths.

    ``episode_starts`` (B,) is true where the current observation is an episode's first.

    With a numpy env the actions go to the host and the batches come back as tensors on the
    device. With a torch batched env (``venv.device`` a torch device) the actions stay tensors,
    the observations, rewards and flags are used where they are (moved only if the env lives on
    another device than the training), and ``final_obs`` is indexed on the device; the only host
    read per step is one small packed copy of the rewards, flags, success flags and task
    measures, for the episode statistics and the indices of the truncated envs.

    Each ended episode's stats carry, besides its return, length and success, the values of the
    task's own measures (:func:`task_metrics`) that its last ``info`` reported, under
    ``"metrics"`` (absent for envs without such measures).
    """

    def __init__(self, venv: VectorEnv, device: torch.device) -> None:
        self.venv = venv
        self.device = device
        self.n_envs = venv.num_envs
        self.tensor_env = isinstance(getattr(venv.unwrapped, "device", None), torch.device)
        self.obs: Any = None
        self.episode_starts = torch.ones(self.n_envs, dtype=torch.bool, device=device)
        self.ep_returns = np.zeros(self.n_envs)
        self.ep_lengths = np.zeros(self.n_envs, dtype=np.int64)
        self.metrics = task_metrics(venv)

    def reset(self, seed: int | None = None) -> Any:
        """Reset every env (env ``i`` seeded ``seed + i``); returns the observations."""
        obs, _ = self.venv.reset(seed=seed)
        self.obs = _to_device(obs, self.device)
        self.episode_starts = torch.ones(self.n_envs, dtype=torch.bool, device=self.device)
        self.ep_returns[:] = 0
        self.ep_lengths[:] = 0
        return self.obs

    def step(self, actions: Tensor) -> StepResult:
        """Step with ``actions`` (B,) (a tensor anywhere)."""
        if self.tensor_env:
            return self._step_tensors(actions)
        obs, rewards, terminated, truncated, info = self.venv.step(actions.cpu().numpy())
        done = np.logical_or(terminated, truncated)
        final_info = info.get("final_info", {})
        success = success_mask = None
        if "success" in final_info:
            success = np.asarray(final_info["success"])
            success_mask = np.asarray(final_info.get("_success", done))
        measures = {name: (np.asarray(final_info[name], dtype=np.float64),
                           np.asarray(final_info.get(f"_{name}", done), dtype=bool))
                    for name in self.metrics if name in final_info}
        episodes = self._episodes(rewards, done, success, success_mask, measures)
        final_obs = truncated_idx = None
        if truncated.any():
            idx = np.flatnonzero(truncated)
            finals = [info["final_obs"][i] for i in idx]
            final_obs = _to_device(_stack(finals), self.device)
            truncated_idx = torch.as_tensor(idx, device=self.device)
        self.obs = _to_device(obs, self.device)
        result = StepResult(
            self.obs,
            torch.as_tensor(rewards, dtype=torch.float32, device=self.device),
            torch.as_tensor(terminated, device=self.device),
            torch.as_tensor(truncated, device=self.device),
            final_obs,
            truncated_idx,
            episodes,
        )
        self.episode_starts = torch.as_tensor(done, device=self.device)
        return result

    def _step_tensors(self, actions: Tensor) -> StepResult:
        obs, rewards, terminated, truncated, info = self.venv.step(actions)
        final_info = info.get("final_info", {})
        done = terminated | truncated
        success = final_info.get("success", done & False)
        success_mask = final_info.get("_success", done & False)
        names = [name for name in self.metrics if name in final_info]
        measured = [t for name in names
                    for t in (final_info[name], final_info.get(f"_{name}", done))]
        # one host read: rewards, flags, success flags and task measures, packed (never the
        # observations)
        packed = torch.stack(
            [rewards.double(), terminated.double(), truncated.double(), success.double(),
             success_mask.double(), *(t.to(rewards.device).double() for t in measured)]
        ).cpu().numpy()
        rewards_h, trunc_h = packed[0], packed[2].astype(bool)
        done_h = np.logical_or(packed[1].astype(bool), trunc_h)
        measures = {name: (packed[5 + 2 * j], packed[6 + 2 * j].astype(bool))
                    for j, name in enumerate(names)}
        episodes = self._episodes(
            rewards_h, done_h, packed[3].astype(bool), packed[4].astype(bool), measures
        )
        final_obs = truncated_idx = None
        if trunc_h.any():
            idx = torch.as_tensor(np.flatnonzero(trunc_h), device=self.device)
            finals = info["final_obs"]
            if isinstance(finals, np.ndarray) and finals.dtype == object:  # SyncVectorEnv's
                final_obs = _to_device(_stack([finals[i] for i in idx.tolist()]), self.device)
            else:  # one array of every env's final observation
                final_obs = _index(_to_device(finals, self.device), idx)
            truncated_idx = idx
        self.obs = _to_device(obs, self.device)
        done_t = done.to(self.device)
        result = StepResult(
            self.obs,
            rewards.to(self.device, torch.float32),
            terminated.to(self.device),
            truncated.to(self.device),
            final_obs,
            truncated_idx,
            episodes,
        )
        self.episode_starts = done_t
        return result

    def _episodes(
        self,
        rewards: np.ndarray,
        done: np.ndarray,
        success: np.ndarray | None,
        success_mask: np.ndarray | None,
        measures: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> list[dict[str, Any]]:
        """Adds a step to the running returns and lengths; the stats of the episodes it ended
        (``measures``: name -> (values, mask) of the task's measures in the ending infos)."""
        self.ep_returns += rewards
        self.ep_lengths += 1
        episodes = []
        for i in np.flatnonzero(done):
            ep: dict[str, Any] = {"return": float(self.ep_returns[i]),
                                  "length": float(self.ep_lengths[i]), "env": int(i)}
            if success is not None and success_mask is not None and success_mask[i]:
                ep["success"] = float(success[i])
            values = {name: float(v[i]) for name, (v, mask) in (measures or {}).items()
                      if mask[i]}
            if values:
                ep["metrics"] = values
            episodes.append(ep)
            self.ep_returns[i] = 0.0
            self.ep_lengths[i] = 0
        return episodes

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to continue exactly: observations, starts, episode stats, and
        the envs themselves when they live in this process (a batched env's state arrays, or the
        pickled single envs of a ``SyncVectorEnv``)."""
        import pickle

        envs_blob = batched = None
        base = self.venv.unwrapped
        if hasattr(base, "get_state") and hasattr(base, "set_state"):
            batched = base.get_state()
        elif isinstance(self.venv, SyncVectorEnv):
            try:
                envs_blob = pickle.dumps(self.venv.envs)
            except Exception:  # an env that cannot be pickled resumes from a fresh reset
                envs_blob = None
        return {
            "obs": _cpu(self.obs),
            "episode_starts": self.episode_starts.cpu(),
            "ep_returns": self.ep_returns.copy(),
            "ep_lengths": self.ep_lengths.copy(),
            "envs": envs_blob,
            "batched": batched,
        }

    def load_state_dict(self, sd: dict[str, Any]) -> bool:
        """Restore :meth:`state_dict`; returns whether the envs themselves were restored (else the
        caller must reset them)."""
        import pickle

        restored = False
        base = self.venv.unwrapped
        if sd.get("batched") is not None and hasattr(base, "set_state"):
            try:
                base.set_state(sd["batched"])
                restored = True
            except ValueError:  # another kind or size of env: resume from a fresh reset
                restored = False
        elif sd.get("envs") is not None and isinstance(self.venv, SyncVectorEnv):
            envs = pickle.loads(sd["envs"])
            if len(envs) == self.n_envs:
                for e in self.venv.envs:
                    e.close()
                self.venv.envs = envs
                restored = True
        if restored:
            self.obs = _to_device(sd["obs"], self.device)
            self.episode_starts = sd["episode_starts"].to(self.device)
            self.ep_returns[:] = sd["ep_returns"]
            self.ep_lengths[:] = sd["ep_lengths"]
        return restored


def _stack(items: list[Any]) -> Any:
    """Per-env observations (arrays or dicts of them) stacked into one batch."""
    return tree_map(lambda *xs: np.stack(xs), *items)


def _cpu(obs: Any) -> Any:
    return tree_map(lambda x: x.cpu().numpy(), obs)


def _to_device(obs: Any, device: torch.device) -> Any:
    """An observation batch (numpy arrays or tensors, or a dict of them) as tensors on
    ``device``; tensors already there are used as they are."""
    return tree_map(
        lambda x: x.to(device) if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x),
                                                                              device=device),
        obs,
    )


def _index(obs: Any, idx: Tensor) -> Any:
    return tree_map(lambda x: x[idx], obs)
