"""What surrounds the training loop of one ``learn`` call: progress and TensorBoard logging, the
update guard (an update with a non-finite gradient is skipped; ``max_nonfinite`` in a row stop
the run) and the checkpoints (every ``checkpoint_every`` updates and at the end), so that the
trainer's ``learn`` reads as the loop itself."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .checkpoint import write_checkpoint
from .logger import RunLogger, update_scalars

if TYPE_CHECKING:
    from .trainer import ActorCriticTrainer

__all__ = ["NonFiniteLossError", "TrainingRun"]


class NonFiniteLossError(RuntimeError):
    """Raised after ``max_nonfinite`` updates in a row with a non-finite loss or gradient."""


class TrainingRun:
    """One ``learn`` call of ``agent`` towards ``total_timesteps``; a context manager that closes
    the logs however the loop ends."""

    def __init__(self, agent: ActorCriticTrainer, total_timesteps: int, progress_bar: bool):
        self.agent = agent
        main = agent.dist.is_main
        self.logger = RunLogger(
            agent.log_dir if main else None, total_timesteps, agent.num_timesteps,
            progress_bar=progress_bar and main, log_every=agent.config.log_every if main else 0,
        )

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.logger.close()

    def record(
        self,
        stats: dict[str, float] | None,
        rollout_aux: dict[str, float],
        episodes: list[dict[str, Any]],
        t_rollout: float,
        t_update: float,
    ) -> None:
        """Log the update that just ended (``stats`` None: skipped) with the rollout it used,
        started at ``perf_counter`` times ``t_rollout`` and ``t_update``."""
        agent, logger = self.agent, self.logger
        stats = self._guard(stats)
        timing = {
            "time/fps": logger.fps(agent.num_timesteps),
            "time/rollout_s": t_update - t_rollout,
            "time/update_s": time.perf_counter() - t_update,
            "charts/learning_rate": agent.optimizer.param_groups[0]["lr"],
        }
        scalars = update_scalars(agent.dist, stats, rollout_aux, episodes, timing)
        logger.scalars(scalars, agent.num_timesteps)
        logger.progress(agent.num_timesteps, agent.n_updates, scalars)
        agent.last_stats = scalars
        if "charts/success_rate" in scalars:
            agent.last_success_rate = scalars["charts/success_rate"]

    def end_update(self, callback: Callable[[ActorCriticTrainer], bool | None] | None) -> bool:
        """The periodic checkpoint, then ``callback``; whether to stop (under several ranks: on
        every rank when the callback returned False on any)."""
        agent = self.agent
        every = agent.config.checkpoint_every
        if every and agent.n_updates % every == 0:
            self.checkpoint()
        stop = callback is not None and callback(agent) is False
        return agent.dist.any(stop)

    def checkpoint(self) -> None:
        """Write ``learn``'s checkpoint, unless the run has none or its last update was skipped
        (the last good checkpoint is kept)."""
        agent = self.agent
        if agent.checkpoint_path is not None and agent.nonfinite_in_a_row == 0:
            write_checkpoint(agent, agent.checkpoint_path)

    def _guard(self, stats: dict[str, float] | None) -> dict[str, float]:
        """Count a skipped update (``stats`` None: agreed by all ranks, whose averaged gradient
        is non-finite); after ``max_nonfinite`` in a row, :class:`NonFiniteLossError`."""
        agent = self.agent
        if stats is not None:
            agent.nonfinite_in_a_row = 0
            return stats
        agent.nonfinite_in_a_row += 1
        if agent.dist.is_main:
            self.logger.message(f"update {agent.n_updates}: non-finite loss or gradient, update "
                                f"skipped ({agent.nonfinite_in_a_row} in a row)")
        self.logger.scalars({"losses/nonfinite_skipped": 1.0}, agent.num_timesteps)
        limit = agent.config.max_nonfinite
        if agent.nonfinite_in_a_row >= limit:
            ckpt = agent.checkpoint_path
            where = f"; the last good checkpoint is {ckpt}" if ckpt and ckpt.exists() else ""
            raise NonFiniteLossError(
                f"{agent.nonfinite_in_a_row} updates in a row had a non-finite loss or gradient "
                f"(max_nonfinite={limit}); stopping{where}. Try a lower lr or max_grad_norm."
            )
        return {}
