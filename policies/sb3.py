"""stable-baselines3 adapters: our memories as recurrent policies of sb3-contrib's ``RecurrentPPO``,
and a features extractor for our observations for SB3's feed-forward algorithms.

::

    from sb3_contrib import RecurrentPPO
    from policies.sb3 import ExpireSpanPolicy, MemoryRecurrentPolicy

    RecurrentPPO(ExpireSpanPolicy, env).learn(100_000)
    RecurrentPPO(MemoryRecurrentPolicy, env, policy_kwargs={"memory": "gru",
                                                            "memory_kwargs": {"hidden_dim": 32}})

How the memory becomes RecurrentPPO's recurrent state: RecurrentPPO stores, pads and indexes an
LSTM's ``(hidden, cell)`` pair of shape ``(n_layers, n_envs, hidden_size)`` and sizes it from
``policy.lstm_actor.num_layers`` / ``.hidden_size``. :class:`PackedMemory` plays that role: it
flattens every key of the memory's dict state, zero-padded to its largest shape from
``memory.state_spec()`` (zero padding is empty memory by contract), into one float32 vector per env,
split in two halves for ``hidden`` and ``cell``. Integer and bool keys are stored as floats (exact
for integers below 2**24). The vector's first element is a flag set to 1 by every packed state: an
all-zero vector, which is what RecurrentPPO and ``predict(state=None)`` start from, is read as
"no state yet" and the memory starts from its own ``initial_state`` (which need not be zeros).

Actor and critic share one memory by default (``share_memory=True``): the transformer memories
are the costly part of the network, a shared one halves the compute and the state stored per step,
both losses shape it (as in the papers' actor-critic agents, unlike SB3's ``shared_lstm``, which
detaches the critic), and its auxiliary losses are counted once. ``share_memory=False`` gives the
critic its own memory, like RecurrentPPO's default separate LSTMs.

Auxiliary losses: ``RecurrentPPO`` knows nothing of the memories' ``loss_*`` terms (the Expire-Span
span penalty, the rehearsal losses), so :meth:`MemoryRecurrentPolicy.evaluate_actions` collects them
with :func:`policies.memory.memory_losses` (the function our trainer calls) and attaches them to the
returned values through an identity whose backward also sends ``aux_loss_coef`` into their sum: the
gradient of PPO's loss then includes ``aux_loss_coef * sum(loss_*)`` exactly once per minibatch.
The losses that learn what predicts the return (Rehearsal Memory's history teacher, which ranks
the fragments to rehearse) need per-step return targets; ``evaluate_actions`` is not given
RecurrentPPO's returns, so they get the critic's values of the same steps (detached), the
critic's estimate of those returns. RecurrentPPO pads sequences at their end; padded steps come
after the real ones, so causal memories compute the real steps exactly as when stepping, but the
auxiliary losses (averaged by the memory over the call) include the padded steps, which
RecurrentPPO does not pass on.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from gymnasium import spaces
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.policies import ActorCriticPolicy, BaseModel
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, MlpExtractor
from stable_baselines3.common.type_aliases import Schedule
from torch import Tensor, nn

from .encoders import is_code_image, is_symbolic_grid, make_encoder
from .memory import (
    Memory,
    State,
    available_memories,
    make_memory,
    memory_class,
    memory_losses,
    pad_to,
)

__all__ = [
    "BagOfWordsExtractor",
    "ExpireSpanPolicy",
    "GRUMemoryPolicy",
    "LSTMMemoryPolicy",
    "MemformerPolicy",
    "MemoryRecurrentPolicy",
    "MemoryRun",
    "NoMemoryPolicy",
    "PackedMemory",
    "RMTPolicy",
    "RehearsalPolicy",
    "StatePacker",
    "TrXLPolicy",
    "policy_classes",
    "sb3_policy_class",
]

PackedState = tuple[Tensor, Tensor]  # (hidden, cell), each (1, B, hidden_size)


class MemoryRun(NamedTuple):
    """What one :class:`PackedMemory` call leaves for the auxiliary losses (time-major)."""

    x: Tensor  # (T, n_seq, input_size) the memory's input
    starts: Tensor  # (T, n_seq) bool episode starts (rows without a state yet start at t = 0)
    state: State  # the state before each sequence
    aux: dict[str, Tensor]  # the memory's aux over the call


# features extractor


def _preprocessed_space(space: spaces.Space, normalized_images: bool) -> spaces.Space:
    """The space of what SB3's ``preprocess_obs`` hands a features extractor for ``space``."""
    if isinstance(space, spaces.Dict):
        return spaces.Dict(
            {k: _preprocessed_space(s, normalized_images) for k, s in space.spaces.items()}
        )
    if isinstance(space, spaces.Box):
        if normalized_images and is_image_space(space, check_channels=False):
            return spaces.Box(0.0, 1.0, space.shape, dtype="float32")  # already divided by 255
        return space
    if isinstance(space, spaces.Discrete):
        return spaces.Box(0.0, 1.0, (int(space.n),), dtype="float32")  # one-hot
    if isinstance(space, spaces.MultiDiscrete):
        return spaces.Box(0.0, 1.0, (int(space.nvec.sum()),), dtype="float32")  # one-hots
    if isinstance(space, spaces.MultiBinary):
        return spaces.Box(0.0, 1.0, tuple(space.shape), dtype="float32")
    raise ValueError(
        f"unsupported observation space {space!r}; supported: Box, Discrete, MultiDiscrete, "
        "MultiBinary, Dict (of supported spaces)"
    )


class BagOfWordsExtractor(BaseFeaturesExtractor):
    """SB3 features extractor running our encoder (:func:`policies.encoders.make_encoder`).

    Made for our ``(3, 3, V)`` bag-of-words observations; other Box, Discrete and Dict spaces get
    the encoder ``make_encoder`` picks for them, fed with what SB3's preprocessing produces (images
    divided by 255, discrete observations one-hot), except minigrid's symbolic observations
    (``is_symbolic_grid``, ``is_code_image``), whose codes and direction are restored for
    :class:`~policies.encoders.SymbolicGridEncoder`::

        PPO("MlpPolicy", env, policy_kwargs={"features_extractor_class": BagOfWordsExtractor})
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        features_dim: int = 64,
        normalized_images: bool = True,
    ) -> None:
        """
        Args:
            observation_space: the env's observation space.
            features_dim: size of the encoder's output (per key for Dict spaces).
            normalized_images: whether SB3 divides image observations by 255 before the extractor
                (the policy's ``normalize_images``, True by default in SB3).
        """
        # minigrid's symbolic observations keep their codes: SB3's preprocessing (image / 255,
        # direction one-hot) is undone in forward
        self.symbolic = is_symbolic_grid(observation_space)
        self.codes = is_code_image(observation_space)  # (SB3 passes it as floats, unscaled)
        self.image_scale = 1.0
        if self.codes:
            encoder = make_encoder(observation_space, features_dim=features_dim)
        elif self.symbolic:
            image = observation_space["image"]
            if normalized_images and is_image_space(image, check_channels=False):
                self.image_scale = 255.0
            encoder = make_encoder(observation_space, features_dim=features_dim)
        else:
            encoder = make_encoder(
                _preprocessed_space(observation_space, normalized_images),
                features_dim=features_dim,
            )
        super().__init__(observation_space, encoder.features_dim)
        self.encoder = encoder

    def forward(self, observations: Tensor | dict[str, Tensor]) -> Tensor:
        if self.codes:
            assert isinstance(observations, Tensor)
            observations = observations.round().long()
        elif self.symbolic:
            assert isinstance(observations, dict)
            observations = {
                **observations,
                "image": (observations["image"] * self.image_scale).round().long(),
                "direction": observations["direction"].argmax(-1),  # SB3's one-hot -> value
            }
        return self.encoder(observations)


# state packing


class StatePacker:
    """Packs a memory's dict state into RecurrentPPO's ``(hidden, cell)`` pair and back.

    Layout of the per-env vector: ``[flag, key_1 (flattened, padded to its spec), key_2, ...]``,
    zero-padded to ``2 * hidden_size`` and split into ``hidden`` (first half) and ``cell``.
    """

    def __init__(self, spec: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> None:
        """
        Args:
            spec: per-env shape (at its largest) and dtype of every state key, as returned by
                ``Memory.state_spec()``.
        """
        self.spec = {k: (tuple(int(d) for d in shape), dtype) for k, (shape, dtype) in spec.items()}
        self.sizes = {k: math.prod(shape) for k, (shape, _) in self.spec.items()}
        self.size = 1 + sum(self.sizes.values())  # the flag, then every key
        self.hidden_size = (self.size + 1) // 2

    def pack(self, state: State, batch_size: int, device: torch.device) -> PackedState:
        """``state`` (batch-first dict) -> ``(hidden, cell)``, each (1, batch_size, hidden_size)."""
        if set(state) != set(self.spec):
            raise ValueError(
                f"state keys {sorted(state)} do not match the memory's state_spec keys "
                f"{sorted(self.spec)}"
            )
        parts = [torch.ones(batch_size, 1, device=device)]
        for key, (shape, _) in self.spec.items():
            value = state[key].to(torch.float32)
            have = tuple(value.shape[1:])
            if len(have) != len(shape) or any(h > s for h, s in zip(have, shape, strict=True)):
                raise ValueError(
                    f"state[{key!r}] has per-env shape {have}, larger than its state_spec "
                    f"shape {shape}"
                )
            parts.append(pad_to(value, (batch_size, *shape)).reshape(batch_size, -1))
        flat = torch.cat(parts, dim=1)
        flat = nn.functional.pad(flat, (0, 2 * self.hidden_size - self.size))
        hidden, cell = flat.split(self.hidden_size, dim=1)
        return hidden.unsqueeze(0).contiguous(), cell.unsqueeze(0).contiguous()

    def unpack(self, packed: tuple[Tensor, ...]) -> tuple[State, Tensor]:
        """``(hidden, cell)`` -> (state, ``fresh`` (B,) bool: rows that hold no state yet)."""
        if len(packed) != 2 or any(p.dim() != 3 or p.shape[0] != 1 for p in packed):
            raise ValueError(
                "expected a (hidden, cell) pair of shape (1, n_envs, hidden_size), got shapes "
                f"{[tuple(p.shape) for p in packed]}"
            )
        if packed[0].shape[-1] != self.hidden_size or packed[1].shape[-1] != self.hidden_size:
            raise ValueError(
                f"packed state has size {packed[0].shape[-1]}, the memory needs "
                f"hidden_size={self.hidden_size}"
            )
        flat = torch.cat([packed[0][0], packed[1][0]], dim=1).to(torch.float32)  # (B, 2 * H)
        batch = flat.shape[0]
        state: State = {}
        lo = 1
        for key, (shape, dtype) in self.spec.items():
            value = flat[:, lo : lo + self.sizes[key]].reshape(batch, *shape)
            lo += self.sizes[key]
            if dtype == torch.bool:
                value = value > 0.5
            elif not dtype.is_floating_point:
                value = value.round().to(dtype)
            else:
                value = value.to(dtype)
            state[key] = value
        return state, flat[:, 0] == 0


class PackedMemory(nn.Module):
    """A memory whose recurrent state travels as RecurrentPPO's ``(hidden, cell)`` pair.

    Takes flat batches as RecurrentPPO hands them (``n_seq`` sequences of equal, padded length,
    sequence-major, as in ``RecurrentActorCriticPolicy._process_sequence``) and exposes the
    ``num_layers`` / ``hidden_size`` / ``input_size`` attributes RecurrentPPO reads from its LSTM.
    """

    num_layers = 1

    def __init__(self, memory: Memory) -> None:
        """
        Args:
            memory: the memory to run (any :class:`policies.memory.Memory`).
        """
        super().__init__()
        self.memory = memory
        self.packer = StatePacker(memory.state_spec())
        self.hidden_size = self.packer.hidden_size
        self.input_size = memory.input_dim
        self.output_dim = memory.output_dim

    def initial_packed_state(self, batch_size: int, device: torch.device | str) -> PackedState:
        """The packed ``initial_state`` of ``batch_size`` fresh episodes."""
        device = torch.device(device)
        return self.packer.pack(self.memory.initial_state(batch_size, device), batch_size, device)

    def forward(
        self, features: Tensor, packed: tuple[Tensor, ...], episode_starts: Tensor
    ) -> tuple[Tensor, PackedState, MemoryRun]:
        """Run the memory over ``n_seq`` sequences.

        Args:
            features: (n_seq * T, input_size), sequence-major (all steps of sequence 0 first).
            packed: the state before each sequence, a pair of (1, n_seq, hidden_size).
            episode_starts: (n_seq * T,) float or bool, 1 where a step starts an episode.

        Returns:
            latent (n_seq * T, output_dim), the packed state after the last step, and the run
            (time-major) for :meth:`loss`.
        """
        n_seq = packed[0].shape[1]
        state, fresh = self.packer.unpack(packed)
        x = features.reshape(n_seq, -1, self.input_size).transpose(0, 1)  # (T, n_seq, D)
        starts = episode_starts.reshape(n_seq, -1).transpose(0, 1) > 0.5  # (T, n_seq)
        # rows without a state yet start from the memory's own initial state
        starts = torch.cat([starts[:1] | fresh.unsqueeze(0), starts[1:]])
        y, new_state, aux = self.memory(x, state, starts)
        latent = y.transpose(0, 1).reshape(-1, self.output_dim)
        new_packed = self.packer.pack(new_state, n_seq, features.device)
        return latent, new_packed, MemoryRun(x, starts, state, aux)

    def loss(self, run: MemoryRun, targets: Tensor) -> Tensor | None:
        """The sum of the memory's auxiliary losses (:func:`policies.memory.memory_losses`) on
        ``run``, ``targets`` (n_seq * T,) sequence-major per-step return estimates; None when the
        memory has none."""
        t_len, n_seq = run.starts.shape
        targets = targets.reshape(n_seq, t_len).transpose(0, 1)  # (T, n_seq)
        terms = memory_losses(self.memory, run.aux, run.x, run.starts, run.state, targets)
        if not terms:
            return None
        return torch.stack([t.reshape(()) for t in terms.values()]).sum()


class _Latents(NamedTuple):
    """One pass of the policy's memories over a batch (:meth:`MemoryRecurrentPolicy._latents`)."""

    pi: Tensor  # (N, latent_dim_pi) the actor's MLP latent
    vf: Tensor  # (N, latent_dim_vf) the critic's MLP latent
    states: RNNStates  # the packed states after the last step
    run_pi: MemoryRun  # the actor's memory run (for its auxiliary losses)
    run_vf: MemoryRun  # the critic's (the actor's when the memory is shared)


class _AddLossGradient(torch.autograd.Function):
    """Identity on ``x`` whose backward also sends gradient ``weight`` into the scalar ``loss``.

    Attached to an output that the training loss uses once, it adds ``weight * loss`` to the
    gradient of that training loss, without changing any value the algorithm sees.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, loss: Tensor, weight: float) -> Tensor:
        ctx.weight = weight
        ctx.loss_like = (loss.shape, loss.dtype, loss.device)
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        shape, dtype, device = ctx.loss_like
        return grad, torch.full(shape, ctx.weight, dtype=dtype, device=device), None


# policy

#: memory name -> the policy class bound to it (filled by the class declarations below)
_POLICY_CLASSES: dict[str, type[MemoryRecurrentPolicy]] = {}


class MemoryRecurrentPolicy(RecurrentActorCriticPolicy):
    """RecurrentPPO policy: our features extractor, one of our memories, SB3's MLP heads.

    ``policy_kwargs`` take SB3's ``ActorCriticPolicy`` arguments (``net_arch``, ``activation_fn``,
    ``features_extractor_class``, ...) plus ``memory``, ``memory_kwargs``, ``share_memory`` and
    ``aux_loss_coef``. A subclass bound to one memory is declared with the memory's name,
    ``class ExpireSpanPolicy(MemoryRecurrentPolicy, memory="expire_span")``, and is then what
    :func:`sb3_policy_class` returns for that name.
    """

    #: The memory used when ``memory`` is not given.
    default_memory: str = "expire_span"
    #: Whether the class is bound to ``default_memory`` (declared with ``memory=``).
    memory_is_fixed: bool = False

    def __init_subclass__(cls, memory: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if memory is not None:
            memory_class(memory)  # a clear error listing the registered names
            cls.default_memory, cls.memory_is_fixed = memory, True
            _POLICY_CLASSES.setdefault(memory, cls)

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        full_std: bool = True,
        use_expln: bool = False,
        squash_output: bool = False,
        features_extractor_class: type[BaseFeaturesExtractor] = BagOfWordsExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[torch.optim.Optimizer] = torch.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        *,
        memory: str | None = None,
        memory_kwargs: dict[str, Any] | None = None,
        share_memory: bool = True,
        aux_loss_coef: float = 1.0,
    ) -> None:
        """
        Args (beyond SB3's ``ActorCriticPolicy``, whose arguments keep their meaning):
            memory: registered memory name (``policies.memory.available_memories()``); default
                ``default_memory``.
            memory_kwargs: hyperparameters of the memory (``make_memory(memory, dim, **kw)``).
            share_memory: one memory for actor and critic (both losses train it); False gives
                the critic its own memory.
            aux_loss_coef: weight of the memory's auxiliary losses (``loss_*``) in the gradient.
        """
        if memory is None:
            memory = self.default_memory
        if self.memory_is_fixed and memory != self.default_memory:
            raise ValueError(
                f"memory must be {self.default_memory!r} for {type(self).__name__}, got "
                f"{memory!r}; use MemoryRecurrentPolicy to choose the memory"
            )
        memory_class(memory)  # a clear error listing the registered names
        if not (aux_loss_coef >= 0 and math.isfinite(aux_loss_coef)):
            raise ValueError(f"aux_loss_coef must be a finite number >= 0, got {aux_loss_coef}")
        if share_memory and not share_features_extractor:
            raise ValueError(
                "share_memory=True needs share_features_extractor=True (got False): a shared "
                "memory reads one stream of features"
            )
        if features_extractor_class is BagOfWordsExtractor:
            features_extractor_kwargs = {
                "normalized_images": normalize_images,
                **(features_extractor_kwargs or {}),
            }
        self.memory_name = memory
        self.memory_kwargs = dict(memory_kwargs or {})
        self.share_memory = share_memory
        self.aux_loss_coef = float(aux_loss_coef)
        # RecurrentActorCriticPolicy.__init__ would build LSTMs we do not use: build the
        # ActorCriticPolicy part directly; _build_mlp_extractor below builds the memories.
        ActorCriticPolicy.__init__(
            self,
            observation_space,
            action_space,
            lr_schedule,
            net_arch,
            activation_fn,
            ortho_init,
            use_sde,
            log_std_init,
            full_std,
            use_expln,
            squash_output,
            features_extractor_class,
            features_extractor_kwargs,
            share_features_extractor,
            normalize_images,
            optimizer_class,
            optimizer_kwargs,
        )
        # attributes RecurrentActorCriticPolicy's users read
        self.lstm_hidden_state_shape = (1, 1, self.lstm_actor.hidden_size)
        self.shared_lstm = share_memory
        self.enable_critic_lstm = not share_memory
        self.lstm_kwargs: dict[str, Any] = {}
        self.critic = None

    def _build_mlp_extractor(self) -> None:
        def build() -> PackedMemory:
            mem = make_memory(self.memory_name, self.features_dim, **self.memory_kwargs)
            return PackedMemory(mem)

        # named lstm_actor / lstm_critic: RecurrentPPO sizes its state buffers from lstm_actor
        self.lstm_actor = build()
        self.lstm_critic = None if self.share_memory else build()
        self.lstm_output_dim = self.lstm_actor.output_dim
        self.mlp_extractor = MlpExtractor(
            self.lstm_output_dim,
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            device=self.device,
        )

    @property
    def memory(self) -> Memory:
        """The actor's memory (also the critic's when ``share_memory``)."""
        return self.lstm_actor.memory

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            memory=self.memory_name,
            memory_kwargs=self.memory_kwargs,
            share_memory=self.share_memory,
            aux_loss_coef=self.aux_loss_coef,
            share_features_extractor=self.share_features_extractor,
        )
        return data

    def _latents(
        self, obs: Tensor | dict[str, Tensor], lstm_states: RNNStates, episode_starts: Tensor
    ) -> _Latents:
        """Features -> memories (the actor's, and the critic's unless shared) -> MLP latents."""
        features = self.extract_features(obs)
        pi_features, vf_features = (
            (features, features) if self.share_features_extractor else features
        )
        latent_pi, states_pi, run_pi = self.lstm_actor(pi_features, lstm_states.pi, episode_starts)
        if self.lstm_critic is None:
            latent_vf, states_vf, run_vf = latent_pi, states_pi, run_pi
        else:
            latent_vf, states_vf, run_vf = self.lstm_critic(
                vf_features, lstm_states.vf, episode_starts
            )
        return _Latents(
            self.mlp_extractor.forward_actor(latent_pi),
            self.mlp_extractor.forward_critic(latent_vf),
            RNNStates(states_pi, states_vf),
            run_pi,
            run_vf,
        )

    def forward(
        self,
        obs: Tensor | dict[str, Tensor],
        lstm_states: RNNStates,
        episode_starts: Tensor,
        deterministic: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor, RNNStates]:
        """One step per env while collecting: actions, values, log-probs and the next states."""
        out = self._latents(obs, lstm_states, episode_starts)
        values = self.value_net(out.vf)
        distribution = self._get_action_dist_from_latent(out.pi)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        actions = actions.reshape((-1, *self.action_space.shape))
        return actions, values, log_prob, out.states

    def get_distribution(
        self,
        obs: Tensor | dict[str, Tensor],
        lstm_states: tuple[Tensor, ...],
        episode_starts: Tensor,
    ) -> tuple[Distribution, tuple[Tensor, ...]]:
        """The action distribution and the actor's next (packed) state."""
        features = BaseModel.extract_features(self, obs, self.pi_features_extractor)
        latent_pi, states, _ = self.lstm_actor(features, lstm_states, episode_starts)
        latent_pi = self.mlp_extractor.forward_actor(latent_pi)
        return self._get_action_dist_from_latent(latent_pi), states

    def predict_values(
        self,
        obs: Tensor | dict[str, Tensor],
        lstm_states: tuple[Tensor, ...],
        episode_starts: Tensor,
    ) -> Tensor:
        """Values from the critic's (packed) state (the shared memory's when ``share_memory``)."""
        features = BaseModel.extract_features(self, obs, self.vf_features_extractor)
        core = self.lstm_actor if self.lstm_critic is None else self.lstm_critic
        latent_vf, _, _ = core(features, lstm_states, episode_starts)
        return self.value_net(self.mlp_extractor.forward_critic(latent_vf))

    def evaluate_actions(
        self,
        obs: Tensor | dict[str, Tensor],
        actions: Tensor,
        lstm_states: RNNStates,
        episode_starts: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Values, log-probs and entropy over padded sequences (the memory runs each sequence in
        one call); the memory's auxiliary losses ride on the values' gradient (module docstring).
        """
        out = self._latents(obs, lstm_states, episode_starts)
        distribution = self._get_action_dist_from_latent(out.pi)
        log_prob = distribution.log_prob(actions)
        values = self.value_net(out.vf)
        if torch.is_grad_enabled() and self.aux_loss_coef > 0:
            targets = values.detach().flatten()  # the critic's estimate of each step's return
            terms = [self.lstm_actor.loss(out.run_pi, targets)]
            if self.lstm_critic is not None:
                terms.append(self.lstm_critic.loss(out.run_vf, targets))
            terms = [t for t in terms if t is not None]
            if terms:
                aux = torch.stack(terms).sum()
                if aux.requires_grad:
                    values = _AddLossGradient.apply(values, aux, self.aux_loss_coef)
        return values, log_prob, distribution.entropy()


# one named class per built-in memory


class ExpireSpanPolicy(MemoryRecurrentPolicy, memory="expire_span"):
    """RecurrentPPO policy with the Expire-Span memory (:mod:`policies.memory.expire_span`)."""


class TrXLPolicy(MemoryRecurrentPolicy, memory="trxl"):
    """RecurrentPPO policy with the Transformer-XL memory (:mod:`policies.memory.trxl`)."""


class RMTPolicy(MemoryRecurrentPolicy, memory="rmt"):
    """RecurrentPPO policy with the Recurrent Memory Transformer (:mod:`policies.memory.rmt`)."""


class MemformerPolicy(MemoryRecurrentPolicy, memory="memformer"):
    """RecurrentPPO policy with the Memformer memory (:mod:`policies.memory.memformer`)."""


class RehearsalPolicy(MemoryRecurrentPolicy, memory="rehearsal"):
    """RecurrentPPO policy with Rehearsal Memory (:mod:`policies.memory.rehearsal`)."""


class LSTMMemoryPolicy(MemoryRecurrentPolicy, memory="lstm"):
    """RecurrentPPO policy with our LSTM memory (:mod:`policies.memory.rnn`)."""


class GRUMemoryPolicy(MemoryRecurrentPolicy, memory="gru"):
    """RecurrentPPO policy with our GRU memory (:mod:`policies.memory.rnn`)."""


class NoMemoryPolicy(MemoryRecurrentPolicy, memory="none"):
    """RecurrentPPO policy without memory (an MLP, :mod:`policies.memory.rnn`): the baseline."""


def sb3_policy_class(memory: str) -> type[MemoryRecurrentPolicy]:
    """The RecurrentPPO policy class bound to the registered memory ``memory``.

    E.g. ``sb3_policy_class("expire_span") is ExpireSpanPolicy``. A memory registered outside
    this library gets a class made here on first use, named ``CamelCase(memory) + "Policy"``
    (not a module attribute: a saved model stores it by value).
    """
    memory_class(memory)  # a clear error listing the registered names
    if memory not in _POLICY_CLASSES:

        class BoundPolicy(MemoryRecurrentPolicy, memory=memory):
            __doc__ = f"RecurrentPPO policy with the {memory!r} memory."

        name = "".join(w[:1].upper() + w[1:] for w in memory.replace("-", "_").split("_"))
        BoundPolicy.__name__ = BoundPolicy.__qualname__ = f"{name}Policy"
    return _POLICY_CLASSES[memory]


def policy_classes() -> dict[str, type[MemoryRecurrentPolicy]]:
    """Memory name -> policy class, for every registered memory."""
    return {name: sb3_policy_class(name) for name in available_memories()}
