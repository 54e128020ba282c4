"""The memory contract shared by every memory, and the registry that maps names to memories.

Every memory is a :class:`Memory` (a ``torch.nn.Module``) with one interface, so that a policy, an
agent, memory-replay back-propagation (MRBP) and the stable-baselines3 adapter never know which
memory runs::

    state = memory.initial_state(batch_size, device)    # dict of batch-first tensors
    y, state, aux = memory(x, state, episode_starts)    # x: (T, B, D_in), episode_starts: (T, B)
                                                        # y: (T, B, D_out); aux: dict of tensors

Contract:

* ``episode_starts[t, b]`` is true when ``x[t, b]`` is the first step of an episode: from that step
  on, row ``b`` behaves exactly as a fresh :meth:`Memory.initial_state` row would.
* One call over ``T`` steps equals ``T`` one-step calls and any split into chunks, the state passed
  along (up to float tolerance), resets mid-sequence included.
* ``state`` holds batch-first tensors (dim 0 is the env). Integer and bool tensors (ages,
  positions, phases, validity masks) are allowed and carry no gradient. A memory whose state
  changes size along dim 1 (a cache that grows and shrinks) must treat zero padding at the end of
  that dim as empty (e.g. a ``valid`` bool key that is False there), so states of different sizes
  can be stacked by :func:`stack_states`.
* ``aux`` carries auxiliary losses under ``loss_*`` keys (scalar tensors, already averaged over
  the call's steps and envs, to be added to the training loss with a coefficient) and detached
  diagnostics (``memory_size``: the mean number of memories attended per step, and others).
* Nothing that belongs to an episode is kept on ``self``: state goes in and comes out.
* Acting cache (:mod:`.acting`): a call without gradients may attach to a tensor of the state it
  returns what later steps need (keys and values, spans, a segment's partial encoding), and the
  next such call may use it instead of recomputing it from the state; the state's keys, shapes
  and values are the same with or without it, and a new tensor (indexing, stacking, detaching,
  copying) carries none. Calls with gradients never use it.

Training adds every auxiliary loss of a memory through :func:`memory_losses`: the ``loss_*``
terms of ``forward``'s ``aux`` and those of :meth:`Memory.auxiliary_losses` on the same sequence.
Both trainers (ours and the stable-baselines3 adapter) call it, so a memory's losses, and the
targets they are given, are the same whichever algorithm trains it.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

State = dict[str, Tensor]

__all__ = [
    "Memory",
    "State",
    "UnknownHyperparameterError",
    "available_memories",
    "cat_states",
    "detach_state",
    "index_state",
    "make_memory",
    "memory_class",
    "memory_losses",
    "pad_to",
    "register_memory",
    "stack_states",
    "state_nbytes",
]


class Memory(nn.Module, abc.ABC):
    """Base class of every memory: the contract of the module docstring.

    Subclasses set ``input_dim`` and ``output_dim`` (via ``super().__init__``) and implement
    :meth:`initial_state` and :meth:`forward`.
    """

    #: Registry name, set by :func:`register_memory`.
    name: str = ""

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        if input_dim < 1:
            raise ValueError(f"input_dim must be >= 1, got {input_dim}")
        if output_dim < 1:
            raise ValueError(f"output_dim must be >= 1, got {output_dim}")
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)

    @abc.abstractmethod
    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The state of ``batch_size`` fresh episodes: a dict of batch-first tensors."""

    @abc.abstractmethod
    def forward(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State, dict[str, Tensor]]:
        """Run ``T`` steps. ``x``: (T, B, input_dim); ``episode_starts``: (T, B) bool.

        Returns ``y`` (T, B, output_dim), the state after the last step, and ``aux``.
        """

    #: Prefixes of parameter names trained only by :meth:`auxiliary_losses` (not by ``forward``).
    separately_trained: tuple[str, ...] = ()

    def state_spec(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Per-env shape (without the batch dim) and dtype of each state key, at its largest.

        The default reads :meth:`initial_state`; memories whose state grows (caches) override it
        with their capacity, so a state can be zero-padded to a fixed size (e.g. to pack it into
        another library's fixed-size recurrent state).
        """
        return {k: (tuple(v.shape[1:]), v.dtype) for k, v in self.initial_state(1, "cpu").items()}

    def state_size_per_env(self) -> int:
        """Bytes of recurrent state one env carries at most (the memory's cost, for reports)."""
        total = 0
        for shape, dtype in self.state_spec().values():
            n = 1
            for d in shape:
                n *= d
            total += n * torch.empty((), dtype=dtype).element_size()
        return total

    def auxiliary_losses(
        self, x: Tensor, episode_starts: Tensor, state: State, targets: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Self-supervised losses on a stored sequence (default: none).

        Called through :func:`memory_losses` on each training sequence: ``x`` (T, B, input_dim) as
        given to ``forward``, ``episode_starts`` (T, B), ``state`` the (detached) state at the
        sequence's start, and ``targets`` (T, B) a per-step estimate of the return (our trainer
        passes the returns, the stable-baselines3 adapter the critic's values). Returns ``loss_*``
        scalars.
        """
        return {}

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups of parameters trained apart (default: none): dicts with
        ``params``, ``lr_scale`` (a multiple of the learning rate) and optimizer options such
        as ``eps``. Every parameter not in one goes to the policy's default group."""
        return []

    def after_rollout(self, diagnostics: dict[str, float]) -> dict[str, float]:
        """Adapt coefficients between updates (default: nothing to adapt).

        The trainer calls it once per update, after the optimizer steps, with the rollout's mean
        diagnostics (``aux`` keys without ``loss_``, e.g. ``memory_size``; the same on every rank).
        A memory keeps what it adapts in buffers, so checkpoints carry it. Returns scalars to log
        (under ``memory/``).
        """
        return {}

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, output_dim={self.output_dim}"


# registry

_REGISTRY: dict[str, type[Memory]] = {}


def register_memory(name: str) -> Callable[[type[Memory]], type[Memory]]:
    """Class decorator: make a memory available to :func:`make_memory` under ``name``."""

    def decorate(cls: type[Memory]) -> type[Memory]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"memory name {name!r} is already registered by {_REGISTRY[name]}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_memories() -> list[str]:
    """Names of every registered memory, in registration order."""
    return list(_REGISTRY)


def memory_class(name: str) -> type[Memory]:
    """The memory class registered under ``name``; a clear error lists the choices."""
    try:
        return _REGISTRY[name]
    except KeyError:
        choices = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown memory {name!r}; choose one of: {choices}") from None


class UnknownHyperparameterError(ValueError):
    """:func:`make_memory` got keys the memory does not take (``unknown``; ``allowed`` are)."""

    def __init__(self, name: str, unknown: list[str], allowed: list[str]) -> None:
        super().__init__(
            f"unknown hyperparameter(s) {unknown} for memory {name!r}; "
            f"allowed: {', '.join(allowed)}"
        )
        self.unknown = unknown
        self.allowed = allowed


def make_memory(name: str, input_dim: int, **config) -> Memory:
    """Build the memory registered under ``name`` with ``input_dim`` inputs.

    Unknown hyperparameters are refused (:class:`UnknownHyperparameterError`) with the list of
    those the memory accepts.
    """
    cls = memory_class(name)
    params = inspect.signature(cls.__init__).parameters
    accepts_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not accepts_var_kw:
        allowed = [p for p in params if p not in ("self", "input_dim")]
        unknown = sorted(set(config) - set(allowed))
        if unknown:
            raise UnknownHyperparameterError(name, unknown, allowed)
    return cls(input_dim, **config)


# training losses


def memory_losses(
    memory: Memory,
    aux: dict[str, Tensor],
    x: Tensor,
    episode_starts: Tensor,
    state: State,
    targets: Tensor | None,
    *,
    with_auxiliary_losses: bool = True,
) -> dict[str, Tensor]:
    """Every auxiliary loss of ``memory`` on one training sequence, keyed ``loss_*``.

    Args:
        memory: the memory that ran the sequence.
        aux: what ``memory(x, state, episode_starts)`` returned as ``aux``; its ``loss_*``
            entries come first.
        x: (T, B, input_dim) the memory's input over the sequence.
        episode_starts: (T, B) bool.
        state: the state at the sequence's start (detached here: the losses on a stored
            sequence train the memory on that sequence only).
        targets: (T, B) a per-step estimate of the return, for losses that learn what predicts
            it (Rehearsal Memory's history teacher); None leaves such losses out.
        with_auxiliary_losses: False leaves out :meth:`Memory.auxiliary_losses` (whose fragment
            sampling depends on how a sequence is cut), keeping only ``aux``'s terms.

    Returns:
        ``loss_*`` name -> scalar, ``aux``'s terms then ``auxiliary_losses``' (a key returned
        without the prefix gets it).
    """
    losses = {k: v for k, v in aux.items() if k.startswith("loss_")}
    if with_auxiliary_losses:
        extra = memory.auxiliary_losses(x, episode_starts, detach_state(state), targets)
        for k, v in extra.items():
            losses[k if k.startswith("loss_") else f"loss_{k}"] = v
    return losses


# state helpers


def state_nbytes(state: State) -> int:
    """Bytes per env of a batch-first state (total bytes divided by the batch size)."""
    total, batch = 0, None
    for t in state.values():
        total += t.numel() * t.element_size()
        batch = t.shape[0] if batch is None else batch
    return 0 if not batch else total // batch


def detach_state(state: State) -> State:
    """The same state cut from the autograd graph."""
    return {k: v.detach() for k, v in state.items()}


def index_state(state: State, index: Tensor | slice | Sequence[int]) -> State:
    """Select envs (dim 0) of a batch-first state."""
    return {k: v[index] for k, v in state.items()}


def pad_to(t: Tensor, shape: Sequence[int]) -> Tensor:
    """``t`` zero-padded at the end of every dim to ``shape`` (zero padding is empty memory by
    the contract, so a padded state behaves as the original)."""
    if tuple(t.shape) == tuple(shape):
        return t
    if len(shape) != t.dim() or any(h > w for h, w in zip(t.shape, shape, strict=True)):
        raise ValueError(f"cannot zero-pad shape {tuple(t.shape)} to {tuple(shape)}")
    pad: list[int] = []
    for have, want in zip(reversed(t.shape), reversed(shape), strict=True):
        pad.extend([0, want - have])
    return nn.functional.pad(t, pad)


def _padded(states: Sequence[State], skip_dim: int | None) -> list[State]:
    if not states:
        raise ValueError("need at least one state")
    keys = list(states[0])
    out = [dict() for _ in states]
    for k in keys:
        shapes = [s[k].shape for s in states]
        ndim = len(shapes[0])
        if any(len(sh) != ndim for sh in shapes):
            raise ValueError(f"state key {k!r} has different ranks: {shapes}")
        target = [max(sh[d] for sh in shapes) for d in range(ndim)]
        for i, s in enumerate(states):
            want = list(target)
            if skip_dim is not None:
                want[skip_dim] = s[k].shape[skip_dim]
            out[i][k] = pad_to(s[k], want)
    return out


def stack_states(states: Sequence[State]) -> State:
    """Stack states along a new dim 0 (N, B, ...), zero-padding dims that differ in size."""
    padded = _padded(states, skip_dim=None)
    return {k: torch.stack([s[k] for s in padded]) for k in padded[0]}


def cat_states(states: Sequence[State]) -> State:
    """Concatenate states along the batch dim, zero-padding the other dims that differ."""
    padded = _padded(states, skip_dim=0)
    return {k: torch.cat([s[k] for s in padded]) for k in padded[0]}
