"""What the screens work on, owned by the app and handed to each screen that needs it:
the two folders, the trainers this app started, the stops in progress, and the watch on
which runs train (their ends, the swap sampled meanwhile)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tui.launcher import Launcher
from tui.run_watch import RunWatch


@dataclass
class Workspace:
    presets_dir: Path
    runs_dir: Path
    launcher: Launcher = field(default_factory=Launcher)
    # Written by the app's stop workers, read by the runs list and the monitor: a run being
    # stopped shows the signal it is waiting on instead of its state.
    stop_phase: dict[Path, str] = field(default_factory=dict)
    watch: RunWatch = field(init=False)

    def __post_init__(self) -> None:
        self.watch = RunWatch(self.runs_dir)
