"""Checkpoints: what a trainer's checkpoint holds (:func:`checkpoint_payload`), its collection
from every rank (:func:`write_checkpoint`), the file (written atomically: temp file +
``os.replace``; read with clear errors) and the restore with the world-size rules
(:func:`restore_run`), with the RNG states a resumed run needs to continue exactly.

World-size rules: a checkpoint written by ``N`` ranks holds every rank's env state, memory state
and RNG states (gathered into rank 0's file). Loaded by ``N`` ranks, each gets its own back and the
run continues exactly; loaded by another number of ranks (one process included), the model,
optimizer and counters are restored and the envs start from a fresh reset (with a warning).
"""

from __future__ import annotations

import dataclasses
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from torch.utils._pytree import tree_map

from .config import replace_config
from .distributed import process_device, setup
from .vec import env_id_of, make_vec_env, resolve_env

if TYPE_CHECKING:
    from .trainer import ActorCriticTrainer

__all__ = [
    "CheckpointError",
    "FORMAT",
    "VERSION",
    "checkpoint_payload",
    "get_rng_states",
    "load_agent",
    "load_checkpoint",
    "restore_run",
    "save_checkpoint",
    "set_rng_states",
    "write_checkpoint",
]

FORMAT = "memorl-checkpoint"
VERSION = 1
REQUIRED = ("format", "version", "algo", "config", "policy", "model", "optimizer", "counters")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: the message names the file and what is wrong."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a reader never sees a half-written file, and a
    write that fails (a full disk) leaves the previous checkpoint as it was and raises a one-line
    :class:`CheckpointError`."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch reports a failed write as a RuntimeError
        _remove(tmp)
        kept = "; the previous checkpoint is kept" if path.is_file() else ""
        reason = _reason(err)
        raise CheckpointError(f"cannot write checkpoint {str(path)!r}: {reason}{kept}") from None
    except BaseException:  # an interrupt: no temp file left behind either
        _remove(tmp)
        raise
    return path


def _remove(tmp: str | None) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


def _reason(err: BaseException) -> str:
    """One line for a failed write: the OS's words (``No space left on device``), or the first
    line of torch's message (whose ``enforce fail at inline_container.cc`` means the same)."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if "inline_container" in first or "write" in first.lower():
        return f"the file could not be written (disk full?): {first}"
    return first


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; :class:`CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        # the file holds pickled gymnasium spaces and env state, so full unpickling is needed:
        # load only checkpoints you wrote yourself
        data = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or not a checkpoint ({type(err).__name__}: {err})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a MemoRL checkpoint (no {FORMAT!r} marker)")
    if data.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {data.get('version')!r}; "
            f"this library reads version {VERSION}"
        )
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks the entries {missing}")
    return data


def get_rng_states() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy and python RNG states."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore :func:`get_rng_states`."""
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


# a trainer's checkpoint


def _rank_state(agent: ActorCriticTrainer) -> dict[str, Any]:
    """This rank's share of a checkpoint: env state, memory state, RNG states."""
    live = agent.stepper is not None and agent.stepper.obs is not None
    return {
        "stepper": agent.stepper.state_dict() if live else None,
        "memory_state": tree_map(lambda v: v.detach().cpu(), agent.memory_state or {}),
        "rng": get_rng_states(),
    }


def checkpoint_payload(agent: ActorCriticTrainer) -> dict[str, Any]:
    """Everything a resumed run needs to continue exactly (this process's view)."""
    mine = _rank_state(agent)
    live = mine["stepper"] is not None
    return {
        "algo": agent.algo_name,
        "config": dataclasses.asdict(agent.config),
        "policy": {
            "name": agent.policy_name,
            "module": None if agent._policy_by_name else agent.policy,
        },
        "spaces": {"observation": agent.observation_space, "action": agent.action_space},
        "model": agent.policy.state_dict(),
        "optimizer": agent.optimizer.state_dict(),
        "counters": {
            "num_timesteps": agent.num_timesteps,
            "n_updates": agent.n_updates,
            "nonfinite_in_a_row": agent.nonfinite_in_a_row,
            "total_timesteps": agent.total_timesteps,
        },
        "rng": mine["rng"],
        "run": {
            "log_dir": str(agent.log_dir) if agent.log_dir else None,
            "checkpoint_path": str(agent.checkpoint_path) if agent.checkpoint_path else None,
        },
        "env": {
            "id": str(agent.env_id),
            "kwargs": agent.env_kwargs,
            "wrappers": list(agent.env_wrappers),
            "rebuild_error": agent.env_rebuild_error,
            "stepper": mine["stepper"],
            "memory_state": mine["memory_state"] if live else None,
        },
    }


def write_checkpoint(agent: ActorCriticTrainer, path: Path) -> None:
    """``learn``'s checkpoint. Under several ranks a collective: every rank's env state, memory
    state and RNG states are gathered into rank 0's file (under ``distributed``), which rank 0
    writes while the others wait, so no rank runs ahead of a checkpoint on disk; a failed write
    raises the same :class:`CheckpointError` on every rank."""
    if not agent.dist.enabled:
        save_checkpoint(path, checkpoint_payload(agent))
        return
    payload = checkpoint_payload(agent) if agent.dist.is_main else None
    ranks = agent.dist.gather_object(_rank_state(agent))
    error = None
    if payload is not None:
        payload["distributed"] = {"world_size": agent.dist.world_size, "ranks": ranks}
        try:
            save_checkpoint(path, payload)
        except CheckpointError as err:
            error = str(err)
    error = agent.dist.broadcast_object(error)  # also the barrier: rank 0 has written
    if error is not None:
        raise CheckpointError(error)


def restore_run(
    agent: ActorCriticTrainer, data: dict[str, Any], *, where: str, envs_rebuilt: bool
) -> None:
    """Restore the counters of checkpoint ``data`` into ``agent`` and, by the world-size rules
    (module docstring), this rank's env state (when its envs were rebuilt from the checkpoint),
    memory state and RNG states."""
    counters = data["counters"]
    agent.num_timesteps = int(counters["num_timesteps"])
    agent.n_updates = int(counters["n_updates"])
    agent.nonfinite_in_a_row = int(counters.get("nonfinite_in_a_row", 0))
    agent.total_timesteps = counters.get("total_timesteps")
    saved = data.get("distributed") or {"world_size": 1, "ranks": None}
    world = agent.dist.world_size
    if saved["world_size"] != world:
        if envs_rebuilt and agent.dist.is_main:
            warnings.warn(
                f"{where} was written by {saved['world_size']} rank(s), this run has {world}: "
                "model, optimizer and counters restored; the envs, memory states and RNG states "
                "are not (the envs start from a fresh reset)",
                stacklevel=3,
            )
        return
    env = data.get("env", {})
    mine = saved["ranks"][agent.dist.rank] if saved["ranks"] else {
        "stepper": env.get("stepper"), "memory_state": env.get("memory_state"),
        "rng": data.get("rng"),
    }
    stepper = agent.stepper
    if envs_rebuilt and stepper is not None and mine["stepper"] is not None:
        if stepper.load_state_dict(mine["stepper"]):
            agent.memory_state = tree_map(lambda v: v.to(agent.device), mine["memory_state"])
    if mine["rng"] is not None:
        set_rng_states(mine["rng"])


def load_agent(
    cls: type[ActorCriticTrainer],
    path: str | Path,
    *,
    env: Any = None,
    device: str = "auto",
    distributed: bool | None = None,
    overrides: dict[str, Any],
) -> ActorCriticTrainer:
    """``cls.load``: the agent of checkpoint ``path`` (see :meth:`ActorCriticTrainer.load`)."""
    data = load_checkpoint(path)
    where = f"checkpoint {str(path)!r}"
    if data["algo"] != cls.algo_name:
        raise CheckpointError(
            f"{where} was written by {data['algo']}, not {cls.algo_name}; use {data['algo']}.load"
        )
    try:
        cfg = cls.config_class(**data["config"])
    except TypeError as err:
        raise CheckpointError(f"{where} has an incompatible config: {err}") from None
    cfg = replace_config(cfg, device=device, **overrides).validate()
    run, env_data, spaces = data.get("run", {}), data.get("env", {}), data.get("spaces", {})
    env, env_kwargs, wrappers, rebuilt = _checkpoint_env(where, env, env_data, cfg, distributed)
    if env is not None:
        _check_spaces(where, spaces, env)
    module = data["policy"].get("module")
    try:
        agent = cls(
            module if module is not None else data["policy"]["name"], env, cfg,
            env_kwargs=env_kwargs, env_wrappers=wrappers, tensorboard_log=None,
            distributed=distributed, observation_space=spaces.get("observation"),
            action_space=spaces.get("action"),
        )
    except ValueError as err:
        raise CheckpointError(f"{where} cannot be rebuilt: {err}") from None
    try:
        agent.policy.load_state_dict(data["model"])
        agent.optimizer.load_state_dict(data["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{where} does not match the policy it names: {err}") from None
    agent.log_dir, agent.checkpoint_path = _resume_paths(Path(path), run)
    if rebuilt or env is None:  # the run's own env (else the env given, as the constructor set)
        agent.env_id = env_data.get("id", agent.env_id)
        agent.env_kwargs, agent.env_wrappers = env_kwargs, wrappers
    restore_run(agent, data, where=where, envs_rebuilt=rebuilt)
    return agent


def _resume_paths(path: Path, run: dict[str, Any]) -> tuple[Path | None, Path | None]:
    """Where a loaded run goes on: checkpoints to the file it was loaded from, logs to the run's
    own directory if that file is still where the run wrote it, else next to the file (a copied
    or moved checkpoint continues where it is). A checkpoint of a run without logs (or without
    checkpoints) continues without."""
    recorded = run.get("checkpoint_path")
    same = recorded is not None and Path(recorded).resolve() == path.resolve()
    log_dir = None
    if run.get("log_dir"):
        log_dir = Path(run["log_dir"]) if same else path.parent
    return log_dir, (path if recorded is not None else None)


def _checkpoint_env(
    where: str, env: Any, env_data: dict[str, Any], cfg: Any, distributed: bool | None
) -> tuple[Any, dict[str, Any], tuple[dict[str, Any], ...] | None, bool]:
    """The env a loaded agent gets, its kwargs and wrappers, and whether it is the run's own,
    rebuilt (whose state the checkpoint can restore): the run's own envs when ``env`` is None
    (rebuilt from the id, arguments and wrappers the checkpoint recorded; a run that had no env
    gets none), else ``env`` as a vector env (with the run's arguments and wrappers when it names
    the run's env id).

    Raises:
        CheckpointError: ``env`` is None and the run's env cannot be rebuilt here (a user's own
            env or wrapper, or an id not registered in this process); the message says to pass
            ``env=``.
    """
    run_id, kwargs = env_data.get("id"), dict(env_data.get("kwargs") or {})
    wrappers = tuple(env_data.get("wrappers") or ())
    device = process_device(cfg.device, setup(cfg.device, enabled=distributed))
    if env is None:
        if not run_id:
            return None, kwargs, wrappers, False
        error = env_data.get("rebuild_error")
        if error is None:
            try:
                venv = make_vec_env(run_id, cfg.n_envs, vec=cfg.vec, env_kwargs=kwargs,
                                    device=device, wrappers=wrappers)
            except (ValueError, ImportError, gym.error.Error) as err:
                error = f"the run's env {run_id!r} cannot be made here: {err}"
            else:
                return venv, kwargs, wrappers, True
        raise CheckpointError(
            f"{where}: {error}; pass an env with the run's spaces as env= "
            "(PPO.load(path, env=...))"
        )
    if not isinstance(env, str):
        return env, {}, None, False
    if not _same_env(env, run_id, env_data):
        # another task: the run's arguments and wrappers are not its own
        kwargs, wrappers = {}, None
    venv = make_vec_env(env, cfg.n_envs, vec=cfg.vec, env_kwargs=kwargs, device=device,
                        wrappers=wrappers)
    return venv, kwargs, wrappers, False


def _same_env(env: str, run_id: str | None, env_data: dict[str, Any]) -> bool:
    """Whether the id ``env`` names the run's own env (one the checkpoint could rebuild)."""
    if not run_id or env_data.get("rebuild_error"):
        return False
    try:
        return resolve_env(env) == resolve_env(run_id)
    except ValueError:  # the run's id is not known here
        return False


def _check_spaces(where: str, spaces: dict[str, Any], env: Any) -> None:
    """A checkpoint is used only with an env of the spaces its policy was trained on."""
    for kind, have in (("observation", getattr(env, "single_observation_space", None)),
                       ("action", getattr(env, "single_action_space", None))):
        want = spaces.get(kind)
        if want is not None and have is not None and want != have:
            raise CheckpointError(
                f"{where} was trained on the {kind} space {want}; the env "
                f"{env_id_of(env)} has {have}"
            )
