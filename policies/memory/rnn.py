"""Recurrent baselines (LSTM, GRU) and the memoryless ``none``, behind the memory contract."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Memory, State, register_memory

# helpers


def _run_boundaries(episode_starts: Tensor) -> list[int]:
    """Time indices where a run without resets begins (always includes 0 and T).

    One host read per call: cuDNN/ATen recurrent kernels need the runs on the host.
    """
    t = episode_starts.shape[0]
    starts = torch.nonzero(episode_starts[1:].any(dim=1)).flatten() + 1
    return [0, *starts.tolist(), t]


class _RNNMemory(Memory):
    rnn_cls: type[nn.RNNBase]
    state_keys: tuple[str, ...]

    def __init__(self, input_dim: int, *, hidden_dim: int = 64, num_layers: int = 1) -> None:
        """
        Args:
            input_dim: size of each input step.
            hidden_dim: hidden units per layer (also the output size).
            num_layers: stacked recurrent layers.
        """
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        super().__init__(input_dim, hidden_dim)
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.rnn = self.rnn_cls(input_dim, hidden_dim, num_layers=num_layers)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        shape = (batch_size, self.num_layers, self.hidden_dim)
        device = self.device if device is None else device
        return {k: torch.zeros(shape, device=device) for k in self.state_keys}

    def forward(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State, dict[str, Tensor]]:
        hs = [state[k].transpose(0, 1).contiguous() for k in self.state_keys]  # (layers, B, H)
        outs = []
        # one step (acting) is one run: no host read of where the runs are
        bounds = [0, 1] if x.shape[0] == 1 else _run_boundaries(episode_starts)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            keep = (~episode_starts[lo]).to(x.dtype).view(1, -1, 1)
            hs = [h * keep for h in hs]
            out, new = self.rnn(x[lo:hi], hs[0] if len(hs) == 1 else tuple(hs))
            hs = [new] if len(hs) == 1 else list(new)
            outs.append(out)
        y = torch.cat(outs)
        new_state = {k: h.transpose(0, 1) for k, h in zip(self.state_keys, hs, strict=True)}
        aux = {"memory_size": torch.tensor(1.0, device=x.device)}
        return y, new_state, aux

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden_dim={self.hidden_dim}, num_layers={self.num_layers}"


@register_memory("lstm")
class LSTMMemory(_RNNMemory):
    """LSTM baseline: state ``h``, ``c`` of shape (B, num_layers, hidden_dim)."""

    rnn_cls = nn.LSTM
    state_keys = ("h", "c")


@register_memory("gru")
class GRUMemory(_RNNMemory):
    """GRU baseline: state ``h`` of shape (B, num_layers, hidden_dim)."""

    rnn_cls = nn.GRU
    state_keys = ("h",)


@register_memory("none")
class NoMemory(Memory):
    """Memoryless baseline: a two-layer MLP applied to each step alone; the state is empty."""

    def __init__(self, input_dim: int, *, hidden_dim: int = 64) -> None:
        """
        Args:
            input_dim: size of each input step.
            hidden_dim: hidden units (also the output size).
        """
        if hidden_dim < 1:
            raise ValueError(f"hidden_dim must be >= 1, got {hidden_dim}")
        super().__init__(input_dim, hidden_dim)
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
        )

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return {}

    def forward(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State, dict[str, Tensor]]:
        return self.net(x), {}, {"memory_size": torch.tensor(0.0, device=x.device)}
