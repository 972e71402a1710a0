"""One writer per run folder: an OS lock held by the trainer for its whole life.

A trainer takes an exclusive ``flock`` on ``<run>/train.lock`` before it reads or writes
anything else in the folder, writes its pid into that file, and keeps the file open until
it exits; the kernel drops the lock when the process dies, however it dies (SIGKILL too),
so a stale lock cannot outlive its trainer. A second trainer on the same folder (two
``--resume``, a double key press, two apps) fails to take it and stops at once.

Readers (the app's resume and delete, ``orpo-train --resume``) ask :func:`holder`, which
probes with a shared lock that it drops at once. A trainer that happens to start during
such a probe retries for a moment (:data:`ACQUIRE_PATIENCE_S`) instead of failing.

Pure module: no mlx, no textual.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainer.pure.run_folder import RunFolder

__all__ = ["RunLock", "RunBusy", "holder", "ACQUIRE_PATIENCE_S"]

# Longer than any reader's probe (microseconds), far shorter than a user notices.
ACQUIRE_PATIENCE_S = 0.5


class RunBusy(Exception):
    """Another live process holds the run's lock."""

    def __init__(self, run_dir: Any, pid: int | None):
        self.run_dir, self.pid = Path(run_dir), pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"{self.run_dir} is being trained by {who}")


class RunLock:
    """The trainer's hold on its run folder; :meth:`acquire` raises :class:`RunBusy`."""

    def __init__(self, run_dir: Any):
        self.run_dir = Path(run_dir)
        self.path = RunFolder(run_dir).lock
        self._fd: int | None = None

    def acquire(self, patience: float = ACQUIRE_PATIENCE_S) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + patience
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _read_pid(fd)
                    os.close(fd)
                    raise RunBusy(self.run_dir, pid) from None
                time.sleep(0.02)
            except OSError:
                os.close(fd)
                raise
        # The pid is for readers' messages only; the lock itself is the truth.
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None


def holder(run_dir: Any) -> int | None:
    """The pid of the live process training this run, 0 when a live holder left no readable
    pid, or None when nobody holds the run."""
    path = RunFolder(run_dir).lock
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # never locked (or the folder is gone)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(run_dir: Any, patience: float = 0.0) -> Iterator[RunLock]:
    """Hold the run's lock for a block (deleting or repairing a run that nobody trains)."""
    lock = RunLock(run_dir).acquire(patience)
    try:
        yield lock
    finally:
        lock.release()


__all__ += ["exclusive"]
