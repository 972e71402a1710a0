"""`orpo-tui ls`: the runs list for a plain shell (over SSH, in a script), as a table or as
JSON. The values are the app's runs list's own: tui.runs_index for state, progress, latest
numbers and a crashed run's cause, tui.compare.summarize for the time trained. No textual.

JSON (``--json``): a list, newest run first, of objects with the keys :data:`JSON_KEYS`.
Times are seconds since the epoch; a value the files do not hold is null; non-finite
numbers are the strings ``"nan"``, ``"inf"``, ``"-inf"`` as in metrics.jsonl.
"""

from __future__ import annotations

import time
from pathlib import Path

from trainer.pure.events import encode_value
from trainer.pure.rank_status import rank_states
from trainer.pure.runs import read_status
from tui.runs_index import RunsIndex, format_duration, shown_duration

__all__ = ["JSON_KEYS", "ls_records", "json_ready", "format_ls"]

JSON_KEYS = (
    "run",  # the folder's name
    "path",
    "state",  # the effective state: crashed for a trainer gone without recording its end
    "error",  # one line: a crashed run's cause, a failed run's error, or why a file is damaged
    "step",
    "total_steps",
    "world_size",  # the ranks of its latest start (1: one process; null: not recorded)
    "ranks",  # a distributed run's ranks: rank, pid (null: not recorded), alive, step (its log's last), line
    "loss",  # the last train report's
    "val_loss",  # the last evaluation's
    "val_accuracy",  # rewards/accuracies of the last evaluation
    "started_at",
    "ended_at",
    "duration_s",  # a live run: so far; a finished one: the time it trained, over all attempts
)

_COLUMNS = (("run", "RUN"), ("state", "STATE"), ("step", "STEP"), ("world_size", "RANKS"), ("loss", "LOSS"), ("val_loss", "VAL LOSS"),
            ("val_accuracy", "VAL ACC"), ("started_at", "STARTED"), ("duration_s", "DURATION"), ("error", "ERROR"))


def ls_records(runs_dir: Path) -> list[dict]:
    """One record per run folder under ``runs_dir``, newest first, keyed :data:`JSON_KEYS`."""
    index = RunsIndex(Path(runs_dir))
    index.refresh()
    while index.pending and index.load():  # a shell waits for every number, unlike the live list
        index.refresh()
    return [{
        "run": s.name, "path": str(s.path), "state": str(s.state), "error": s.error,
        "step": s.step, "total_steps": s.total or None, "world_size": s.world_size,
        "ranks": [r.to_json() for r in rank_states(s.path, read_status(s.path))] or None,
        "loss": s.loss, "val_loss": s.val_loss, "val_accuracy": s.val_acc,
        "started_at": s.started_at, "ended_at": None if s.active else s.ended_at,
        "duration_s": shown_duration(s, s.perf or {}),
    } for s in index.refresh()]


def json_ready(records: list[dict]) -> list[dict]:
    return [{key: encode_value(record[key]) for key in JSON_KEYS} for record in records]


def _cell(key: str, record: dict) -> str:
    value = record[key]
    if key == "step":
        return f"{value}/{record['total_steps'] or '?'}"
    if value is None or value == "":
        return "-"
    if key == "started_at":
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(value))
    if key == "duration_s":
        return format_duration(value)
    if key == "val_accuracy":
        return f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return " ".join(str(value).split())


def format_ls(records: list[dict]) -> str:
    """A table with a header, one line per run; the last column (the error, or why a run
    crashed) is never cut."""
    rows = [[label for _, label in _COLUMNS]] + [[_cell(key, r) for key, _ in _COLUMNS] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip() for row in rows)
