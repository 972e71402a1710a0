"""What the runs list shows, kept current cheaply: status.json is re-read (it is tiny) and
each run's metrics.jsonl is tailed from where the last look stopped."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from trainer.events import MetricsTail
from trainer.runs import effective_state, list_runs, read_status

_STAMP = len("YYYYmmdd-HHMMSS-")


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

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def preset(self) -> str:
        return self.path.name[_STAMP:] or self.path.name

    @property
    def duration(self) -> float | None:
        if not self.started_at:
            return None
        end = self.ended_at if self.state not in ("running", "stopping", "pending") else time.time()
        return max((end or time.time()) - self.started_at, 0.0)

    @property
    def active(self) -> bool:
        return self.state in ("running", "stopping", "pending")


@dataclass
class _Latest:
    tail: MetricsTail
    loss: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    nonfinite: str | None = None


@dataclass
class RunsIndex:
    runs_dir: Path
    _latest: dict[Path, _Latest] = field(default_factory=dict)

    def refresh(self) -> list[RunSummary]:
        out = []
        for run in list_runs(self.runs_dir):
            status = read_status(run) or {}
            latest = self._latest.setdefault(run, _Latest(MetricsTail(run / "metrics.jsonl")))
            for event in latest.tail.read_new():
                _absorb(latest, event)
            out.append(RunSummary(
                path=run, state=effective_state(status) if status else "pending",
                step=int(status.get("step") or 0), total=int(status.get("total_steps") or 0),
                loss=latest.loss, val_loss=latest.val_loss, val_acc=latest.val_acc,
                started_at=status.get("started_at"), ended_at=status.get("ended_at"),
                error=status.get("error"), pid=status.get("pid"), alarm=latest.nonfinite,
            ))
        for gone in set(self._latest) - {s.path for s in out}:
            del self._latest[gone]
        return out


def _absorb(latest: _Latest, event: dict) -> None:
    kind = event.get("event")
    if kind == "train":
        latest.loss = event.get("loss", latest.loss)
    elif kind == "val":
        latest.val_loss = event.get("loss", latest.val_loss)
        latest.val_acc = event.get("rewards/accuracies", latest.val_acc)
    else:
        return
    if latest.nonfinite is None:
        bad = [k for k, v in event.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            latest.nonfinite = f"{bad[0]} is {event[bad[0]]} at step {event.get('step')}"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
