"""The sweep queue: runs waiting their turn, executed one after another by a detached runner.

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

The runner (``python -m trainer.queue run --runs-dir DIR``) holds ``queue.runner.lock`` for
its lifetime so only one runs per folder; it takes the first queued item, starts
``orpo-train --log-only`` for it in its own session, waits, records the outcome, and exits
when nothing is left to run. ``ensure_runner`` starts it again on demand.

Pure module: standard library plus trainer.config / trainer.runs; no mlx, no textual.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from trainer.config import ConfigError, apply_overrides, load_preset, parse_value, validate_field
from trainer.runs import atomic_write_json, pid_alive, read_status, sanitize_label

__all__ = [
    "QUEUE_FILE",
    "ITEM_STATES",
    "sweep_items",
    "add",
    "read",
    "move",
    "set_paused",
    "cancel",
    "cancel_all",
    "runner_alive",
    "ensure_runner",
    "run_queue",
]

QUEUE_FILE = "queue.json"
LOCK_FILE = "queue.lock"
RUNNER_LOCK_FILE = "queue.runner.lock"
LOG_FILE = "queue.log"

ITEM_STATES = ("queued", "running", "done", "failed", "cancelled", "stopped")
FINAL_STATES = ("done", "failed", "cancelled", "stopped")
EXIT_STOPPED = 130  # orpo-train's "stopped by the user"
POLL_S = 1.0


def _empty() -> dict:
    return {"v": 1, "paused": False, "runner_pid": None, "items": []}


# ---------------------------------------------------------------------------- the file


def read(runs_dir: Any) -> dict:
    """The queue as it is now (an empty one when there is no readable file). Needs no lock:
    the file is only ever replaced whole."""
    try:
        data = json.loads((Path(runs_dir) / QUEUE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _empty()
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        return _empty()
    return {**_empty(), **data}


@contextlib.contextmanager
def _flock(path: Path, blocking: bool = True) -> Iterator[bool]:
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
def _editing(runs_dir: Any) -> Iterator[dict]:
    """Read the queue under its lock and write back whatever the block changed."""
    runs_dir = Path(runs_dir)
    with _flock(runs_dir / LOCK_FILE):
        data = read(runs_dir)
        before = json.dumps(data, sort_keys=True)
        yield data
        if json.dumps(data, sort_keys=True) != before:
            atomic_write_json(runs_dir / QUEUE_FILE, data)


def _find(data: dict, item_id: str) -> Optional[dict]:
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
        "state": "queued",
        "run_dir": None,
        "exit_code": None,
        "added_at": time.time(),
        "started_at": None,
        "ended_at": None,
    }


# ---------------------------------------------------------------------------- editing the queue


def add(runs_dir: Any, items: Sequence[dict]) -> list:
    """Append items (from :func:`sweep_items`) at the end of the queue; returns their ids."""
    with _editing(runs_dir) as data:
        data["items"].extend(dict(it) for it in items)
    return [it["id"] for it in items]


def move(runs_dir: Any, item_id: str, delta: int) -> bool:
    """Move a queued item ``delta`` places among the queued items (negative: sooner).
    Items that already ran keep their places; returns whether anything moved."""
    with _editing(runs_dir) as data:
        slots = [i for i, it in enumerate(data["items"]) if it.get("state") == "queued"]
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
    with _editing(runs_dir) as data:
        data["paused"] = bool(paused)


def cancel(runs_dir: Any, item_id: str) -> bool:
    """Cancel one item: a queued one at once; a running one is asked to stop (SIGINT, so it
    saves a checkpoint) and the runner marks it cancelled when it exits. Returns whether
    the item was still cancellable."""
    with _editing(runs_dir) as data:
        item = _find(data, item_id)
        return item is not None and _cancel_item(item)


def cancel_all(runs_dir: Any) -> int:
    """Cancel every queued and running item; returns how many."""
    with _editing(runs_dir) as data:
        return sum(_cancel_item(item) for item in data["items"])


def _cancel_item(item: dict) -> bool:
    if item.get("state") == "queued":
        item.update(state="cancelled", ended_at=time.time())
        return True
    if item.get("state") == "running":
        item["cancel_requested"] = True
        _signal_cancel(item)
        return True
    return False


def _trainer_pid(item: dict) -> Optional[int]:
    status = read_status(item["run_dir"]) if item.get("run_dir") else None
    return (status or {}).get("pid") or item.get("pid")


def _signal_cancel(item: dict) -> None:
    """SIGINT a running item's trainer once (a second SIGINT would make it stop without
    saving). Called under the queue lock by both cancel() and the runner, since the trainer's
    pid may not be known yet when the user cancels."""
    if not item.get("cancel_requested") or item.get("signalled"):
        return
    pid = _trainer_pid(item)
    if pid and pid_alive(pid):
        try:
            os.kill(pid, signal.SIGINT)
            item["signalled"] = True
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------- the runner's life


def _is_runner(pid: Any) -> bool:
    """A live queue runner with this pid; on Linux its command line is checked too, so a
    recycled pid is not mistaken for one."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid
    return b"trainer.queue" in cmdline


def runner_alive(runs_dir: Any) -> bool:
    return _is_runner(read(runs_dir).get("runner_pid"))


def ensure_runner(runs_dir: Any) -> Optional[int]:
    """Start the runner unless one is alive; returns its pid (None if nothing is queued and
    none runs). The check and the start happen under the queue lock, and the new pid is
    written before it is released, so two callers never start two runners."""
    runs_dir = Path(runs_dir).resolve()
    with _editing(runs_dir) as data:
        if _is_runner(data.get("runner_pid")):
            return data["runner_pid"]
        if not any(it.get("state") == "queued" for it in data["items"]):
            data["runner_pid"] = None
            return None
        data["runner_pid"] = _spawn_runner(runs_dir)
        return data["runner_pid"]


def _spawn_runner(runs_dir: Path) -> int:
    with open(runs_dir / LOG_FILE, "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trainer.queue", "run", "--runs-dir", str(runs_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,  # survives the app and its terminal
        )
    return proc.pid


def _log(message: str) -> None:
    # stdout is queue.log when ensure_runner started us.
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


class _Runner:
    """One pass over the queue at a time; the signal handlers only set flags that the
    polling loops read, so no state is changed from inside a handler."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self.terminating = False

    def on_sigterm(self, _signum, _frame) -> None:
        self.terminating = True

    def loop(self) -> int:
        self._adopt_orphans()
        while not self.terminating:
            item = self._claim_next()
            if item is None:
                return 0
            if item == "idle":
                time.sleep(POLL_S)
                continue
            self._execute(item)
        self._release()
        return 0

    def _claim_next(self):
        """Mark the first queued item running and return it; "idle" while paused; None (and
        give up the runner role) when nothing is queued."""
        with _editing(self.runs_dir) as data:
            data["runner_pid"] = os.getpid()
            item = next((it for it in data["items"] if it.get("state") == "queued"), None)
            if item is None:
                data["runner_pid"] = None
                _log("queue empty; runner exits")
                return None
            if data.get("paused"):
                return "idle"
            item.update(state="running", started_at=time.time())
            _log(f"{item['id']} {item['label']}: running")
            return dict(item)

    def _release(self) -> None:
        with _editing(self.runs_dir) as data:
            if data.get("runner_pid") == os.getpid():
                data["runner_pid"] = None
        _log("terminated; runner exits")

    def _update(self, item_id: str, fn: Callable[[dict], None]) -> dict:
        with _editing(self.runs_dir) as data:
            item = _find(data, item_id)
            if item is not None:
                fn(item)
            return dict(item or {})

    def _execute(self, item: dict) -> None:
        proc = _start_trainer(item, self.runs_dir)
        line = proc.stdout.readline().strip()
        proc.stdout.close()  # --log-only: nothing more comes there
        run_dir = str(Path(line).resolve()) if line else None
        self._update(item["id"], lambda it: it.update(run_dir=run_dir, pid=proc.pid))
        if run_dir:
            _log(f"{item['id']} {item['label']}: run {run_dir} (pid {proc.pid})")
        code = self._wait(item["id"], proc)
        self._finish(item["id"], code)

    def _wait(self, item_id: str, proc: subprocess.Popen) -> int:
        """Wait for the trainer, passing on a cancel from the app or our own SIGTERM."""
        while True:
            try:
                return proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
            stop = self.terminating

            def request(it: dict) -> None:
                if stop and not it.get("stop_requested"):
                    it["stop_requested"] = True
                    if not it.get("signalled"):
                        it["signalled"] = _sigint(proc.pid)
                _signal_cancel(it)

            self._update(item_id, request)

    def _finish(self, item_id: str, code: int) -> None:
        def outcome(it: dict) -> None:
            if it.get("cancel_requested"):
                state = "cancelled"
            elif code == 0:
                state = "done"
            elif code == EXIT_STOPPED or it.get("stop_requested"):
                state = "stopped"
            else:
                state = "failed"
            it.update(state=state, exit_code=code, ended_at=time.time())

        item = self._update(item_id, outcome)
        _log(f"{item_id} {item.get('label')}: {item.get('state')} (exit {code})")

    def _adopt_orphans(self) -> None:
        """Items left "running" by a runner that died: wait for a trainer that still lives
        (it runs in its own session), then take the outcome from its status.json."""
        for item in read(self.runs_dir)["items"]:
            if item.get("state") != "running":
                continue
            pid = _trainer_pid(item)
            while pid and pid_alive(pid) and not self.terminating:
                time.sleep(POLL_S)
            if self.terminating:
                return
            state = (read_status(item["run_dir"]) or {}).get("state") if item.get("run_dir") else None
            final = {"completed": "done", "stopped": "stopped"}.get(state, "failed")
            if item.get("cancel_requested"):
                final = "cancelled"
            self._update(item["id"], lambda it: it.update(state=final, ended_at=time.time()))
            _log(f"{item['id']} {item.get('label')}: {final} (adopted after a runner restart)")


def _sigint(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGINT)
        return True
    except ProcessLookupError:
        return False


def _start_trainer(item: dict, runs_dir: Path) -> subprocess.Popen:
    name = sanitize_label(item.get("label") or "")
    sets = [x for o in [*item.get("overrides", []), f"output.name={name}"] for x in ("--set", o)]
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", item["preset"], "--runs-dir", str(runs_dir), "--log-only", *sets],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,  # stderr: queue.log
        start_new_session=True,  # our SIGTERM/SIGINT decisions reach it only on purpose
    )


def run_queue(runs_dir: Any) -> int:
    """The runner's main: one per folder; a second one leaves at once (unless ensure_runner
    named it the runner while the previous one was still on its way out)."""
    runs_dir = Path(runs_dir).resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a dropped SSH link must not end us
    runner = _Runner(runs_dir)
    signal.signal(signal.SIGTERM, runner.on_sigterm)
    registered = read(runs_dir).get("runner_pid")
    if registered != os.getpid() and _is_runner(registered):
        return 0  # one is alive, or just started and not yet holding the lock
    lock = runs_dir / RUNNER_LOCK_FILE
    with _flock(lock, blocking=False) as got:
        if got:
            return runner.loop()
    if read(runs_dir).get("runner_pid") != os.getpid():
        return 0
    with _flock(lock):
        return runner.loop()


# ---------------------------------------------------------------------------- CLI


def _print_status(runs_dir: Path) -> int:
    data = read(runs_dir)
    pid = data.get("runner_pid")
    print(f"runner: {'pid ' + str(pid) if _is_runner(pid) else 'not running'}"
          f"{'  (paused)' if data.get('paused') else ''}")
    for it in data["items"]:
        code = "" if it.get("exit_code") is None else f" exit={it['exit_code']}"
        print(f"{it['id']}  {it['state']:<9}  {it['label']}{code}  {it.get('run_dir') or ''}".rstrip())
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.queue", description="The sweep queue.")
    p.add_argument("command", choices=("run", "status"))
    p.add_argument("--runs-dir", required=True, metavar="DIR")
    args = p.parse_args(argv)
    if args.command == "run":
        return run_queue(args.runs_dir)
    return _print_status(Path(args.runs_dir))


if __name__ == "__main__":
    sys.exit(main())
