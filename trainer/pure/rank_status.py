"""Each rank of a distributed run as its files tell it, for the app and `orpo-tui ls`.

The status holds the run's world size (written by the launcher on every start, 1 included)
and, once the group has formed, every rank's pid (written by rank 0, the run's one writer
while it trains; only when all ranks run on this machine, where a pid means something).
Each rank's log (train.log for rank 0, train.rank<N>.log for the others) says how far it
got: every rank logs the same `step N/T: ...` line at each report.

Pure module: no mlx, no textual.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.pure.run_folder import RunFolder
from trainer.pure.runs import pid_alive
from trainer.pure.trainer_process import PROG

__all__ = ["WORLD_SIZE", "RANK_PIDS", "RankState", "world_size", "rank_pids", "rank_states", "ranks_line",
           "STEP_LINE"]

# status.json keys
WORLD_SIZE = "world_size"
RANK_PIDS = "rank_pids"

# The report line every rank logs (trainer/reporter.py writes it: `train_line`).
STEP_LINE = re.compile(r"\bstep (\d+)/(\d+): ")
_STAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ")
LOG_TAIL_BYTES = 8192


def world_size(status: dict | None) -> int | None:
    """The ranks the run's latest start trained on; None for a run from before it was recorded."""
    value = (status or {}).get(WORLD_SIZE)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def rank_pids(status: dict | None) -> list[int] | None:
    value = (status or {}).get(RANK_PIDS)
    if isinstance(value, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in value):
        return value
    return None


@dataclass(frozen=True)
class RankState:
    rank: int
    pid: int | None  # None: not recorded (yet, or the ranks are on other machines)
    alive: bool | None  # None when the pid is not known
    step: int | None  # the last step its log reported
    line: str  # its log's last line of the trainer's own, without the time stamp ("": none yet)

    @property
    def process(self) -> str:
        if self.pid is None:
            return "pid ?"
        return f"pid {self.pid} {'alive' if self.alive else 'gone'}"

    def short(self) -> str:
        """`rank 1 step 12 (pid 4242 alive)`"""
        at = f"step {self.step}" if self.step is not None else "no step yet"
        return f"rank {self.rank} {at} ({self.process})"

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "pid": self.pid, "alive": self.alive, "step": self.step, "line": self.line}


def _log_tail(path: Path) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(fh.tell() - LOG_TAIL_BYTES, 0))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def rank_state(run_dir: Path, rank: int, pid: int | None, alive: Callable[[int], bool] = pid_alive) -> RankState:
    lines = _log_tail(RunFolder(run_dir).rank_log(rank))
    step = next((int(m[1]) for ln in reversed(lines) if (m := STEP_LINE.search(ln))), None)
    # The trainer's own lines (time-stamped, or its `orpo-train:` error line) before what
    # mpirun appends to rank 0's output when the job ends (boxes of dashes and notes).
    ours = [ln for ln in lines if _STAMP.match(ln) or ln.startswith(f"{PROG}: ")]
    last = _STAMP.sub("", (ours or lines)[-1]) if lines else ""
    return RankState(rank, pid, None if pid is None else alive(pid), step, last)


def rank_states(run_dir: Path, status: dict | None, alive: Callable[[int], bool] = pid_alive) -> list[RankState]:
    """One state per rank of a distributed run; [] for a run on one process."""
    n = world_size(status) or 1
    if n < 2:
        return []
    pids = rank_pids(status) or []
    pids = pids if len(pids) == n else []  # pids of an earlier start with another world size
    return [rank_state(Path(run_dir), r, pids[r] if pids else None, alive) for r in range(n)]


def ranks_line(ranks: list[RankState]) -> str:
    """`2 ranks · rank 0 step 12 (pid 4241 alive) · rank 1 step 12 (pid 4242 alive)`"""
    return " · ".join([f"{len(ranks)} ranks", *(r.short() for r in ranks)]) if ranks else ""
