"""Training logs: TensorBoard scalars under fixed namespaces (``charts/``, ``losses/``,
``memory/``, ``time/``) and progress (a tqdm bar on a terminal, plain lines otherwise)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .distributed import Distributed, average_dicts

__all__ = ["RunLogger", "episode_scalars", "update_scalars"]


class RunLogger:
    """Writes scalars to TensorBoard and reports progress.

    Args:
        log_dir: the run's directory (created); None logs nothing to disk.
        total_steps: steps the run aims at (for the progress bar and ETA).
        start_step: steps already done (a resumed run): TensorBoard drops whatever an earlier
            process logged after this step in the same directory (``purge_step``), so a resumed
            run's curves do not overlap those of the run it continues.
        progress_bar: show a tqdm bar when stderr is a terminal.
        log_every: updates between plain progress lines when stderr is not a terminal (or when the
            bar is off); 0 prints none.
    """

    def __init__(
        self,
        log_dir: str | Path | None,
        total_steps: int,
        start_step: int = 0,
        *,
        progress_bar: bool = True,
        log_every: int = 10,
    ) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.writer = None
        if self.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            purge = start_step + 1 if start_step > 0 else None
            self.writer = SummaryWriter(str(self.log_dir), purge_step=purge)
        self.total_steps = total_steps
        self.start_step = start_step
        self.log_every = log_every
        self.t0 = time.perf_counter()
        self.bar = None
        if progress_bar and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
        self.last_step = start_step
        self.success_rate: float | None = None

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Write ``{tag: value}`` at ``step``."""
        if self.writer is not None:
            for tag, v in values.items():
                self.writer.add_scalar(tag, v, step)

    def fps(self, step: int) -> float:
        return (step - self.start_step) / max(time.perf_counter() - self.t0, 1e-9)

    def progress(self, step: int, update: int, extra: dict[str, float]) -> None:
        """Advance the bar (or print a line every ``log_every`` updates)."""
        fps = self.fps(step)
        if "charts/success_rate" in extra:
            self.success_rate = extra["charts/success_rate"]
        post = {"fps": f"{fps:.0f}"}
        if self.success_rate is not None:
            post["success"] = f"{self.success_rate:.2f}"
        if self.bar is not None:
            self.bar.update(step - self.last_step)
            self.bar.set_postfix(post)
        elif self.log_every and update % self.log_every == 0:
            eta = (self.total_steps - step) / max(fps, 1e-9)
            parts = " ".join(f"{k}={v}" for k, v in post.items())
            print(
                f"update {update} step {step}/{self.total_steps} {parts} eta={eta:.0f}s",
                file=sys.stderr,
                flush=True,
            )
        self.last_step = step

    def message(self, text: str) -> None:
        """A line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def warning(self, text: str, step: int) -> None:
        """A warning line, also kept in TensorBoard (text tab, tag ``warnings``)."""
        self.message(f"warning: {text}")
        if self.writer is not None:
            self.writer.add_text("warnings", text, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def episode_scalars(episodes: list[dict[str, Any]]) -> dict[str, float]:
    """``charts/`` means over the ended episodes: return, length, count, success where the env
    reports it, and each of the task's own measures (an episode's ``"metrics"``, e.g.
    ``charts/rooms_reached``) over the episodes that report it."""
    if not episodes:
        return {}
    out = {
        "charts/episodic_return": float(np.mean([e["return"] for e in episodes])),
        "charts/episode_length": float(np.mean([e["length"] for e in episodes])),
        "charts/episodes": float(len(episodes)),
    }
    succ = [e["success"] for e in episodes if "success" in e]
    if succ:
        out["charts/success_rate"] = float(np.mean(succ))
    measures: dict[str, list[float]] = {}
    for e in episodes:
        for name, value in e.get("metrics", {}).items():
            measures.setdefault(name, []).append(value)
    for name, values in measures.items():
        out.setdefault(f"charts/{name}", float(np.mean(values)))  # (never over the above)
    return out


def update_scalars(
    dist: Distributed,
    stats: dict[str, float],
    rollout_aux: dict[str, float],
    episodes: list[dict[str, Any]],
    extra: dict[str, float],
) -> dict[str, float]:
    """One update's scalars: the update's losses, the rollout's memory diagnostics, the ended
    episodes' ``charts/``, then ``extra`` (times, learning rate). Under several ranks a
    collective: episodes of every rank, losses and memory statistics averaged over the ranks (the
    same values on every rank)."""
    scalars = {**stats, **rollout_aux}
    if dist.enabled:
        gathered = dist.all_gather_object((episodes, scalars))
        episodes = [e for eps, _ in gathered for e in eps]
        scalars = average_dicts([sc for _, sc in gathered])
    scalars.update(episode_scalars(episodes))
    scalars.update(extra)
    return scalars
