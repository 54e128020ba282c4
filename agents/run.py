"""What surrounds the training loop of one ``learn`` call, so that ``learn`` reads as the loop:

* the run directory (claimed for a new run, :mod:`agents.rundir`) and the locks on it and on the
  checkpoint, stale temp files of interrupted writes removed; one line saying where the logs and
  checkpoints go;
* progress and TensorBoard logging of every update;
* the update guard: an update with a non-finite gradient is skipped, ``max_nonfinite`` in a row
  stop the run (:class:`NonFiniteLossError`); a value error or loss far beyond the return scale is
  warned about (log line and TensorBoard), once per :data:`WARN_EVERY` updates while it lasts;
* checkpoints every ``checkpoint_every`` updates and ``checkpoint_minutes`` minutes, at the end,
  and on SIGINT or SIGTERM: the first signal lets the current update finish, writes a checkpoint
  and ends ``learn`` with :class:`TrainingInterrupted`; a second Ctrl-C stops at once
  (``KeyboardInterrupt``) without one. A repeated SIGTERM changes nothing (``torchrun`` forwards
  one to its ranks after the terminal's Ctrl-C).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import write_checkpoint
from .logger import RunLogger, update_scalars
from .rundir import RunLock, RunLockedError, claim_run_dir, remove_stale_temp_files, run_name

if TYPE_CHECKING:
    from .trainer import ActorCriticTrainer

__all__ = ["DIVERGENCE_RATIO", "NonFiniteLossError", "TrainingInterrupted", "TrainingRun"]

#: an update whose RMS value error or |loss| exceeds this many times the return scale (the
#: largest |return| of its rollout, at least 1) is reported as diverging
DIVERGENCE_RATIO = 100.0
#: updates between two divergence warnings of one spell
WARN_EVERY = 10


class NonFiniteLossError(RuntimeError):
    """Raised after ``max_nonfinite`` updates in a row with a non-finite loss or gradient."""


class TrainingInterrupted(RuntimeError):
    """``learn`` stopped by SIGINT or SIGTERM, after the update it was in and its checkpoint.

    Attributes: ``signum``, ``step`` (``num_timesteps``), ``checkpoint`` (its path, or None when
    the run writes none) and ``exit_status`` (``128 + signum``, the shell's convention)."""

    def __init__(self, signum: int, step: int, update: int, checkpoint: Path | None) -> None:
        name = signal.Signals(signum).name
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (the run has none)"
        super().__init__(f"stopped by {name} at step {step} (update {update}); {where}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_status = 128 + signum


class TrainingRun:
    """One ``learn`` call of ``agent`` towards ``total_timesteps``, as a context manager (the
    locks, signal handlers and logs are released however the loop ends). ``new_run``: the
    counters start from zero (a new run directory if the agent had one from an earlier call)."""

    def __init__(self, agent: ActorCriticTrainer, total_timesteps: int, progress_bar: bool,
                 new_run: bool = True) -> None:
        self.agent, self.total, self.progress_bar, self.new_run = (
            agent, total_timesteps, progress_bar, new_run)
        self.lock = RunLock(None, None)
        self.logger: RunLogger | None = None
        self.signals = _StopSignals()
        self.last_write = time.monotonic()
        self.last_warning = -WARN_EVERY

    def __enter__(self) -> TrainingRun:
        agent = self.agent
        agent.total_timesteps = self.total
        main = agent.dist.is_main
        try:
            self._open_run()
            self.logger = RunLogger(
                agent.log_dir if main else None, self.total, agent.num_timesteps,
                progress_bar=self.progress_bar and main,
                log_every=agent.config.log_every if main else 0,
            )
            if main and (agent.log_dir or agent.checkpoint_path):
                self.logger.message(self._where())
            self.signals.notify = self.logger.message if main else None
            self.signals.install()
            agent.run_logger = self.logger
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.agent.run_logger = None
        self.signals.uninstall()
        if self.logger is not None:
            self.logger.close()
        self.lock.release()

    # the update

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
        assert logger is not None
        stats = self._guard(stats)
        timing = {
            "time/fps": logger.fps(agent.num_timesteps),
            "time/rollout_s": t_update - t_rollout,
            "time/update_s": time.perf_counter() - t_update,
            "charts/learning_rate": agent.optimizer.param_groups[0]["lr"],
        }
        scalars = update_scalars(agent.dist, stats, rollout_aux, episodes, timing)
        # coefficients the memory adapts between updates (a memory budget), from the rollout's
        # diagnostics averaged over the ranks (the same on every rank)
        diagnostics = {k.removeprefix("memory/"): v for k, v in scalars.items()
                       if k.startswith("memory/")}
        scalars.update({f"memory/{k}": v
                        for k, v in agent.policy.memory.after_rollout(diagnostics).items()})
        self._check_scale(scalars)
        logger.scalars(scalars, agent.num_timesteps)
        logger.progress(agent.num_timesteps, agent.n_updates, scalars)
        agent.last_stats = scalars
        if "charts/success_rate" in scalars:
            agent.last_success_rate = scalars["charts/success_rate"]

    def end_update(self, callback: Callable[[ActorCriticTrainer], bool | None] | None) -> bool:
        """The periodic checkpoint, then ``callback``; whether to stop (under several ranks: on
        every rank when the callback returned False on any). A signal received on any rank
        ends the run here, checkpoint written (:class:`TrainingInterrupted`)."""
        agent, cfg = self.agent, self.agent.config
        due = bool(cfg.checkpoint_every) and agent.n_updates % cfg.checkpoint_every == 0
        if cfg.checkpoint_minutes and not due:  # agreed: the ranks' clocks differ
            due = agent.dist.any(time.monotonic() - self.last_write >= 60 * cfg.checkpoint_minutes)
        if due:
            self.checkpoint()
        stop = callback is not None and callback(agent) is False
        stop, signalled = agent.dist.any_each([stop, self.signals.received is not None])
        if signalled:
            self.checkpoint()
            raise TrainingInterrupted(self.signals.received or signal.SIGTERM,
                                      agent.num_timesteps, agent.n_updates, agent.checkpoint_path)
        return stop

    def checkpoint(self) -> None:
        """Write ``learn``'s checkpoint, unless the run has none or its last update was skipped
        (the last good checkpoint is kept)."""
        agent = self.agent
        if agent.checkpoint_path is not None and agent.nonfinite_in_a_row == 0:
            write_checkpoint(agent, agent.checkpoint_path)
            self.last_write = time.monotonic()

    # helpers

    def _open_run(self) -> None:
        """Claim a run directory (a new run that logs) and lock the run's directory and
        checkpoint: on rank 0, its outcome sent to every rank, so all go on or all raise."""
        agent = self.agent
        if self.new_run and agent._claimed_log_dir:
            agent.log_dir = None  # an earlier learn() of this agent had its own run
            if not agent._checkpoint_given:
                agent.checkpoint_path = None
        claim = agent.tensorboard_log is not None and agent.log_dir is None
        outcome: tuple[Any, Any, str | None] = (agent.log_dir, agent.checkpoint_path, None)
        if agent.dist.is_main:
            try:
                if claim:
                    name = run_name(str(agent.env_id), agent.policy_name, agent.config.seed)
                    agent.log_dir = claim_run_dir(agent.tensorboard_log, name)
                    if not agent._checkpoint_given:
                        agent.checkpoint_path = agent.log_dir / "checkpoint.pt"
                self.lock = RunLock(agent.log_dir, agent.checkpoint_path)
                self.lock.acquire()
                if agent.checkpoint_path is not None:
                    remove_stale_temp_files(agent.checkpoint_path)
                outcome = (agent.log_dir, agent.checkpoint_path, None)
            except (RunLockedError, OSError) as err:
                outcome = (None, None, str(err))
        agent.log_dir, agent.checkpoint_path, error = agent.dist.broadcast_object(outcome)
        agent._claimed_log_dir = agent._claimed_log_dir or claim
        if error is not None:
            raise RunLockedError(error)

    def _where(self) -> str:
        """Where this run writes: its logs, its checkpoint and when."""
        agent, cfg = self.agent, self.agent.config
        logs = f"logs in {agent.log_dir}" if agent.log_dir else "no logs"
        if agent.checkpoint_path is None:
            return f"{logs}; no checkpoints"
        when = [f"every {cfg.checkpoint_every} updates"] if cfg.checkpoint_every else []
        when += [f"every {cfg.checkpoint_minutes:g} min"] if cfg.checkpoint_minutes else []
        when += ["at the end and on SIGINT/SIGTERM"]
        return f"{logs}; checkpoints to {agent.checkpoint_path} ({', '.join(when)})"

    def _guard(self, stats: dict[str, float] | None) -> dict[str, float]:
        """Count a skipped update (``stats`` None: agreed by all ranks, whose averaged gradient
        is non-finite); after ``max_nonfinite`` in a row, :class:`NonFiniteLossError`."""
        agent, logger = self.agent, self.logger
        assert logger is not None
        if stats is not None:
            agent.nonfinite_in_a_row = 0
            return stats
        agent.nonfinite_in_a_row += 1
        if agent.dist.is_main:
            logger.message(f"update {agent.n_updates}: non-finite loss or gradient, update "
                           f"skipped ({agent.nonfinite_in_a_row} in a row)")
        logger.scalars({"losses/nonfinite_skipped": 1.0}, agent.num_timesteps)
        limit = agent.config.max_nonfinite
        if agent.nonfinite_in_a_row >= limit:
            ckpt = agent.checkpoint_path
            where = f"; the last good checkpoint is {ckpt}" if ckpt and ckpt.exists() else ""
            raise NonFiniteLossError(
                f"{agent.nonfinite_in_a_row} updates in a row had a non-finite loss or gradient "
                f"(max_nonfinite={limit}); stopping{where}. Try a lower lr or max_grad_norm."
            )
        return {}

    def _check_scale(self, scalars: dict[str, float]) -> None:
        """The divergence guard: ``losses/scale_ratio`` (the RMS value error or |loss|, whichever
        is larger, over the return scale) is logged; beyond :data:`DIVERGENCE_RATIO`, a
        warning."""
        if "losses/value_loss" not in scalars:  # a skipped update
            return
        agent = self.agent
        scale = max(1.0, scalars.get("charts/return_scale", 0.0))
        error = max(math.sqrt(max(2 * scalars["losses/value_loss"], 0.0)),
                    abs(scalars.get("losses/loss", 0.0)))
        scalars["losses/scale_ratio"] = ratio = error / scale
        if ratio > DIVERGENCE_RATIO and agent.n_updates - self.last_warning >= WARN_EVERY:
            self.last_warning = agent.n_updates
            if agent.dist.is_main and self.logger is not None:
                self.logger.warning(
                    f"update {agent.n_updates}: value error / loss {error:.3g} is {ratio:.3g}x "
                    f"the return scale {scale:.3g}: training is diverging (lr "
                    f"{agent.optimizer.param_groups[0]['lr']:g}; try a lower lr or "
                    "max_grad_norm)", agent.num_timesteps)


class _StopSignals:
    """SIGINT and SIGTERM handlers while a run trains (main thread only: Python delivers signals
    there). The first signal is recorded for :meth:`TrainingRun.end_update`; a second SIGINT
    raises ``KeyboardInterrupt`` at once; a repeated SIGTERM is ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self.notify: Callable[[str], None] | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:  # an ignored signal stays ignored
                self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            if self.notify is not None:
                self.notify(f"{signal.Signals(signum).name}: stopping after this update and "
                            "writing a checkpoint (Ctrl-C again stops at once, without one)")
        elif signum == signal.SIGINT:
            self.uninstall()
            raise KeyboardInterrupt
