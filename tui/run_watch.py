"""Which runs the app has seen training, and which of them just ended; the swap in use
sampled while they train.

The app asks :meth:`RunWatch.check` every few seconds, whatever screen is open. A run counts
as watched once a check finds it active (pending, running, stopping), or once the app starts
or resumes it (:meth:`expect`: a run that fails while loading may end before the next
check). A watched run that is no longer active has ended (completed, failed, stopped, or
crashed: its trainer is gone without a final status) and is reported once; resumed, it is
watched again. A run that was over before the app first looked is never reported.

Each check costs a stat of every run's status.json; the file is read again only when it
changed, and a run that is active has its pid looked at (a crash writes nothing).

No textual: the app does the telling (tui/terminal_notify.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trainer.pure.run_end import RunEnd, read_run_end
from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import effective_state, list_runs, read_status
from trainer.pure.states import ACTIVE

__all__ = ["RunWatch", "SWAP_SAMPLES"]

SWAP_SAMPLES = 4096  # per run; only changes of the level are kept, so this is hours of them


@dataclass
class _Seen:
    stamp: tuple | None = None  # status.json's (mtime_ns, size) when last read
    status: dict | None = None


@dataclass
class RunWatch:
    runs_dir: Path
    _seen: dict[Path, _Seen] = field(default_factory=dict)
    _watched: set[str] = field(default_factory=set)  # run folder names: a path may be spelled two ways
    swap: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # by run folder name
    active: list[Path] = field(default_factory=list)  # as of the last check

    def expect(self, run_dir: Path) -> None:
        """A run the app started or resumed: tell of its end even if no check saw it train."""
        self._watched.add(Path(run_dir).name)
        self.swap.pop(Path(run_dir).name, None)

    def check(self) -> list[RunEnd]:
        """The watched runs that ended since the last check."""
        ended, active = [], []
        runs = list_runs(self.runs_dir)
        for run in runs:
            state = effective_state(self._status(run))
            if state in ACTIVE:
                active.append(run)
                if run.name not in self._watched:
                    self._watched.add(run.name)
                    self.swap.pop(run.name, None)  # a resumed run starts a new watch
            elif run.name in self._watched:
                self._watched.discard(run.name)
                ended.append(read_run_end(run, str(state)))
        for gone in set(self._seen) - set(runs):
            self._seen.pop(gone, None)
            self._watched.discard(gone.name)
            self.swap.pop(gone.name, None)
        self.active = active
        return ended

    def _status(self, run: Path) -> dict | None:
        seen = self._seen.setdefault(run, _Seen())
        try:
            st = RunFolder(run).status.stat()
            stamp: tuple | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp is None or stamp != seen.stamp:
            seen.stamp, seen.status = stamp, read_status(run)
        return seen.status

    def record_swap(self, used: float) -> None:
        """The system's swap in use now, for every run active at the last check, at its
        current step; a sample is kept only when the level moved."""
        for run in self.active:
            status = (self._seen.get(run) or _Seen()).status or {}
            step = int(status.get("step") or 0)
            samples = self.swap.setdefault(run.name, [])
            if samples and samples[-1][1] == used:
                continue
            samples.append((step, used))
            if len(samples) > SWAP_SAMPLES:
                # The oldest goes, unless it is the lowest level: growth is measured from that.
                low = min(range(len(samples)), key=lambda i: samples[i][1])
                del samples[0 if low != 0 else 1]

    def swap_samples(self, run_dir: Path) -> list[tuple[int, float]]:
        return list(self.swap.get(Path(run_dir).name, ()))
