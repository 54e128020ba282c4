"""Run directories and locks: a new run gets a directory of its own (created exclusively, so two
runs started in the same second never share one), and a run holds a lock on its directory and
on its checkpoint while it trains, so a second writer (another run, or a second resume of the
same checkpoint) is refused with a clear error instead of mixing logs and overwriting
checkpoints. Temp files that an interrupted checkpoint write left behind are removed once the
lock is held.

The locks are ``flock`` locks on small hidden files (``.run.lock`` in the run directory,
``.<checkpoint name>.lock`` next to the checkpoint): the operating system releases them when the
process ends, however it ends (``kill -9`` included), so a lock never outlives its run. Where
``fcntl`` is not available (Windows) runs are not locked.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["RunLock", "RunLockedError", "claim_run_dir", "remove_stale_temp_files", "run_name"]


class RunLockedError(RuntimeError):
    """Another process is writing this run directory or checkpoint."""


def run_name(env_id: str, policy: str, seed: int) -> str:
    """``<env>__<policy>__<seed>__<unix time>`` (slashes and colons in the env id become dashes)."""
    return f"{env_id.replace('/', '-').replace(':', '-')}__{policy}__{seed}__{int(time.time())}"


def claim_run_dir(root: str | Path, name: str) -> Path:
    """Create ``root/name``, or ``root/name-2``, ``-3``, ... if taken: a directory no other run
    has (``mkdir`` is atomic, so two runs racing for a name get different ones)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = root / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RunLockedError(f"no free run directory name under {str(root)!r} for {name!r}")


class RunLock:
    """Exclusive locks on a run's directory and checkpoint, held from :meth:`acquire` to
    :meth:`release` (or the end of the process)."""

    def __init__(self, log_dir: Path | None, checkpoint: Path | None) -> None:
        self.targets: list[tuple[Path, str]] = []
        if log_dir is not None:
            self.targets.append((Path(log_dir) / ".run.lock", f"run directory {str(log_dir)!r}"))
        if checkpoint is not None:
            ckpt = Path(checkpoint)
            self.targets.append((ckpt.with_name(f".{ckpt.name}.lock"),
                                 f"checkpoint {str(ckpt)!r}"))
        self._fds: list[int] = []

    def acquire(self) -> None:
        """Take every lock, or none: :class:`RunLockedError` naming what is in use and by which
        process."""
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform
            return
        for path, what in self.targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                self.release()
                raise RunLockedError(
                    f"{what} is in use by another run (process {owner}); wait for it to end, or "
                    "start a new run (it gets a directory of its own)"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._fds.append(fd)

    def release(self) -> None:
        """Drop the locks (the lock files stay: removing them could let two runs lock two
        different files of one name)."""
        for fd in self._fds:
            os.close(fd)  # closing the descriptor releases its flock
        self._fds = []


def remove_stale_temp_files(checkpoint: Path) -> list[Path]:
    """Remove the ``.<name>.*.tmp`` files of interrupted writes of ``checkpoint`` (call it while
    holding the checkpoint's lock, so no live write's temp file is touched); returns them."""
    checkpoint = Path(checkpoint)
    if not checkpoint.parent.is_dir():
        return []
    stale = sorted(checkpoint.parent.glob(f".{checkpoint.name}.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
