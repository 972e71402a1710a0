"""What the runs list shows, kept current cheaply: status.json is re-read (it is tiny) and
each run's metrics.jsonl is tailed from where the last look stopped.

A run seen for the first time has its whole metrics file to read (and the summary's numbers,
which read it again): a folder of long runs takes seconds. `RunsIndex.refresh` reads such
files only up to INLINE_BYTES a call, so the list shows at once; the runs left over are
listed with `loading` set and no numbers yet, and `RunsIndex.load`, run in a thread, reads
them. The same goes for the summary's numbers of a run whose files changed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainer.pure.crash_cause import LogCause
from trainer.pure.events import MetricsTail
from trainer.pure.metrics import LOSS, REWARDS_ACCURACIES
from trainer.pure.rank_status import world_size
from trainer.pure.run_folder import RunFolder
from trainer.pure.run_lock import holder
from trainer.pure.runs import DAMAGED, effective_state, list_runs, read_status, run_end_time
from trainer.pure.states import ACTIVE, RunState
from tui.alarms import health_alarms
from tui.compare import summarize
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
    # Its metrics are still being read (RunsIndex.load): loss, val and alarm are not known yet.
    loading: bool = False
    # tui.compare.summarize's numbers (pairs/s, memory, duration), None until computed.
    perf: dict | None = None
    world_size: int | None = None  # the ranks of its latest start (None: not recorded)

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
        end = run_end_time(self.path, self.state, {"ended_at": self.ended_at})
        return max((end or time.time()) - self.started_at, 0.0)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


INLINE_BYTES = 256 * 1024
"""Bytes of metrics one refresh reads from scratch, at most (a few hundred reports, ~10 ms):
more is left to `RunsIndex.load`."""
PERF_MAX_AGE = 10.0
"""Seconds a live run's summary numbers may lag its metrics: summarizing reads every line."""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class _Latest:
    tail: MetricsTail
    series: RunSeries = field(default_factory=RunSeries)
    alarm: str | None = None
    alarm_version: int = -1
    perf: dict | None = None
    perf_stamp: tuple | None = None  # the files' sizes and times `perf` was computed from
    perf_at: float = 0.0

    @classmethod
    def read(cls, run: Path) -> _Latest:
        """The run's metrics read from the start."""
        latest = cls(MetricsTail(RunFolder(run).metrics))
        latest.series.add(latest.tail.read_new())
        return latest

    def update_alarm(self, total: int) -> None:
        if self.series.version != self.alarm_version:  # alarms only when data moved
            self.alarm_version = self.series.version
            alarms = health_alarms(self.series, total_steps=total or None)
            self.alarm = alarms[0].message if alarms else None

    def summarize(self, run: Path, stamp: tuple) -> None:
        try:
            perf = summarize(run)
        except (OSError, ValueError):
            perf = {}
        self.perf, self.perf_stamp, self.perf_at = perf, stamp, time.monotonic()


def _perf_stamp(run: Path) -> tuple:
    folder = RunFolder(run)
    try:
        return folder.metrics.stat().st_size, folder.status.stat().st_mtime_ns
    except OSError:
        return ()


@dataclass
class RunsIndex:
    runs_dir: Path
    _latest: dict[Path, _Latest] = field(default_factory=dict)
    # What the last refresh left to `load`: runs to read, runs to summarize.
    _unread: list[Path] = field(default_factory=list)
    _unsummarized: list[Path] = field(default_factory=list)
    _causes: dict[Path, LogCause] = field(default_factory=dict)  # why each crashed run died, read on change
    _lock: threading.Lock = field(default_factory=threading.Lock)  # _latest, between refresh and load
    _loading: threading.Lock = field(default_factory=threading.Lock)  # one load at a time

    @property
    def pending(self) -> bool:
        """Whether the last refresh left work to `load`."""
        return bool(self._unread or self._unsummarized)

    @property
    def loading(self) -> bool:
        """Whether a `load` is under way."""
        return self._loading.locked()

    def refresh(self) -> list[RunSummary]:
        out = []
        budget = INLINE_BYTES
        unread, unsummarized = [], []
        for run in list_runs(self.runs_dir):
            read = read_status(run)
            status = read or {}
            total = int(status.get("total_steps") or 0)
            with self._lock:
                latest = self._latest.get(run)
            if latest is None:
                size = _size(RunFolder(run).metrics)
                if size <= budget:
                    budget -= size
                    latest = _Latest.read(run)
                    with self._lock:
                        latest = self._latest.setdefault(run, latest)
                else:
                    unread.append(run)
            else:
                events = latest.tail.read_new()
                if events:
                    latest.series.add(events)
            if latest is not None:
                latest.update_alarm(total)
                stamp = _perf_stamp(run)
                if latest.perf_stamp != stamp and (latest.perf is None or not self._fresh_enough(latest, status)):
                    size = stamp[0] if stamp else 0
                    if size <= budget:
                        budget -= size
                        latest.summarize(run, stamp)
                    else:
                        unsummarized.append(run)
            last_train = latest.series.last_train if latest else {}
            last_val = latest.series.last_val if latest else {}
            state = effective_state(read)
            out.append(RunSummary(
                path=run, state=state,
                step=int(status.get("step") or 0), total=total,
                loss=last_train.get(LOSS), val_loss=last_val.get(LOSS), val_acc=last_val.get(REWARDS_ACCURACIES),
                started_at=status.get("started_at"), ended_at=status.get("ended_at"),
                # Why a crashed run died first; a damaged file is shown as the run's problem,
                # in one line, like an error.
                error=(self._cause(run) if state == RunState.CRASHED else None)
                or status.get("error") or status.get(DAMAGED) or (latest.tail.problem if latest else None)
                or (None if read is not None else f"no {RunFolder(run).status.name}"),
                pid=status.get("pid"), alarm=latest.alarm if latest else None,
                tags=tuple(read_tags(run)), note=first_line(read_notes(run)), held_by=holder(run),
                loading=latest is None, perf=latest.perf if latest else None, world_size=world_size(status),
            ))
        self._unread, self._unsummarized = unread, unsummarized
        listed = {s.path for s in out}
        with self._lock:
            for gone in set(self._latest) - listed:
                del self._latest[gone]
        for gone in set(self._causes) - listed:
            del self._causes[gone]
        return out

    def _cause(self, run: Path) -> str:
        cause = self._causes.get(run)
        if cause is None:
            cause = self._causes[run] = LogCause(RunFolder(run).log)
        return cause.current()

    @staticmethod
    def _fresh_enough(latest: _Latest, status: dict) -> bool:
        """A live run's numbers are summarized again at most every PERF_MAX_AGE seconds."""
        return effective_state(status or None) in ACTIVE and time.monotonic() - latest.perf_at < PERF_MAX_AGE

    def load(self, keep_going: Callable[[], bool] = lambda: True) -> bool:
        """Read what the last refresh left: whole metrics files, then summaries (the list's
        numbers first). Slow: call it in a thread, then refresh again. Stops between two
        files once `keep_going()` is false; returns whether it read anything (False too
        while another load runs)."""
        if not self._loading.acquire(blocking=False):
            return False
        try:
            done = False
            read = []
            for run in list(self._unread):
                if not keep_going():
                    return done
                with self._lock:
                    if run in self._latest:
                        continue
                latest = _Latest.read(run)
                latest.update_alarm(int((read_status(run) or {}).get("total_steps") or 0))
                with self._lock:
                    self._latest.setdefault(run, latest)
                read.append(run)
                done = True
            for run in read + list(self._unsummarized):
                if not keep_going():
                    return done
                with self._lock:
                    latest = self._latest.get(run)
                if latest is not None:
                    latest.summarize(run, _perf_stamp(run))
                    done = True
            return done
        finally:
            self._loading.release()


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
