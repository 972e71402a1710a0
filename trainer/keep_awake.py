"""Holding the machine awake for as long as this process lives (the command per platform:
trainer.pure.keep_awake).

The inhibitor runs in its own session, so a Ctrl-C in the terminal or the SIGHUP of a
dropped SSH link does not end it before its holder, and with no pipe of ours on its stdout
or stderr, so whoever reads the holder's output to its end is never kept waiting by it.
No mlx, no textual: the queue runner uses it too.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable

from trainer.pure.keep_awake import Inhibitor, current_platform, inhibitor_for

__all__ = ["KeepAwake"]

# A failing inhibitor (no session bus, no logind) exits within milliseconds; one that still
# runs this long after its start holds.
SETTLE_S = 0.5


class KeepAwake:
    """One sleep inhibitor held for this process. ``start`` never raises: a machine without
    one trains all the same, and :meth:`report` says which inhibitor holds or why none does."""

    def __init__(self, inhibitor: Inhibitor, proc: subprocess.Popen | None, errors, problem: str = ""):
        self.inhibitor = inhibitor
        self.proc = proc
        self._errors = errors
        self._started = time.monotonic()
        self._problem = problem

    @classmethod
    def start(cls, why: str, pid: int | None = None, platform: str | None = None) -> KeepAwake:
        pid = os.getpid() if pid is None else pid
        inhibitor = inhibitor_for(platform or current_platform(os.environ), pid, why)
        if not inhibitor.available:
            return cls(inhibitor, None, None, inhibitor.missing)
        errors = None
        try:
            errors = tempfile.TemporaryFile()  # its last line says why, should it fail
            proc = subprocess.Popen(
                inhibitor.argv, stdin=subprocess.PIPE if inhibitor.needs_pipe else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True,
            )
        except OSError as exc:
            if errors is not None:
                errors.close()
            return cls(inhibitor, None, None, f"{inhibitor.name} cannot be started: {exc.strerror or exc}")
        return cls(inhibitor, proc, errors)

    @property
    def holding(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def report(self, log: Callable[[str], None]) -> bool:
        """Log which inhibitor holds, or why none does, once the inhibitor had time to fail;
        True when one holds."""
        if self.proc is not None and not self._problem:
            try:
                self.proc.wait(timeout=max(0.0, SETTLE_S - (time.monotonic() - self._started)))
            except subprocess.TimeoutExpired:
                pass
            if self.proc.returncode is not None:
                self._problem = f"{self.inhibitor.name} exited with {self.proc.returncode}{self._last_error()}"
                self.proc = None
        if self._problem:
            log(f"sleep is not prevented: {self._problem}")
            return False
        log(f"sleep prevented while this process lives: {self.inhibitor.name} holds it (pid {self.proc.pid})")
        return True

    def _last_error(self) -> str:
        try:
            self._errors.seek(0)
            lines = [ln.strip() for ln in self._errors.read(4096).decode("utf-8", "replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        return f": {lines[-1]}" if lines else ""

    def release(self) -> None:
        """Let the machine sleep again before this process ends."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the pipe's EOF ends it as the holder's death would
        else:
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._errors is not None:
            self._errors.close()
