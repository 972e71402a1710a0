"""What a screen asks the app to do with a trainer process. A screen posts one of these and
it bubbles up to the app, which owns the processes and the workers that wait on them, so a
screen never needs to know which app it runs in."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from textual.message import Message


class RunStartRequested(Message):
    """Train `preset` (a preset file, or the resolved config of an earlier run) with `--set`
    overrides; the app opens the new run's monitor once the trainer has started."""

    def __init__(self, preset: Path, overrides: Sequence[str] = ()) -> None:
        super().__init__()
        self.preset = preset
        self.overrides = list(overrides)


class RunResumeRequested(Message):
    """Resume the run in `run_dir` from its last checkpoint, with `--set` overrides (a
    larger training.iters extends a finished run)."""

    def __init__(self, run_dir: Path, overrides: Sequence[str] = ()) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.overrides = list(overrides)


class RunStopRequested(Message):
    """Stop the run in `run_dir`: SIGINT, then SIGTERM, then SIGKILL."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
