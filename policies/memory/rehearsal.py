"""Rehearsal Memory: a slot memory written once per segment, trained with self-supervised rehearsal.

Paper: "Learning to Rehearse in Long Sequence Memorization" (``papers/rehearsal_memory.md``).

* The stream of each env is cut into segments of ``segment_len`` steps counted from its episode
  start. At a segment's end, a Transformer encoder layer models the segment's items (they see each
  other, section 3.2), slot-to-item attention aligns them to the ``num_slots`` slots (eq. 1,
  softmax over slots) and a GRU cell updates each slot with its aligned feature (eq. 2).
* Every step reads by multi-head attention from its own item over the slots and over its
  segment so far (causal: the items of the segment up to and including the step), and the
  reading is added to the step's item. The state holds the slots, the partial segment and its
  phase, so acting one step at a time equals running a whole sequence.
* :meth:`RehearsalMemory.auxiliary_losses` rehearses history fragments of a stored sequence
  against the memory that saw them (section 3.3.1): a bidirectional Transformer decoder with
  cross-attention to the slots reconstructs masked items contrastively (recollection, eq. 3) and
  tells positive fragments from corrupted ones (familiarity, eq. 4 as a log-loss). Which
  fragments are rehearsed is chosen by the history sampler (:mod:`.rehearsal_sampler`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .acting import acting_call, attach_cache, cache_stamp, cached
from .base import Memory, State, register_memory
from .rehearsal_sampler import (
    Fragments,
    HistoryTeacher,
    build_fragments,
    fragment_items,
    last_start,
    next_start,
    select_fragments,
)

__all__ = ["RehearsalMemory", "RehearsalOutput", "Fragments", "build_fragments"]

SAMPLERS = ("teacher", "uniform")


class Trace(NamedTuple):
    """What one run of the memory over a sequence leaves behind (for the rehearsal losses)."""

    y: Tensor  # (T, B, d) outputs
    state: State  # state after the last step
    items: Tensor  # (T, B, d) item embeddings (without the phase embedding)
    segment_end: Tensor  # (T, B) bool: a segment ends (and the slots are written) at this step
    slot_history: Tensor  # (R + 2, B, K, d) every slot version of the call
    after_version: Tensor  # (T, B) long: the version holding the slots after each step
    phase: Tensor  # (T, B) long: each step's position in its segment


class RehearsalOutput(NamedTuple):
    """Everything :meth:`RehearsalMemory.rehearse` computes (losses plus diagnostics)."""

    losses: dict[str, Tensor]  # loss_recollection, loss_familiarity, loss_teacher (weighted)
    p_positive: Tensor  # (k, B) familiarity probability of each rehearsed positive fragment
    p_negative: Tensor  # (k, B) the same for its corrupted copy
    picked: Tensor  # (k, B) grid index of each rehearsed fragment
    picked_valid: Tensor  # (k, B) bool: the pick is a real fragment
    importance: Tensor  # (C, B) the teacher's fragment ranking (ones for the uniform sampler)
    fragments: Fragments


class RehearsalDecoder(nn.Module):
    """The rehearsal model H(M, H): a bidirectional Transformer decoder over a fragment.

    Tokens are ``[cls]`` then the fragment's items (masked items replaced by a learned mask token),
    plus learned positions; every decoder layer cross-attends to the memory slots.
    """

    def __init__(self, d_model: int, num_heads: int, num_layers: int, length: int) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.randn(d_model) * 0.02)
        self.mask = nn.Parameter(torch.randn(d_model) * 0.02)
        self.pos = nn.Parameter(torch.randn(length + 1, d_model) * 0.02)
        layer = nn.TransformerDecoderLayer(
            d_model, num_heads, 2 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(d_model))
        self.recall = nn.Linear(d_model, d_model)  # r_[m] for the contrastive reconstruction
        self.familiar = nn.Linear(d_model, 1)  # confidence score s (a logit here)

    def forward(self, items: Tensor, masked: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        """``items`` (F, N, d), ``masked`` (F, N) bool, ``memory`` (F, K, d).

        Returns the recollection features (F, N, d) and the familiarity logits (F,).
        """
        tokens = torch.where(masked.unsqueeze(-1), self.mask.to(items.dtype), items)
        cls = self.cls.to(items.dtype).expand(items.shape[0], 1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos
        r = self.layers(tokens, memory)  # no causal mask: every item sees the whole fragment
        return self.recall(r[:, 1:]), self.familiar(r[:, 0]).squeeze(-1)


@register_memory("rehearsal")
class RehearsalMemory(Memory):
    """Rehearsal Memory: slots written per segment (eqs. 1-2), read by attention at every step.

    State (batch-first): ``slots`` (B, K, d), ``segment`` (B, S, d) the items of the current
    partial segment (zeros past ``phase``), ``phase`` (B,) long, the number of those items.
    """

    separately_trained = ("rehearsal.", "teacher.")

    def __init__(
        self,
        input_dim: int,
        *,
        d_model: int = 64,
        num_slots: int = 4,
        segment_len: int = 8,
        num_heads: int = 4,
        fragment_len: int = 8,
        num_fragments: int = 6,
        mask_ratio: float = 0.5,
        num_negatives: int = 16,
        decoder_layers: int = 2,
        recollection_weight: float = 1.0,
        familiarity_weight: float = 0.5,
        teacher_weight: float = 1.0,
        sampler: str = "teacher",
    ) -> None:
        """
        Args:
            input_dim: size of each input step.
            d_model: width of items, slots and outputs (the output size).
            num_slots: memory slots K.
            segment_len: steps per segment S; the slots are written at each segment's end.
            num_heads: attention heads of the read, the segment encoder and the decoder.
            fragment_len: steps per rehearsed history fragment N (>= 2).
            num_fragments: fragments rehearsed per env row and sequence (paper: B = 6).
            mask_ratio: share of a fragment's items masked for recollection (paper: 0.5).
            num_negatives: sampled items J each masked item is contrasted against (eq. 3).
            decoder_layers: layers of the rehearsal decoder.
            recollection_weight: weight of the recollection loss (paper: lambda_1 = 1.0).
            familiarity_weight: weight of the familiarity loss (paper: lambda_2 = 0.5).
            teacher_weight: weight of the history sampler's prediction loss.
            sampler: ``"teacher"`` (attention-ranked history sampler) or ``"uniform"`` (ablation).
        """
        for name, value in (
            ("d_model", d_model), ("num_slots", num_slots), ("segment_len", segment_len),
            ("num_heads", num_heads), ("num_fragments", num_fragments),
            ("num_negatives", num_negatives), ("decoder_layers", decoder_layers),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if d_model % num_heads:
            raise ValueError(f"num_heads must divide d_model={d_model}, got {num_heads}")
        if int(fragment_len) != fragment_len or fragment_len < 2:
            raise ValueError(f"fragment_len must be an integer >= 2, got {fragment_len!r}")
        n_mask = round(mask_ratio * fragment_len) if 0.0 < mask_ratio < 1.0 else -1
        if not 1 <= n_mask <= fragment_len - 1:
            raise ValueError(
                f"mask_ratio must be in (0, 1) and mask between 1 and fragment_len - 1 = "
                f"{fragment_len - 1} items, got {mask_ratio!r}"
            )
        for name, value in (
            ("recollection_weight", recollection_weight),
            ("familiarity_weight", familiarity_weight), ("teacher_weight", teacher_weight),
        ):
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        super().__init__(input_dim, d_model)
        self.d_model, self.num_slots, self.segment_len = d_model, num_slots, segment_len
        self.num_heads, self.fragment_len = num_heads, fragment_len
        self.num_fragments = num_fragments
        self.mask_ratio, self.num_masked, self.num_negatives = mask_ratio, n_mask, num_negatives
        self.recollection_weight = recollection_weight
        self.familiarity_weight = familiarity_weight
        self.teacher_weight = teacher_weight
        self.sampler = sampler

        # items and the per-step read
        self.item_proj = nn.Linear(input_dim, d_model)
        self.phase_emb = nn.Parameter(torch.randn(segment_len, d_model) * 0.02)
        self.read_q = nn.Linear(d_model, d_model)
        self.read_kv = nn.Linear(d_model, 2 * d_model)
        self.read_out = nn.Linear(d_model, d_model)
        self.norm_read = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Linear(2 * d_model, d_model)
        )
        self.norm_ff = nn.LayerNorm(d_model)
        # the writer: segment encoder, slot-to-item attention (eq. 1), GRU (eq. 2)
        self.slot_init = nn.Parameter(torch.randn(num_slots, d_model) / d_model**0.5)
        self.encoder = nn.TransformerEncoderLayer(
            d_model, num_heads, 2 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.w_slot = nn.Linear(d_model, d_model, bias=True)  # W1a, ba
        self.w_item = nn.Linear(d_model, d_model, bias=False)  # W2a
        self.w_align = nn.Linear(d_model, 1, bias=False)  # wa
        self.gru = nn.GRUCell(d_model, d_model)
        # trained by the rehearsal losses only
        self.rehearsal = RehearsalDecoder(d_model, num_heads, decoder_layers, fragment_len)
        self.teacher = HistoryTeacher(input_dim, hidden_dim=d_model)

    # state

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        device = self.device if device is None else device
        slots = self.slot_init.detach().to(device).expand(batch_size, -1, -1).clone()
        return {
            "slots": slots,
            "segment": torch.zeros(batch_size, self.segment_len, self.d_model, device=device),
            "phase": torch.zeros(batch_size, dtype=torch.long, device=device),
        }

    # the writer (eqs. 1-2)

    def write(self, slots: Tensor, features: Tensor) -> Tensor:
        """New slots from ``slots`` (B, K, d) and a segment's encoded items ``features`` (B, N, d).

        Eq. 1: ``alpha_kn = w^T tanh(W1 m_k + W2 f_n + b)``, normalised over the slots ``k``;
        ``l_k = sum_n alpha_kn f_n``. Eq. 2: ``m_k <- GRU(m_k, l_k)`` (input ``l_k``, hidden
        ``m_k``), the same cell for every slot.
        """
        a = self.w_slot(slots).unsqueeze(2) + self.w_item(features).unsqueeze(1)  # (B, K, N, d)
        alpha = torch.softmax(self.w_align(torch.tanh(a)).squeeze(-1), dim=1)  # over the slots
        aligned = alpha @ features  # (B, K, d): l_k = sum_n alpha_kn f_n
        b, k, d = slots.shape
        return self.gru(aligned.reshape(b * k, d), slots.reshape(b * k, d)).view(b, k, d)

    # the sequence path

    def forward(
        self, x: Tensor, state: State, episode_starts: Tensor
    ) -> tuple[Tensor, State, dict[str, Tensor]]:
        if acting_call(self) and x.shape[0] == 1:
            return self._act(x[0], state, episode_starts[0].to(torch.bool))
        trace = self.trace(x, state, episode_starts)
        # memories attended per step: the slots plus the segment so far
        size = self.num_slots + 1 + trace.phase.to(x.dtype).mean()
        return trace.y, trace.state, {"memory_size": size.detach()}

    def _act(
        self, x: Tensor, state: State, reset: Tensor
    ) -> tuple[Tensor, State, dict[str, Tensor]]:
        """One step without gradients (a rollout), equal to :meth:`trace` on one step, on an
        acting cache of the read's keys and values of the slots and of the open segment's items
        (instead of projecting the whole segment again); the segment encoder and the write run
        only when some env's segment ends (always on accelerators, which then read nothing back
        to the host). ``x`` (B, input_dim), ``reset`` (B,) bool."""
        stamp = cache_stamp(self, self.parameters())
        s_len, d = self.segment_len, self.d_model
        b = x.shape[0]
        h, dh = self.num_heads, d // self.num_heads
        pos = state["phase"] * ~reset  # (B,): the step's slot; 0 on an episode start
        init = self.slot_init.to(x.dtype).unsqueeze(0)
        slots = torch.where(reset[:, None, None], init, state["slots"].to(x.dtype))
        cache = cached(state, "segment", stamp)
        if cache is None:  # from the stored slots and open segment
            cache = {"slot_kv": self.read_kv(state["slots"].to(x.dtype)),
                     "item_kv": self.read_kv(state["segment"].to(x.dtype))}
        slot_kv = torch.where(reset[:, None, None], self.read_kv(init), cache["slot_kv"])
        item = self.item_proj(x) + self.phase_emb.index_select(0, pos)  # (B, d)
        slot = torch.arange(s_len, device=x.device)
        kept = (slot < pos.unsqueeze(1)).unsqueeze(-1)  # (B, S, 1): the segment's earlier items
        now = (slot == pos.unsqueeze(1)).unsqueeze(-1)
        item_kv = cache["item_kv"] * kept + self.read_kv(item).unsqueeze(1) * now  # (B, S, 2d)
        # the read: the step's item over the slots and over its segment so far (itself included)
        keys = torch.cat([slot_kv, item_kv], dim=1)  # (B, K + S, 2d)
        k, v = keys.view(b, -1, 2, h, dh).unbind(2)  # (B, K + S, h, dh)
        q = self.read_q(item).view(b, 1, h, dh) / dh**0.5
        seen = torch.cat([kept.new_ones(b, self.num_slots, 1), kept | now], dim=1)  # (B, K+S, 1)
        scores = (q * k).sum(-1).masked_fill(~seen, float("-inf"))  # (B, K + S, h)
        read = (torch.softmax(scores, dim=1).unsqueeze(-1) * v).sum(1).reshape(b, d)
        y = self.norm_read(item + self.read_out(read))
        y = self.norm_ff(y + self.ff(y))
        segment = state["segment"].to(x.dtype) * kept + item.unsqueeze(1) * now  # (B, S, d)
        end = pos == s_len - 1
        if x.device.type != "cpu" or bool(end.any()):  # a segment ends: encode it and write
            written = self.write(slots, self.encoder(segment))
            slots = torch.where(end[:, None, None], written, slots)
            slot_kv = torch.where(end[:, None, None], self.read_kv(slots), slot_kv)
        phase = (pos + 1) % s_len
        is_open = (phase > 0).view(-1, 1, 1)
        new_state = {"slots": slots, "segment": segment * is_open, "phase": phase}
        attach_cache(new_state, "segment", stamp, {"slot_kv": slot_kv, "item_kv": item_kv},
                     sources=("slots", "phase"))
        size = self.num_slots + 1 + pos.to(x.dtype).mean()
        return y.unsqueeze(0), new_state, {"memory_size": size}

    def _phase(self, x: Tensor, state: State, episode_starts: Tensor) -> Tensor:
        """(T, B) long: each step's position in its segment, counted from the episode start."""
        t_len = x.shape[0]
        steps = torch.arange(t_len, device=x.device).unsqueeze(1)
        reset = last_start(episode_starts.bool())
        since = torch.where(reset >= 0, steps - reset, state["phase"].unsqueeze(0) + steps)
        return since % self.segment_len

    def trace(self, x: Tensor, state: State, episode_starts: Tensor) -> Trace:
        """Run the memory over ``x`` (T, B, D), vectorised over envs with masks.

        The slots change only at segment ends, at most ``R = (T - 1) // S + 1`` times per env in
        ``T`` steps, so the writes run as ``R`` rounds (round ``r`` is each env's ``r``-th segment
        end); every step then reads the slot version current at that step.
        """
        t_len, batch, _ = x.shape
        s_len, d, device = self.segment_len, self.d_model, x.device
        starts = episode_starts.bool()
        steps = torch.arange(t_len, device=device).unsqueeze(1).expand(t_len, batch)
        rows = torch.arange(batch, device=device)
        phase = self._phase(x, state, starts)  # (T, B)
        reset = last_start(starts)  # (T, B), -1 before the chunk's first reset
        base = self.item_proj(x)  # (T, B, d)
        items = base + self.phase_emb[phase]
        # ext[S + t] is the item of chunk step t; the state's partial segment (``phase`` items)
        # sits right-aligned before it, so ext[S + t - o] is the item ``o`` steps before ``t``
        j = torch.arange(s_len, device=device)
        src = j - s_len + state["phase"].unsqueeze(1)  # (B, S) phase of the buffered item
        buffered = state["segment"].to(x.dtype).gather(
            1, src.clamp(min=0).unsqueeze(-1).expand(-1, -1, d)
        ) * (src >= 0).unsqueeze(-1).to(x.dtype)
        ext = torch.cat([buffered.transpose(0, 1), items])  # (S + T, B, d)

        # the writes, round by round
        seg_end = phase == s_len - 1
        ends_upto = torch.cumsum(seg_end.long(), dim=0)  # (T, B) segment ends at or before t
        n_rounds = (t_len - 1) // s_len + 1
        round_of = torch.where(seg_end, ends_upto - 1, torch.full_like(ends_upto, n_rounds))
        tau = torch.full((n_rounds + 1, batch), t_len, dtype=torch.long, device=device)
        tau.scatter_(0, round_of, torch.where(seg_end, steps, torch.full_like(steps, t_len)))
        tau = tau[:n_rounds]  # (R, B) time of each round's segment end, T if none
        done = tau < t_len
        tau_c = tau.clamp(max=t_len - 1)
        seg_index = (tau_c + 1).unsqueeze(-1) + j  # steps tau - S + 1 .. tau, in ext
        seg_items = ext[seg_index, rows.view(1, batch, 1)].reshape(n_rounds * batch, s_len, d)
        if device.type == "cpu":
            # encode only the segments that end (round r of a row without an r-th segment end
            # is thrown away); the host read is free on CPU, and accelerators encode them all
            ends = torch.nonzero(done.reshape(-1)).squeeze(1)
            features = seg_items.new_zeros(seg_items.shape).index_copy(
                0, ends, self.encoder(seg_items.index_select(0, ends))
            )
        else:
            features = self.encoder(seg_items)
        features = features.view(n_rounds, batch, s_len, d)
        prev_tau = torch.cat([tau.new_full((1, batch), -1), tau[:-1]])
        fresh = reset.gather(0, tau_c) > prev_tau  # an episode started since the previous write
        init = self.slot_init.to(x.dtype).expand(batch, -1, -1)
        slots = state["slots"].to(x.dtype)
        versions = [slots]
        for r in range(n_rounds):
            start_from = torch.where(fresh[r].view(-1, 1, 1), init, slots)
            slots = torch.where(done[r].view(-1, 1, 1), self.write(start_from, features[r]), slots)
            versions.append(slots)
        versions.append(init)
        history = torch.stack(versions)  # (R + 2, B, K, d); the last entry is the initial slots

        def version(n_writes: Tensor) -> Tensor:
            # slots after ``n_writes`` rounds, or the initial slots if an episode started since
            last_write = tau_c.new_full((1, batch), -1)
            last = torch.cat([last_write, tau]).gather(0, n_writes)
            return torch.where(reset > last, torch.full_like(n_writes, n_rounds + 1), n_writes)

        read_version = version(ends_upto - seg_end.long())  # writes strictly before t
        after_version = version(ends_upto)

        # the read: each step's item attends to its slots and to its segment so far; the
        # segment is read as S shifted views of ext (offset o = o steps back, valid for o <= phase)
        h, dh = self.num_heads, d // self.num_heads
        k_slot, v_slot = self.read_kv(history).chunk(2, dim=-1)  # (R + 2, B, K, d)
        k_ext, v_ext = self.read_kv(ext).chunk(2, dim=-1)  # (S + T, B, d)
        q = self.read_q(items).view(t_len, batch, 1, h, dh) / dh**0.5
        k_read = k_slot[read_version, rows].view(t_len, batch, -1, h, dh)  # (T, B, K, h, dh)
        v_read = v_slot[read_version, rows].view(t_len, batch, -1, h, dh)
        k_back = [k_ext[s_len - o : s_len - o + t_len] for o in range(s_len)]
        scores_slot = (q * k_read).sum(-1)  # (T, B, K, h)
        scores_item = torch.stack(
            [(q[:, :, 0] * k.view(t_len, batch, h, dh)).sum(-1) for k in k_back], dim=2
        )  # (T, B, S, h)
        too_old = (j.view(1, 1, -1) > phase.unsqueeze(-1)).unsqueeze(-1)  # (T, B, S, 1)
        scores_item = scores_item.masked_fill(too_old, float("-inf"))
        weights = torch.softmax(torch.cat([scores_slot, scores_item], dim=2), dim=2)
        w_slot, w_item = weights.unsqueeze(-1).split([self.num_slots, s_len], dim=2)
        read = (w_slot * v_read).sum(2)  # (T, B, h, dh)
        for o in range(s_len):
            v_o = v_ext[s_len - o : s_len - o + t_len].view(t_len, batch, h, dh)
            read = read + w_item[:, :, o] * v_o
        read = read.reshape(t_len, batch, d)
        y = self.norm_read(items + self.read_out(read))
        y = self.norm_ff(y + self.ff(y))

        # the state after the last step
        last_phase = phase[-1]
        new_phase = (last_phase + 1) % s_len
        keep = (j < new_phase.unsqueeze(-1)).unsqueeze(-1).to(x.dtype)  # (B, S, 1)
        seg_index = (s_len + t_len - new_phase.unsqueeze(-1) + j).clamp(max=s_len + t_len - 1)
        segment = ext[seg_index, rows.view(batch, 1)] * keep  # left-aligned, in phase order
        new_state = {"slots": history[after_version[-1], rows], "segment": segment,
                     "phase": new_phase}
        return Trace(y, new_state, base, seg_end, history, after_version, phase)

    # rehearsal (section 3.3)

    def rehearse(
        self, x: Tensor, episode_starts: Tensor, state: State, targets: Tensor | None = None
    ) -> RehearsalOutput:
        """Rehearse history fragments of a stored sequence against the memory that saw them.

        Each fragment is rehearsed against the slots at the end of its episode within the
        sequence (the last step before the next episode start, or the last step). Only fragments
        already written into those slots (a segment ended at or after the fragment's last step)
        are rehearsal candidates. ``targets`` (T, B) train the teacher; without them, or with the
        uniform sampler, fragments are picked uniformly at random.
        """
        t_len, batch, _ = x.shape
        starts = episode_starts.bool()
        trace = self.trace(x, state, starts)
        frags = build_fragments(x, starts, self.fragment_len)
        zero = x.new_zeros(())
        losses = {"loss_recollection": zero, "loss_familiarity": zero, "loss_teacher": zero}
        importance = torch.ones_like(frags.start, dtype=x.dtype)
        use_teacher = self.sampler == "teacher" and targets is not None
        if use_teacher:
            out = self.teacher(x.detach(), starts, frags)
            losses["loss_teacher"] = self.teacher_weight * self.teacher.loss(out, targets)
            importance = out.importance
        # the memory each fragment is rehearsed against, and whether it holds the fragment
        last = frags.start.clamp(max=t_len - 1)
        episode_end = next_start(starts).gather(0, last) - 1  # (C, B)
        frag_end = (frags.start + self.fragment_len - 1).clamp(max=t_len - 1)
        ends = torch.cumsum(trace.segment_end.long(), dim=0)
        ends_before = torch.where(frag_end > 0, ends.gather(0, (frag_end - 1).clamp(min=0)), 0)
        written = ends.gather(0, episode_end) > ends_before
        candidates = frags.valid & written
        scores = importance if use_teacher else torch.rand_like(importance)
        picked, ok = select_fragments(scores, candidates, self.num_fragments, halves=use_teacher)
        if picked.shape[0] == 0:  # sequence shorter than a fragment
            return RehearsalOutput(losses, zero[None, None], zero[None, None], picked, ok,
                                   importance, frags)
        rows = torch.arange(batch, device=x.device)
        items = fragment_items(trace.items, frags)[picked, rows]  # (k, B, N, d)
        version = trace.after_version[episode_end[picked, rows], rows]  # (k, B)
        memory = trace.slot_history[version, rows]  # (k, B, K, d)
        rec, fam, p_pos, p_neg = self._rehearsal_losses(items, memory, trace.items, frags, picked)
        weight = ok.to(x.dtype)
        count = weight.sum().clamp(min=1.0)
        losses["loss_recollection"] = self.recollection_weight * (rec * weight).sum() / count
        losses["loss_familiarity"] = self.familiarity_weight * (fam * weight).sum() / count
        return RehearsalOutput(losses, p_pos, p_neg, picked, ok, importance, frags)

    def _rehearsal_losses(
        self, items: Tensor, memory: Tensor, pool: Tensor, frags: Fragments, picked: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-fragment recollection (eq. 3) and familiarity (eq. 4) losses, (k, B) each."""
        k, batch, n, d = items.shape
        t_len = pool.shape[0]
        device = items.device
        order = torch.rand(k, batch, n, device=device).argsort(dim=-1)
        rank = order.argsort(dim=-1)  # random rank of each position
        masked = rank < self.num_masked
        n_replace = max(1, round(0.5 * (n - self.num_masked)))
        replaced = (rank >= self.num_masked) & (rank < self.num_masked + n_replace)
        # replacements come from other envs' streams (other steps when there is one env)
        flat = pool.reshape(t_len * batch, d)
        rows = torch.arange(batch, device=device).view(1, batch, 1)
        other = (rows + torch.randint(1, max(batch, 2), (k, batch, n), device=device)) % batch
        when = torch.randint(0, t_len, (k, batch, n), device=device)
        negative = torch.where(replaced.unsqueeze(-1), flat[when * batch + other], items)
        both = torch.cat([items, negative]).reshape(2 * k * batch, n, d)
        mem = memory.repeat(2, 1, 1, 1).reshape(2 * k * batch, self.num_slots, d)
        recall, logit = self.rehearsal(both, masked.repeat(2, 1, 1).reshape(-1, n), mem)
        recall = recall[: k * batch].view(k, batch, n, d)
        logit_pos, logit_neg = logit.view(2, k, batch)
        familiarity = F.softplus(-logit_pos) + F.softplus(logit_neg)  # -log s+ - log(1 - s-)
        # recollection: the true item against J items from other positions of the sequence
        start = frags.start[picked, rows.view(1, batch)].clamp(max=t_len - 1)
        times = (start.unsqueeze(-1) + torch.arange(n, device=device)).clamp(max=t_len - 1)
        true_index = times * batch + rows  # (k, B, N) into the flat pool
        shift = torch.randint(1, t_len * batch, (k, batch, n, self.num_negatives), device=device)
        neg_index = (true_index.unsqueeze(-1) + shift) % (t_len * batch)
        targets = flat.detach()
        candidates = torch.cat([targets[true_index].unsqueeze(-2), targets[neg_index]], dim=-2)
        logits = (recall.unsqueeze(-2) * candidates).sum(-1)  # (k, B, N, 1 + J)
        nll = torch.logsumexp(logits, dim=-1) - logits[..., 0]
        mask_w = masked.to(nll.dtype)
        recollection = (nll * mask_w).sum(-1) / mask_w.sum(-1)
        return recollection, familiarity, torch.sigmoid(logit_pos), torch.sigmoid(logit_neg)

    def auxiliary_losses(
        self, x: Tensor, episode_starts: Tensor, state: State, targets: Tensor | None = None
    ) -> dict[str, Tensor]:
        """``loss_recollection``, ``loss_familiarity``, ``loss_teacher``, already weighted."""
        return self.rehearse(x, episode_starts, state, targets).losses

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_slots={self.num_slots}, segment_len={self.segment_len}, "
            f"fragment_len={self.fragment_len}, sampler={self.sampler!r}"
        )
