"""What a running trainer shares between its signal handlers, its loop and its CLI: the stop
request and the human-readable log. No mlx: the CLI uses both before the MLX stack loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.pure.train_log import stamped


@dataclass
class StopFlag:
    """Set from a signal handler; the loop finishes its step, saves and stops."""

    requested: bool = False
    reason: str = ""

    def request(self, reason: str) -> None:
        self.requested, self.reason = True, reason


@dataclass
class RunLog:
    """Human-readable progress: into train.log, and echoed to a terminal when there is one
    that still works (a dropped SSH link must not kill the run).

    Never raises: a log line that cannot be written (a full disk) must not be what kills a
    run or, worse, the handler reporting why the run failed. ``write_error`` keeps the
    first such error."""

    path: Path
    echo: bool = True
    _fh: Any = field(default=None, repr=False)
    write_error: OSError | None = field(default=None, repr=False)

    def __call__(self, message: str) -> None:
        line = stamped(message)
        try:
            if self._fh is None:
                self._fh = open(self.path, "a", buffering=1, encoding="utf-8")
            self._fh.write(line + "\n")
        except OSError as exc:
            self.write_error = self.write_error or exc
        if self.echo:
            try:
                print(line, flush=True)
            except OSError:
                self.echo = False

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError as exc:  # the buffered last line met a full disk
                self.write_error = self.write_error or exc
            self._fh = None
