"""Training configuration: one dataclass for the shared actor-critic trainer, with PPO and A2C
presets of it.

Each field is declared once, in :class:`AgentConfig`, with its type (``Literal`` for a choice,
:data:`~agents.validation.Device` for a device), its allowed range and its help text
(:func:`option`). Everything else reads that declaration: :meth:`AgentConfig.validate` checks each
field by its type and range, the command line is generated from the types
(:mod:`agents.cli`), and ``--help`` prints the help texts (:func:`field_docs`). The PPO and A2C
presets only change defaults; the reasons for them are in ``docs/results/defaults.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

import torch

from .validation import Device, check_choice, check_int, check_number
from .vec import VecMode

__all__ = [
    "A2CConfig",
    "AgentConfig",
    "OPTIMIZERS",
    "OptimizerName",
    "PPOConfig",
    "field_docs",
    "field_meta",
    "field_types",
    "make_optimizer",
    "option",
    "replace_config",
]

OptimizerName = Literal["adam", "rmsprop"]
"""The optimizers the trainer builds (:data:`OPTIMIZERS`)."""

#: the optimizer of each :data:`OptimizerName`
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr, eps=1e-5, **kw: torch.optim.Adam(params, lr=lr, eps=eps, **kw),
    "rmsprop": lambda params, lr, eps=1e-5, **kw: torch.optim.RMSprop(
        params, lr=lr, alpha=0.99, eps=eps, **kw),
}


def make_optimizer(
    name: OptimizerName,
    params: Iterable[torch.nn.Parameter] | Iterable[dict],
    lr: float,
    eps: float = 1e-5,
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params`` (parameters, or parameter groups as dicts), with
    epsilon ``eps`` (a group's own ``eps`` wins).

    Adam runs its fused kernel (one pass over all parameters; on one CPU thread 3.6x faster than
    the per-parameter loop for the Expire-Span policy's 54 tensors,
    ``scripts/profile_training.py --part optimizer``) where this torch has it for the
    parameters' device, else the multi-tensor (``foreach``) form; RMSprop the multi-tensor form.
    The results equal the loop's to float rounding."""
    params = list(params)
    if name == "adam":
        try:
            return OPTIMIZERS[name](params, lr, eps=eps, fused=True)
        except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/torch
            pass
    return OPTIMIZERS[name](params, lr, eps=eps, foreach=True)


def option(
    default: Any,
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
) -> Any:
    """A config field: its default, its help text and the bounds of a number (``ge``/``le``
    inclusive, ``gt`` exclusive), kept in the field's metadata where the validator, the CLI and
    :func:`field_docs` read them."""
    meta = {"doc": " ".join(doc.split()), "bounds": {"ge": ge, "gt": gt, "le": le}}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class AgentConfig:
    """Hyperparameters of the actor-critic trainer (PPO and A2C are presets of it)."""

    n_envs: int = option(16, "Parallel environments (the batch dimension B of a rollout).", ge=1)
    rollout_len: int = option(
        64, "Steps collected per env between updates (the time dimension T of a rollout).", ge=1
    )
    bptt_len: int = option(
        64,
        """Length of a training sequence: the rollout is cut into sequences of this many steps,
        each starting from the memory state stored when it was collected (detached). Must divide
        rollout_len. The paper trains with 100.""",
        ge=1,
    )
    mrbp: bool = option(
        False,
        """Memory-replay back-propagation (Memformer algorithm 1): process each training sequence
        in chunks of mrbp_chunk_len, keeping only the chunk-boundary states, and back-propagate
        chunk by chunk in reverse; same gradients as full BPTT at the peak memory of one
        chunk.""",
    )
    mrbp_chunk_len: int = option(16, "Steps per MRBP chunk (only with mrbp). Must divide bptt_len.",
                                 ge=1)
    gamma: float = option(0.99, "Discount factor.", ge=0, le=1)
    gae_lambda: float = option(0.95, "GAE lambda (1.0: Monte-Carlo returns; 0.0: one-step TD).",
                               ge=0, le=1)
    n_epochs: int = option(8, "Passes over each rollout per update.", ge=1)
    n_minibatches: int = option(
        4,
        """Minibatches per epoch; a minibatch holds whole training sequences (env rows), so the
        number of sequences per rollout (n_envs * rollout_len / bptt_len) must be divisible by
        it.""",
        ge=1,
    )
    clip_coef: float | None = option(
        0.2, "PPO's probability-ratio clip range; None disables clipping (A2C's plain policy "
        "gradient).", gt=0,
    )
    clip_vloss: bool = option(
        False, "Clip the value update to clip_coef around the rollout's values (PPO's value "
        "clipping)."
    )
    norm_adv: bool = option(True, "Normalise advantages per minibatch (zero mean, unit std).")
    adv_std_floor: float = option(
        0.0,
        """With norm_adv, divide by max(std, adv_std_floor) instead of the std, so that a rollout
        without rewards (advantages that are only value noise) is not scaled up to unit size; in
        units of reward; 0 is plain normalisation. Measurements: docs/results/defaults.md.""",
        ge=0,
    )
    vf_coef: float = option(0.5, "Weight of the value loss.", ge=0)
    ent_coef: float = option(0.001, "Weight of the entropy bonus.", ge=0)
    ent_start_step: int = option(
        0,
        """Steps (counted from the run's start) before which the entropy bonus is off: an update
        whose rollout was collected from step num_timesteps < ent_start_step uses no bonus (0:
        always on). When a late bonus helps: docs/results/defaults.md.""",
        ge=0,
    )
    ent_end_step: int = option(
        0,
        """Step (counted from the run's start) by which the entropy bonus has decayed linearly
        from ent_coef to zero, from ent_start_step on (0: no decay).""",
        ge=0,
    )
    update_train_mode: bool = option(
        False,
        """Run the update's forward passes in train mode (dropout, Expire-Span's random memory
        shortening). Off by default: the rollout is collected in eval mode, and PPO's ratio, the
        KL and the value targets are only meaningful when the update evaluates the function that
        acted (docs/results/defaults.md).""",
    )
    aux_coef: float = option(
        1.0, "Weight of every memory auxiliary loss (aux['loss_*'] and "
        "Memory.auxiliary_losses).", ge=0,
    )
    aux_start_step: int = option(
        0,
        """Steps (counted from the run's start) before which the memory auxiliary losses are off,
        as ent_start_step for the entropy bonus (e.g. Expire-Span's span penalty; 0: always
        on).""",
        ge=0,
    )
    max_grad_norm: float = option(0.5, "Gradient norm clip (0 disables clipping).", ge=0)
    lr: float = option(5e-4, "Learning rate.", gt=0)
    optimizer: OptimizerName = option(
        "adam", "Optimizer: adam (Adam) or rmsprop (RMSprop, alpha 0.99)."
    )
    optimizer_eps: float = option(
        1e-5,
        """The optimizer's epsilon. Adam and RMSprop divide each gradient by its running RMS
        plus eps: a gradient well above eps moves its parameter at the full learning rate
        whatever its size; one well below eps (a policy that has stopped learning) moves it
        less, in proportion.""",
        gt=0,
    )
    anneal_lr: bool = option(False, "Decay the learning rate linearly to zero over "
                             "total_timesteps.")
    target_kl: float | None = option(
        None, "Stop an update's epochs early when the approximate KL exceeds this (None: "
        "never).", gt=0,
    )
    seed: int = option(0, "Seed of torch, numpy, python and the envs.", ge=0)
    device: Device = option("auto", "Device: auto (cuda when available), cpu, cuda or cuda:N.")
    vec: VecMode = option(
        "auto",
        """Vector env: batched (the task's native vector implementation: all envs stepped at once
        as arrays, on the training device when it is a GPU), sync (SyncVectorEnv of the single
        env), async (AsyncVectorEnv, subprocesses), or auto (batched for our tasks, which have
        one, else sync). Batched and sync give the same episodes for the same seed.""",
    )
    checkpoint_every: int = option(
        50, "Write a checkpoint every this many updates (and at the end); 0 writes only at the "
        "end.", ge=0,
    )
    checkpoint_minutes: float = option(
        0.0,
        """Also write a checkpoint when this many minutes have passed since the last one (0:
        off): sized to a job's time limit, where a count of updates depends on the speed.""",
        ge=0,
    )
    max_nonfinite: int = option(
        5, "Stop after this many updates in a row with a non-finite loss or gradient.", ge=1
    )
    log_every: int = option(
        10, "Updates between plain progress lines when stderr is not a terminal.", ge=1
    )
    policy_kwargs: dict[str, Any] = option(
        {}, "Policy hyperparameters: features_dim, head_hidden, head_layers and the memory's own."
    )

    def validate(self) -> AgentConfig:
        """Refuse a value of the wrong type or outside its range, or fields that do not fit
        together, with a one-line ValueError naming the field; returns self."""
        hints = field_types(type(self))
        for f in dataclasses.fields(self):
            _check_field(f.name, getattr(self, f.name), hints[f.name],
                         field_meta(type(self), f.name).get("bounds", {}))

        def need(cond: bool, name: str, allowed: str) -> None:
            if not cond:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")

        need(self.rollout_len % self.bptt_len == 0, "bptt_len",
             f"a divisor of rollout_len ({self.rollout_len})")
        need(self.ent_end_step == 0 or self.ent_end_step > self.ent_start_step, "ent_end_step",
             f"0 (no decay) or after ent_start_step ({self.ent_start_step})")
        if self.mrbp:
            need(self.bptt_len % self.mrbp_chunk_len == 0, "mrbp_chunk_len",
                 f"a divisor of bptt_len ({self.bptt_len})")
        n_seq = self.n_envs * (self.rollout_len // self.bptt_len)
        need(n_seq % self.n_minibatches == 0, "n_minibatches",
             f"a divisor of the number of training sequences per rollout ({n_seq})")
        return self


# The presets change defaults only (their help texts are AgentConfig's); why each value:
# docs/results/defaults.md.


@dataclass
class PPOConfig(AgentConfig):
    """PPO: clipped objective, several epochs over minibatches of whole sequences, advantages not
    normalised. The defaults learn the 10-cell corridor on 7 of 8 seeds; the measurements behind
    each are in ``docs/results/defaults.md``."""

    n_envs: int = 32
    n_minibatches: int = 8
    norm_adv: bool = False
    ent_coef: float = 0.003
    anneal_lr: bool = True


@dataclass
class A2CConfig(AgentConfig):
    """A2C, the paper's actor-critic: one pass, the whole rollout as one batch, no clipping,
    RMSprop, entropy 0.0005 and BPTT length 100 as in the paper's RL settings."""

    n_envs: int = 16
    rollout_len: int = 100
    bptt_len: int = 100
    n_epochs: int = 1
    n_minibatches: int = 1
    clip_coef: float | None = None
    norm_adv: bool = False
    ent_coef: float = 0.0005
    lr: float = 7e-4
    optimizer: OptimizerName = "rmsprop"


def replace_config(config: AgentConfig, **changes: Any) -> AgentConfig:
    """``config`` with ``changes`` (field names), refusing an unknown name with the allowed ones."""
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; allowed: {', '.join(sorted(names))}")
    return dataclasses.replace(config, **changes)


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of the config class ``cls`` (``Annotated`` kept)."""
    return typing.get_type_hints(cls, include_extras=True)


def field_meta(cls: type, name: str) -> Mapping[str, Any]:
    """The :func:`option` metadata of field ``name``: the nearest class of ``cls``'s MRO that
    declares it with metadata (a preset that only changes a default inherits its base's)."""
    for klass in cls.__mro__:
        f = vars(klass).get("__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata:
            return f.metadata
    return {}


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The help text of each field of the config class ``cls``."""
    return {f.name: field_meta(cls, f.name).get("doc", "") for f in dataclasses.fields(cls)}


# helpers


def _check_field(name: str, value: Any, hint: Any, bounds: Mapping[str, Any]) -> None:
    """Check ``value`` against the field type ``hint``: bool, int, float, str, a ``Literal``,
    ``X | None``, ``dict[str, ...]``, or ``Annotated[X, check, ...]`` (each ``check(name, value)``
    run after X's)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        _check_field(name, value, args[0], bounds)
        for check in hint.__metadata__:
            check(name, value)
    elif origin in (Union, types.UnionType) and type(None) in args:
        if value is not None:
            (inner,) = [a for a in args if a is not type(None)]
            try:
                _check_field(name, value, inner, bounds)
            except ValueError as err:
                head, _, got = str(err).rpartition(", got ")
                raise ValueError(f"{head} or None, got {got}") from None
    elif origin is Literal:
        check_choice(name, value, args)
    elif hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    elif hint is int:
        check_int(name, value, ge=bounds.get("ge"), le=bounds.get("le"))
    elif hint is float:
        check_number(name, value, **bounds)
    elif hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
    elif origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{name} must be a dict with string keys, got {value!r}")
    else:  # a field type this checker does not know: a programming error, not a user's
        raise TypeError(f"config field {name}: unsupported type {hint!r}")
