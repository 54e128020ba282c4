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
    "available_memories",
    "cat_states",
    "detach_state",
    "index_state",
    "make_memory",
    "memory_class",
    "register_memory",
    "reset_state",
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

        Agents call it on each training sequence: ``x`` (T, B, input_dim) as given to ``forward``,
        ``episode_starts`` (T, B), ``state`` the state at the sequence's start, and ``targets``
        (T, B) a per-step training signal (the agents pass the returns). Returns ``loss_*`` scalars.
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


def make_memory(name: str, input_dim: int, **config) -> Memory:
    """Build the memory registered under ``name`` with ``input_dim`` inputs.

    Unknown hyperparameters are refused with the list of those the memory accepts.
    """
    cls = memory_class(name)
    params = inspect.signature(cls.__init__).parameters
    accepts_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not accepts_var_kw:
        allowed = [p for p in params if p not in ("self", "input_dim")]
        unknown = sorted(set(config) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {unknown} for memory {name!r}; "
                f"allowed: {', '.join(allowed)}"
            )
    return cls(input_dim, **config)


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


def reset_state(state: State, starts: Tensor, initial: State) -> State:
    """Replace the rows of ``state`` where ``starts`` (B,) is true by the rows of ``initial``.

    For states whose tensors have the same shape as ``initial``'s (fixed-size memories).
    """
    out = {}
    for k, v in state.items():
        mask = starts.view(-1, *([1] * (v.dim() - 1)))
        out[k] = torch.where(mask, initial[k].to(v.dtype), v)
    return out


def _pad_to(t: Tensor, shape: Sequence[int]) -> Tensor:
    if tuple(t.shape) == tuple(shape):
        return t
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
            out[i][k] = _pad_to(s[k], want)
    return out


def stack_states(states: Sequence[State]) -> State:
    """Stack states along a new dim 0 (N, B, ...), zero-padding dims that differ in size."""
    padded = _padded(states, skip_dim=None)
    return {k: torch.stack([s[k] for s in padded]) for k in padded[0]}


def cat_states(states: Sequence[State]) -> State:
    """Concatenate states along the batch dim, zero-padding the other dims that differ."""
    padded = _padded(states, skip_dim=0)
    return {k: torch.cat([s[k] for s in padded]) for k in padded[0]}
