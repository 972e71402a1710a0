"""How train() tells the world what happens, one method per kind of news.

train() knows nothing of where its news goes: the production :class:`RunFolderReporter`
writes them into the run folder (the metrics stream, the status, the log), which is all the
app and the user learn about a run; a test passes a reporter that records them.

No mlx: train() hands plain numbers, so reports can be written and tested without the
training stack.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.pure import metrics as M
from trainer.pure.events import MetricsWriter
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import write_status
from trainer.pure.states import RunState


class Reporter:
    """Every report train() makes. Each does nothing here, so a reporter overrides only
    what it wants."""

    def log(self, message: str) -> None:
        """A line for the human reading the run."""

    def on_resume(self, checkpoint: Path, step: int) -> None:
        """The run goes on from `checkpoint`, saved at `step`; reports past it are void."""

    def on_start(self, step: int, total_steps: int, resumed: bool) -> None:
        """Training starts (or resumes) at `step` of `total_steps`."""

    def on_train(self, step: int, values: dict[str, float]) -> None:
        """The train metrics (trainer.pure.metrics) averaged over the steps since the last report."""

    def on_nonfinite_loss(self, step: int, values: dict[str, float]) -> None:
        """The ORPO metrics of the window in which the loss stopped being finite; the run
        fails right after."""

    def on_val(self, step: int, values: dict[str, float]) -> None:
        """The validation metrics, with the time the evaluation took."""

    def on_new_best(self, step: int, folder: Path, val_loss: float) -> None:
        """A new best validation loss; its adapters are saved in `folder`."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """A resumable checkpoint was saved at `path`."""

    def on_sample(self, step: int, index: int, prompt: str, completion: str) -> None:
        """The greedy completion of sample prompt `index`."""


def train_line(step: int, total_steps: int | None, values: dict[str, float]) -> str:
    """The log line of a train report (trainer.pure.rank_status reads its step back)."""
    return (f"step {step}/{total_steps}: loss {values[M.LOSS]:.4f}, nll {values[M.NLL_LOSS]:.4f}, "
            f"log-odds {values[M.LOG_ODDS_CHOSEN]:.3f}, reward acc {values[M.REWARDS_ACCURACIES]:.3f}, "
            f"{values[M.PAIRS_PER_SECOND]:.1f} pairs/s")


class LogReporter(Reporter):
    """Only the log lines: a distributed run's ranks other than 0, which write nothing else.
    Each report's line too, so the rank's own log shows how far it got."""

    def __init__(self, log: Callable[[str], None]):
        self._log = log
        self.total_steps: int | None = None

    def log(self, message: str) -> None:
        self._log(message)

    def on_start(self, step: int, total_steps: int, resumed: bool) -> None:
        self.total_steps = total_steps

    def on_train(self, step: int, values: dict[str, float]) -> None:
        self.log(train_line(step, self.total_steps, values))

    def close(self) -> None:
        pass


class RunFolderReporter(Reporter):
    """Reports as events in the run's metrics stream, its status file and its log, and hands
    each event as written to the run's live trackers (trainer.trackers.LiveTrackers), if any.

    `pid`: the process the status names (a distributed run's launcher; else this one)."""

    def __init__(self, run_dir: Path, log: Callable[[str], None], pid: int | None = None, trackers: Any = None):
        self.pid = pid or os.getpid()
        self.run = RunFolder(run_dir)
        self._log = log
        self._writer: MetricsWriter | None = None
        self.total_steps: int | None = None
        self.trackers = trackers

    @property
    def writer(self) -> MetricsWriter:
        # Opened at the first event, after a resume has cut the stream back to its checkpoint.
        if self._writer is None:
            self._writer = MetricsWriter(self.run.metrics)
        return self._writer

    def _write(self, event: str, step: int, **values: Any) -> None:
        record = self.writer.write(event, step, **values)
        if self.trackers is not None:
            self.trackers.event(record)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.trackers is not None:
            self.trackers.close()

    def _inside(self, path: Path) -> str:
        return str(path.relative_to(self.run.root))

    def log(self, message: str) -> None:
        self._log(message)

    def on_resume(self, checkpoint: Path, step: int) -> None:
        dropped = truncate_metrics_after(self.run.metrics, step)
        redone = f"; {dropped} metric lines past it dropped and redone" if dropped else ""
        self.log(f"resumed from {checkpoint.name} (step {step}){redone}")
        if self.trackers is not None:
            self.trackers.resumed_at(step)

    def on_start(self, step: int, total_steps: int, resumed: bool) -> None:
        self.total_steps = total_steps
        write_status(self.run.root, state=RunState.RUNNING, pid=self.pid, step=step, total_steps=total_steps, error=None,
                     ended_at=None)
        self._write("status", step, state=RunState.RUNNING, resumed=resumed)

    def on_train(self, step: int, values: dict[str, float]) -> None:
        self._write("train", step, **values)
        write_status(self.run.root, step=step)
        self.log(train_line(step, self.total_steps, values))

    def on_nonfinite_loss(self, step: int, values: dict[str, float]) -> None:
        self._write("train", step, **values)

    def on_val(self, step: int, values: dict[str, float]) -> None:
        self._write("val", step, **values)
        self.log(f"step {step}: val loss {values[M.LOSS]:.4f}, reward acc {values[M.REWARDS_ACCURACIES]:.3f}, "
                 f"margin {values[M.REWARDS_MARGINS]:.4f}")

    def on_new_best(self, step: int, folder: Path, val_loss: float) -> None:
        self._write("checkpoint", step, path=self._inside(folder), best=True, val_loss=val_loss)
        self.log(f"step {step}: new best val loss, adapters saved to {self._inside(folder)}")

    def on_checkpoint(self, step: int, path: Path) -> None:
        self._write("checkpoint", step, path=self._inside(path))
        self.log(f"step {step}: checkpoint saved ({path.name})")

    def on_sample(self, step: int, index: int, prompt: str, completion: str) -> None:
        self._write("sample", step, prompt=prompt, completion=completion, index=index)


def truncate_metrics_after(path: Path, step: int) -> int:
    """Drop events past `step` (work lost in a crash that the resumed run redoes), so the
    file keeps one continuous step sequence. Truncating in place lets tailing readers notice
    (their offset passes the end) and re-read. Returns how many lines were dropped."""
    if not path.exists():
        return 0
    keep_bytes, dropped = 0, 0
    with path.open("rb") as fh:
        for raw in fh:
            try:
                past = json.loads(raw).get("step", 0) > step
            except (ValueError, AttributeError):
                past = not raw.endswith(b"\n")  # a torn last line goes; other junk stays
            if past:
                dropped += 1
            elif dropped == 0:
                keep_bytes += len(raw)
    if dropped:
        os.truncate(path, keep_bytes)
    return dropped
