"""The batched vector env of any task: the task's own rules run on arrays of ``N`` envs at once.

``TaskVectorEnv`` is a ``gymnasium.vector.VectorEnv`` whose every step is one call of the task's
:meth:`~envs.task.TaskEnv.transition` on a :class:`~envs.arrays.Batch` of all envs (numpy arrays,
or torch tensors on any device). It gives a ``SyncVectorEnv`` of the single env's observations,
rewards, flags and infos bit for bit for the same seeds and actions, in both autoreset modes:
the rules and the keyed draws are the same code. A task gets it by naming itself::

    class CorridorVectorEnv(TaskVectorEnv):
        task_class = CorridorEnv

and ``gymnasium.make_vec(id, num_envs=1024, vectorization_mode="vector_entry_point")`` builds it.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.arrays import Batch, One, _mix_u32, backend
from envs.task import TaskEnv, seed_key

__all__ = ["TaskVectorEnv"]

_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)


class TaskVectorEnv(VectorEnv):
    """``num_envs`` envs of ``task_class``, stepped as arrays.

    NEXT_STEP (the default, as gymnasium's): the step after an env's episode ends resets it (its
    action ignored, reward 0, flags False, the reset's info). SAME_STEP: the step that ends an
    episode returns the next episode's first observation and the reset's info, with the ending
    step's observation and info in ``info["final_obs"]`` and ``info["final_info"]`` (masks
    ``_final_obs``, ``_final_info``). ``final_obs`` is a numpy object array as ``SyncVectorEnv``'s
    on numpy, one ``(N, 3, 3, V)`` tensor (zero where no episode ended) on torch. Infos are
    gymnasium's vector format (``info[key]`` plus a mask ``info["_key"]``); on host backends a
    key appears only when some env reports it, on accelerators always (checking would sync).

    Args:
        num_envs: number of envs, at least 1.
        *args, **kwargs: the task's own arguments, validated by the task (the same errors).
        device: ``None``/``"numpy"`` (numpy arrays, the default) or a torch device: the
            observations, rewards, flags and infos are then tensors there.
        render_mode: ``None`` or ``"rgb_array"`` (``render()`` draws env 0).
        autoreset_mode: ``AutoresetMode.NEXT_STEP`` or ``SAME_STEP`` (or their values).
    """

    task_class: ClassVar[type[TaskEnv]]
    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["rgb_array"], "render_fps": 10, "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(self, num_envs: int = 1, *args: Any, device: Any = None,
                 render_mode: str | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                 **kwargs: Any) -> None:
        if autoreset_mode not in (*_MODES, *(m.value for m in _MODES)):
            raise ValueError(f"autoreset_mode must be one of {[m.value for m in _MODES]} "
                             f"(AutoresetMode), got {autoreset_mode!r}")
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) \
                or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        bound = inspect.signature(self.task_class).bind(*args, **kwargs)
        self.task_kwargs = dict(bound.arguments)
        self.task = self.task_class(*args, render_mode=render_mode, **kwargs)
        self.num_envs, self.render_mode = int(num_envs), render_mode
        self.xp = backend(device)
        self.device = self.xp.device
        if self.device is None:  # numpy: the draws look mix(t) up for every t an episode reaches
            self.xp.step_mix = _mix_u32(np.arange(self.task.max_steps + 2, dtype=np.uint32))
        self.vocab = self.task.vocab
        self.single_observation_space = self.task.observation_space
        self.single_action_space = self.task.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self.s = Batch(self.xp, self.task.tables(self.xp), self.num_envs)
        self._autoreset = self.xp.full((self.num_envs,), False, "bool")
        self._started = False
        self.period = 8  # steps between two refills of the episodes begun ahead
        self._next: Batch | None = None
        self._ready = self.xp.full((self.num_envs,), False, "bool")
        self._since_refill = 0

    # episodes

    def _start(self, s: Batch, cond: Any, live: Batch | None = None) -> None:
        """Begins the next episode (of ``live``'s, default ``s``'s) in ``s`` where ``cond``."""
        sub = s.select(cond)
        if sub is not None:
            if live is not None:
                src = live.select(cond)
                sub.seed, sub.episode = src.seed, src.episode
            sub.episode = sub.episode + 1
            sub.key, sub.t = self.xp.hash(sub.seed, sub.episode), 0
            self.task.start(sub)
            s.update(sub)

    def _restart(self, cond: Any) -> None:
        """Begins the next episode of the envs where ``cond`` holds.

        On host backends each env's next episode is begun ahead, for all the envs that need
        one at once, every ``period`` steps (:meth:`_refill`); a restart then copies it in (an
        env whose next episode is not ready yet is begun here). Accelerators begin episodes in
        place (masked, so no step waits for the host)."""
        xp, s = self.xp, self.s
        if xp.masked or self._next is None:
            self._start(s, cond)
            return
        rows = xp.nonzero(cond)
        if rows.shape[0] == 0:
            return
        ready = self._ready[rows]
        if xp.any(xp.not_(ready)):
            self._start(s, cond & xp.not_(self._ready))
            rows = rows[ready]
        for name, value in self._next.fields().items():
            if name != "seed":  # (the same)
                xp.copy_rows(getattr(s, name), rows, value)
        self._ready[rows] = False

    def _refill(self) -> None:
        self._since_refill = 0
        if not self.xp.masked:
            if self._next is None:
                self._next = Batch(self.xp, self.s.T, self.num_envs)
            self._start(self._next, self.xp.not_(self._ready), live=self.s)
            self._ready[...] = True

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Resets every env, or those of ``options["reset_mask"]`` (a bool array).

        ``seed``: an int (env ``i`` gets ``seed + i``), a list of ``num_envs`` seeds, or ``None``
        (each env continues with its next episode; a fresh env is seeded from entropy).
        """
        n, xp, s = self.num_envs, self.xp, self.s
        mask = np.ones(n, bool)
        if options and "reset_mask" in options:
            mask = np.asarray(xp.to_numpy(options["reset_mask"]))
            if mask.shape != (n,) or mask.dtype != bool or not mask.any():
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({n},) "
                                 f"with a True entry, got {options['reset_mask']!r}")
        if seed is None or isinstance(seed, (list, tuple)):
            seeds = [None] * n if seed is None else list(seed)
        else:
            seeds = [seed + i for i in range(n)] if isinstance(seed, (int, np.integer)) else []
        if len(seeds) != n or isinstance(seed, bool):
            raise ValueError(f"seed must be an int or a list of {n} seeds, got {seed!r}")
        keys = xp.to_numpy(s.seed).copy() if self._started else np.zeros(n, np.int64)
        episodes = xp.to_numpy(s.episode).copy() if self._started else np.zeros(n, np.int64)
        entropy = np.random.default_rng()
        for i in np.flatnonzero(mask).tolist():
            if seeds[i] is not None or not self._started:
                keys[i] = seed_key(seeds[i]) if seeds[i] is not None else entropy.integers(1 << 32)
                episodes[i] = -1  # the restart below begins episode 0
        s.seed, s.episode = xp.asarray(keys, "int64"), xp.asarray(episodes, "int64")
        cond = xp.asarray(mask, "bool")
        self._start(s, cond)
        self._ready[...] = False  # (the episodes begun ahead follow other seeds)
        self._refill()
        self._autoreset = self._autoreset & xp.not_(cond)
        self._started = True
        return self.task.observe(s), self._info(reset_rows=cond, every=False)

    # steps

    def _check_actions(self, actions: Any) -> Any:
        xp, n = self.xp, int(self.single_action_space.n)
        if not hasattr(actions, "dtype"):
            actions = np.asarray(actions)
        dtype = actions.dtype
        if dtype.kind not in "iu" if isinstance(dtype, np.dtype) else \
                dtype.is_floating_point or dtype.is_complex or dtype == xp.torch.bool:
            raise ValueError(f"actions must be integers in [0, {n - 1}], got dtype {dtype}")
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got "
                             f"{tuple(actions.shape)}")
        acts = xp.asarray(actions, "int64")
        if not xp.masked:  # (on accelerators the check would wait for the device)
            # (numpy: one reduction, a negative action is a huge unsigned one)
            bad = np.maximum.reduce(acts.view(np.uint64)) >= n if xp.device is None else \
                bool(acts.min() < 0) or bool(acts.max() >= n)
            if bad:
                raise ValueError(f"actions must be in [0, {n - 1}], got {xp.to_numpy(acts)}")
        return acts

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        """Steps every env; in NEXT_STEP mode the envs whose episode ended at the previous step
        are reset instead (their actions ignored)."""
        if not self._started:
            raise RuntimeError("call reset() before step()")
        xp, s = self.xp, self.s
        s.action = self._check_actions(actions)
        if self._since_refill >= self.period:
            self._refill()
        self._since_refill += 1
        s.t = s.t + 1
        self.task.transition(s)
        reward, terminated = s.reward, s.terminated
        truncated = (s.t >= self.task.time_limit(s)) > terminated  # (and not terminated)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            restart = self._autoreset
            if xp.masked or xp.any(restart):
                keep = xp.not_(restart)
                reward, terminated, truncated = reward * keep, terminated & keep, truncated & keep
                self._restart(restart)
            else:
                restart = None
            done = self._autoreset = terminated | truncated
            info = self._info(restart, done if xp.masked or xp.any(done) else None)
        else:
            done = terminated | truncated
            info = {}
            if xp.masked or xp.any(done):
                info = self._final(done)
                self._restart(done)
            else:
                done = None
            info.update(self._info(done))
        return self.task.observe(s), reward, terminated, truncated, info

    # infos

    def _info(self, reset_rows: Any = None, end_rows: Any = None, every: bool = True,
              end_keys: tuple[str, ...] = ()) -> dict[str, Any]:
        """Vector info: the step keys at every env, the reset keys at ``reset_rows``, the
        episode-end keys (metrics, success) at ``end_rows`` (``None``: no env); values zero
        where not reported. Keys with the same mask share one copy of it."""
        task, xp, s = self.task, self.xp, self.s
        masks: dict[str, Any] = dict.fromkeys(task.step_info if every else ())  # None: every env
        for rows, keys in ((reset_rows, task.reset_info if every else task.reset_keys),
                           (end_rows, end_keys or (*task.metrics, "success"))):
            for key in keys if rows is not None else ():
                if key not in masks:
                    masks[key] = rows
                elif masks[key] is not None:
                    masks[key] = masks[key] | rows
        info: dict[str, Any] = {}
        every_env = any(m is None for m in masks.values())
        copies = {id(None): xp.full((self.num_envs,), True, "bool")} if every_env else {}
        for key, mask in masks.items():
            values = getattr(s, key)
            if id(mask) not in copies:
                copies[id(mask)] = xp.copy(mask)
            info[f"_{key}"] = copies[id(mask)]
            info[key] = xp.copy(values) if mask is None else values & mask \
                if values.dtype == mask.dtype else values * mask
        if "success" in info:
            info["is_success"], info["_is_success"] = xp.copy(info["success"]), info["_success"]
        return info

    def _final(self, done: Any) -> dict[str, Any]:
        """SAME_STEP: the ending steps' observations and infos, before their envs restart."""
        xp, s = self.xp, self.s
        keys = (*self.task.step_info, *self.task.metrics, "success")
        final_info = self._info(end_rows=done, every=False, end_keys=keys)
        if xp.masked:
            obs = self.task.observe(s)
            final_obs = obs * done.reshape(-1, 1, 1, 1).to(obs.dtype)
        else:
            rows = xp.nonzero(done)
            obs = self.task.observe(s.select(done))
            if xp.device is None:
                final_obs = np.full(self.num_envs, None, dtype=object)
                for j, i in enumerate(rows.tolist()):
                    final_obs[i] = obs[j]
            else:
                final_obs = xp.torch.zeros((self.num_envs, *obs.shape[1:]), dtype=obs.dtype,
                                           device=xp.device)
                final_obs[rows] = obs
        return {"final_obs": final_obs, "_final_obs": xp.copy(done),
                "final_info": final_info, "_final_info": xp.copy(done)}

    # checkpoints and pictures

    def get_state(self) -> dict[str, Any]:
        """Every env's state as host (numpy) data, for a checkpoint: :meth:`set_state` (into an
        env built with the same arguments, on any backend) continues the episodes exactly."""
        return {
            "class": type(self).__name__, "format": 2, "num_envs": self.num_envs,
            "task_kwargs": dict(self.task_kwargs), "autoreset_mode": self.autoreset_mode.value,
            "started": self._started, "autoreset": self.xp.to_numpy(self._autoreset).copy(),
            "fields": {k: self.xp.to_numpy(v).copy() for k, v in self.s.fields().items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores :meth:`get_state`; a state of another env raises ``ValueError``."""
        want = (type(self).__name__, 2, self.num_envs, self.task_kwargs,
                self.autoreset_mode.value)
        got = tuple(state.get(k) for k in ("class", "format", "num_envs", "task_kwargs",
                                             "autoreset_mode"))
        if got != want:
            raise ValueError(f"state is of a different env (class, format, num_envs, task "
                             f"arguments, autoreset mode): got {got}, this env is {want}")
        xp = self.xp
        self.s = Batch(xp, self.s.T, self.num_envs)
        for name, value in state["fields"].items():  # (in this backend's layout)
            setattr(self.s, name, xp.full(value.shape, 0, str(value.dtype)))
            getattr(self.s, name)[...] = xp.asarray(value, str(value.dtype))
        self._autoreset = xp.asarray(state["autoreset"], "bool")
        self._started = bool(state["started"])
        self._ready[...] = False
        self._since_refill = self.period

    def _one(self, i: int) -> One:
        """Env ``i``'s state as a single env's state."""
        one = One(self.task._xp, self.task._tables)
        for name, value in self.s.fields().items():
            host = self.xp.to_numpy(value[..., i])
            setattr(one, name, host.item() if host.ndim == 0 else host.copy())
        return one

    def render(self) -> np.ndarray | None:
        """The picture of env 0 (``render_mode="rgb_array"``), else ``None``."""
        if self.render_mode is None or not self._started:
            return None
        return self.task.frame(self._one(0))

    def close_extras(self, **kwargs: Any) -> None:
        self.task.close()

