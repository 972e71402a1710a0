"""What the runs list shows, kept current cheaply: status.json is re-read (it is tiny) and
each run's metrics.jsonl is tailed from where the last look stopped."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from trainer.pure.crash_cause import LogCause
from trainer.pure.events import MetricsTail
from trainer.pure.metrics import LOSS, REWARDS_ACCURACIES
from trainer.pure.run_folder import RunFolder
from trainer.pure.run_lock import holder
from trainer.pure.runs import DAMAGED, effective_state, list_runs, read_status
from trainer.pure.states import ACTIVE, RunState
from tui.alarms import health_alarms
from tui.run_notes import first_line, read_notes, read_tags
from tui.series import RunSeries


@dataclass
class RunSummary:
    path: Path
    state: str
    step: int
    total: int
    loss: float | None
    val_loss: float | None
    val_acc: float | None
    started_at: float | None
    ended_at: float | None
    error: str | None
    pid: int | None
    alarm: str | None = None
    tags: tuple[str, ...] = ()
    note: str = ""
    # The pid holding the run's lock (0: held, pid unknown; None: nobody trains it).
    held_by: int | None = None

    @property
    def busy_reason(self) -> str | None:
        """Why the run cannot be resumed or deleted now, or None."""
        if self.held_by is None:
            return None
        return f"{self.name} is being trained by pid {self.held_by}" if self.held_by else f"{self.name} is being trained"

    def matches(self, query: str) -> bool:
        """Every word of the query appears in the name, state, tags or note."""
        haystack = " ".join([self.name, self.state, *self.tags, self.note]).lower()
        return all(word in haystack for word in query.lower().split())

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def preset(self) -> str:
        from tui.compare import preset_of  # read on demand: it opens the config and the queue

        return preset_of(self.path)

    @property
    def duration(self) -> float | None:
        if not self.started_at:
            return None
        end = None if self.active else self.ended_at
        return max((end or time.time()) - self.started_at, 0.0)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


@dataclass
class _Latest:
    tail: MetricsTail
    cause: LogCause
    series: RunSeries = field(default_factory=RunSeries)
    alarm: str | None = None
    alarm_version: int = -1


@dataclass
class RunsIndex:
    runs_dir: Path
    _latest: dict[Path, _Latest] = field(default_factory=dict)

    def refresh(self) -> list[RunSummary]:
        out = []
        for run in list_runs(self.runs_dir):
            read = read_status(run)
            status = read or {}
            latest = self._latest.get(run)
            if latest is None:
                folder = RunFolder(run)
                latest = self._latest[run] = _Latest(MetricsTail(folder.metrics), LogCause(folder.log))
            events = latest.tail.read_new()
            if events:
                latest.series.add(events)
            total = int(status.get("total_steps") or 0)
            if latest.series.version != latest.alarm_version:  # alarms only when data moved
                latest.alarm_version = latest.series.version
                alarms = health_alarms(latest.series, total_steps=total or None)
                latest.alarm = alarms[0].message if alarms else None
            last_train, last_val = latest.series.last_train, latest.series.last_val
            state = effective_state(read)
            out.append(RunSummary(
                path=run, state=state,
                step=int(status.get("step") or 0), total=total,
                loss=last_train.get(LOSS), val_loss=last_val.get(LOSS), val_acc=last_val.get(REWARDS_ACCURACIES),
                started_at=status.get("started_at"), ended_at=status.get("ended_at"),
                # Why a crashed run died first; a damaged file is shown as the run's problem,
                # in one line, like an error.
                error=(latest.cause.current() if state == RunState.CRASHED else None)
                or status.get("error") or status.get(DAMAGED) or latest.tail.problem
                or (None if read is not None else f"no {RunFolder(run).status.name}"),
                pid=status.get("pid"), alarm=latest.alarm,
                tags=tuple(read_tags(run)), note=first_line(read_notes(run)), held_by=holder(run),
            ))
        for gone in set(self._latest) - {s.path for s in out}:
            del self._latest[gone]
        return out


def shown_duration(s: RunSummary, summary: dict) -> float | None:
    """The duration a list shows: a live run's clock runs on; a finished one counts the time
    it trained, over all its attempts (``duration_s`` of tui.compare.summarize)."""
    return s.duration if s.active else summary.get("duration_s", s.duration)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
