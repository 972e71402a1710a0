"""The sweep queue document: runs waiting their turn (the runner that executes them one after
another is trainer.queue_runner).

The queue lives in ``<runs_dir>/queue.json`` beside the runs it produces, so (like a run
directory) it is the whole truth: the app can quit, the SSH link can drop, a second app can
open the same folder, and the queue carries on. Format::

    {"v": 1, "paused": false, "runner_pid": 123 | null,
     "items": [{"id", "preset", "overrides", "label", "state", "run_dir", "exit_code",
                "added_at", "started_at", "ended_at"}]}

The runner also keeps ``pid`` (the trainer's) on a running item, and a stop in progress as
``cancel_requested`` / ``stop_requested`` / ``signalled`` (SIGINT already sent: never twice).

Every read-modify-write holds an exclusive ``flock`` on ``queue.lock`` and replaces the file
atomically, so the app and the runner never lose each other's changes and a reader without
the lock still sees a whole file.

The runner (``python -m trainer.queue_runner run --runs-dir DIR``) holds ``queue.runner.lock`` for
its lifetime so only one runs per folder; it takes the first queued item, starts
``orpo-train --log-only`` for it in its own session, waits, records the outcome, and exits
when nothing is left to run. ``ensure_runner`` starts it again on demand.

Pure module: standard library plus trainer.pure.config / trainer.pure.runs; no mlx, no textual.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from trainer.pure.config import ConfigError, apply_overrides, load_preset, parse_value, validate_field
from trainer.pure.runs import atomic_write_json, pid_alive, read_status
from trainer.pure.states import ItemState

__all__ = [
    "QUEUE_FILE",
    "sweep_items",
    "add",
    "read",
    "move",
    "set_paused",
    "cancel",
    "cancel_all",
    "runner_alive",
    "ensure_runner",
    "QueueDamaged",
    "DAMAGED",
    "set_aside_damaged",
]

QUEUE_FILE = "queue.json"
LOCK_FILE = "queue.lock"
RUNNER_LOCK_FILE = "queue.runner.lock"
LOG_FILE = "queue.log"

RUNNER_MODULE = "trainer.queue_runner"


def _empty() -> dict:
    return {"v": 1, "paused": False, "runner_pid": None, "items": []}


# ---------------------------------------------------------------------------- the file


class QueueDamaged(Exception):
    """queue.json exists but cannot be read as a queue: nothing may overwrite it."""


DAMAGED = "damaged"  # key read() adds, with the one-line reason, to the queue of a damaged file


def read(runs_dir: Any) -> dict:
    """The queue as it is now: an empty one when there is no file, and an empty one marked
    :data:`DAMAGED` (with the reason) when the file cannot be read as a queue. Needs no lock:
    the file is only ever replaced whole."""
    path = Path(runs_dir) / QUEUE_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return _empty()
    except OSError as exc:
        return {**_empty(), DAMAGED: f"{QUEUE_FILE}: cannot be read: {exc.strerror or exc}"}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return {**_empty(), DAMAGED: f"{QUEUE_FILE} is {'empty' if not raw.strip() else 'not valid JSON'}"}
    if not isinstance(data, dict) or not isinstance(data.get("items"), list) \
            or not all(isinstance(it, dict) and isinstance(it.get("id"), str) for it in data["items"]):
        return {**_empty(), DAMAGED: f"{QUEUE_FILE} is not a queue (no list of items with ids)"}
    for item in data["items"]:
        item["state"] = ItemState.read(item.get("state")).value
    return {**_empty(), **data}


def set_aside_damaged(runs_dir: Any) -> Path | None:
    """Move a damaged queue.json out of the way (kept beside it, stamped) so a new queue can
    start; returns where it went, or None when the file was readable after all."""
    runs_dir = Path(runs_dir)
    with flock(runs_dir / LOCK_FILE):
        if DAMAGED not in read(runs_dir):
            return None
        target = runs_dir / f"{QUEUE_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 2
        while target.exists():
            target = runs_dir / f"{QUEUE_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
            n += 1
        (runs_dir / QUEUE_FILE).rename(target)
        return target


@contextlib.contextmanager
def flock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on ``path`` for the block; yields False when ``blocking`` is
    off and someone else holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def editing(runs_dir: Any) -> Iterator[dict]:
    """Read the queue under its lock and write back whatever the block changed."""
    runs_dir = Path(runs_dir)
    with flock(runs_dir / LOCK_FILE):
        data = read(runs_dir)
        if DAMAGED in data:
            raise QueueDamaged(f"{runs_dir / QUEUE_FILE}: {data[DAMAGED]}; nothing was changed "
                               "(set it aside to start a new queue)")
        before = json.dumps(data, sort_keys=True)
        yield data
        if json.dumps(data, sort_keys=True) != before:
            atomic_write_json(runs_dir / QUEUE_FILE, data)


def find(data: dict, item_id: str) -> dict | None:
    return next((it for it in data["items"] if it.get("id") == item_id), None)


# ---------------------------------------------------------------------------- defining a sweep


def _value_text(value: Any) -> str:
    """A grid value as the text of a ``--set`` (strings are taken as typed, like the CLI)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))  # a JSON array of numbers/strings is a TOML array
    return repr(value)


def _checked_text(key: str, value: Any) -> str:
    """The value's --set text, after checking it alone: the error then names the key and the
    value, before the whole config is looked at."""
    text = _value_text(value)
    parsed = parse_value(key, text, source="sweep")
    problem = validate_field(key, parsed)
    if problem:
        raise ConfigError("sweep", f"{key} = {text}: {problem}", key=key)
    return text


def sweep_items(preset: Any, grid: dict, overrides: Sequence[str] = ()) -> list:
    """Queue items for every combination of a grid over one or two dotted keys, e.g.
    ``{"orpo.beta": [0.1, 0.2], "finetune.rank": [8, 16]}`` -> 4 items labelled
    ``beta=0.1,rank=8`` and so on. ``overrides`` (``key=value``) apply to every item first.

    Every value and every resulting config is checked here, so a bad value raises a
    ConfigError naming its key and nothing reaches the queue."""
    preset = Path(preset).expanduser().resolve()
    if not 1 <= len(grid) <= 2:
        raise ConfigError("sweep", f"a sweep varies one or two keys, got {len(grid)}")
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError("sweep", f"{key}: give a non-empty list of values", key=key)
    base = load_preset(preset)
    texts = {key: [_checked_text(key, v) for v in values] for key, values in grid.items()}
    items = []
    for combo in itertools.product(*texts.values()):
        sets = [f"{key}={text}" for key, text in zip(texts, combo)]
        apply_overrides(base, [*overrides, *sets], source="sweep")  # cross-field checks
        label = ",".join(f"{key.rsplit('.', 1)[-1]}={text}" for key, text in zip(texts, combo))
        items.append(_new_item(preset, [*overrides, *sets], label))
    return items


def _new_item(preset: Path, overrides: list, label: str) -> dict:
    return {
        "id": uuid.uuid4().hex[:12],
        "preset": str(preset),
        "overrides": list(overrides),
        "label": label,
        "state": ItemState.QUEUED.value,
        "run_dir": None,
        "exit_code": None,
        "added_at": time.time(),
        "started_at": None,
        "ended_at": None,
    }


# ---------------------------------------------------------------------------- editing the queue


def add(runs_dir: Any, items: Sequence[dict]) -> list:
    """Append items (from :func:`sweep_items`) at the end of the queue; returns their ids."""
    with editing(runs_dir) as data:
        data["items"].extend(dict(it) for it in items)
    return [it["id"] for it in items]


def move(runs_dir: Any, item_id: str, delta: int) -> bool:
    """Move a queued item ``delta`` places among the queued items (negative: sooner).
    Items that already ran keep their places; returns whether anything moved."""
    with editing(runs_dir) as data:
        slots = [i for i, it in enumerate(data["items"]) if it.get("state") == ItemState.QUEUED]
        queued = [data["items"][i] for i in slots]
        pos = next((n for n, it in enumerate(queued) if it.get("id") == item_id), None)
        if pos is None:
            return False
        target = max(0, min(len(queued) - 1, pos + delta))
        if target == pos:
            return False
        queued.insert(target, queued.pop(pos))
        for slot, item in zip(slots, queued):
            data["items"][slot] = item
        return True


def set_paused(runs_dir: Any, paused: bool) -> None:
    """A paused queue starts nothing new; the run in progress carries on."""
    with editing(runs_dir) as data:
        data["paused"] = bool(paused)


def cancel(runs_dir: Any, item_id: str) -> bool:
    """Cancel one item: a queued one at once; a running one is asked to stop (SIGINT, so it
    saves a checkpoint) and the runner marks it cancelled when it exits. Returns whether
    the item was still cancellable."""
    with editing(runs_dir) as data:
        item = find(data, item_id)
        return item is not None and _cancel_item(item)


def cancel_all(runs_dir: Any) -> int:
    """Cancel every queued and running item; returns how many."""
    with editing(runs_dir) as data:
        return sum(_cancel_item(item) for item in data["items"])


def _cancel_item(item: dict) -> bool:
    if item.get("state") == ItemState.QUEUED:
        item.update(state=ItemState.CANCELLED.value, ended_at=time.time())
        return True
    if item.get("state") == ItemState.RUNNING:
        item["cancel_requested"] = True
        signal_cancel(item)
        return True
    return False


def trainer_pid(item: dict) -> int | None:
    status = read_status(item["run_dir"]) if item.get("run_dir") else None
    return (status or {}).get("pid") or item.get("pid")


def signal_cancel(item: dict) -> None:
    """SIGINT a running item's trainer once (a second SIGINT would make it stop without
    saving). Called under the queue lock by both cancel() and the runner, since the trainer's
    pid may not be known yet when the user cancels."""
    if not item.get("cancel_requested") or item.get("signalled"):
        return
    pid = trainer_pid(item)
    if pid and pid_alive(pid):
        try:
            os.kill(pid, signal.SIGINT)
            item["signalled"] = True
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------- the runner's life


def is_runner(pid: Any) -> bool:
    """A live queue runner with this pid; on Linux its command line is checked too, so a
    recycled pid is not mistaken for one."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid
    return RUNNER_MODULE.encode() in cmdline


def runner_alive(runs_dir: Any) -> bool:
    return is_runner(read(runs_dir).get("runner_pid"))


def ensure_runner(runs_dir: Any) -> int | None:
    """Start the runner unless one is alive; returns its pid (None if nothing is queued and
    none runs). The check and the start happen under the queue lock, and the new pid is
    written before it is released, so two callers never start two runners."""
    runs_dir = Path(runs_dir).resolve()
    with editing(runs_dir) as data:
        if is_runner(data.get("runner_pid")):
            return data["runner_pid"]
        if not any(it.get("state") == ItemState.QUEUED for it in data["items"]):
            data["runner_pid"] = None
            return None
        data["runner_pid"] = _spawn_runner(runs_dir)
        return data["runner_pid"]


def _spawn_runner(runs_dir: Path) -> int:
    with open(runs_dir / LOG_FILE, "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", RUNNER_MODULE, "run", "--runs-dir", str(runs_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,  # survives the app and its terminal
        )
    return proc.pid
