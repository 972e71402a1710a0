"""The sweep queue's runner: one detached process per runs folder that executes the queued
items of ``<runs_dir>/queue.json`` (the document: trainer.pure.queue) one after another.

    python -m trainer.queue_runner run --runs-dir DIR     # what ensure_runner starts
    python -m trainer.queue_runner status --runs-dir DIR  # the queue, for a plain shell

It holds ``queue.runner.lock`` for its lifetime so only one runs per folder; it takes the
first queued item, starts ``orpo-train --log-only`` for it in its own session, waits,
records the outcome, and exits when nothing is left to run. While items run it keeps the
machine awake (trainer.keep_awake), from the first item to the last. SIGTERM and SIGINT
(Ctrl-C on a runner started by hand) both ask the running trainer to save and stop, record
it as stopped, and end the runner; SIGHUP is ignored. A damaged queue.json stops the runner
with a line in queue.log; it is never overwritten. A trainer that died without recording its end (killed,
a Metal abort) cannot run the user's notify_command; the runner runs it for that trainer
(trainer/notify.py), with the run's state as crashed.

No mlx, no textual: the runner only starts trainers.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trainer.keep_awake import KeepAwake
from trainer.notify import notify_run_end
from trainer.pure import queue as Q
from trainer.pure.config import ConfigError, apply_overrides, load_preset
from trainer.pure.runs import effective_state, pid_alive, read_status, sanitize_label
from trainer.pure.states import ItemState, RunState, item_state_after
from trainer.pure.trainer_process import ExitCode, read_run_dir, train_argv

POLL_S = 1.0


def _log(message: str) -> None:
    # stdout is queue.log when ensure_runner started us.
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", flush=True)


class _Runner:
    """One pass over the queue at a time; the signal handlers only set flags that the
    polling loops read, so no state is changed from inside a handler."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self.terminating = False
        self.awake: KeepAwake | None = None

    def on_stop_signal(self, _signum, _frame) -> None:
        self.terminating = True

    def loop(self) -> int:
        try:
            self._adopt_orphans()
            while not self.terminating:
                item = self._claim_next()
                if item is None:
                    return 0
                if item == "idle":
                    time.sleep(POLL_S)
                    continue
                self._keep_awake_for(item)
                self._execute(item)
            self._release()
            return 0
        finally:
            if self.awake is not None:
                self.awake.release()

    def _keep_awake_for(self, item: dict) -> None:
        """Hold the machine awake from the first item to the end of the queue, not only while
        each trainer holds it: between two items nothing would, and a machine idle past its
        sleep time falls asleep the moment the last assertion goes. An item whose config
        turns training.prevent_sleep off lets it sleep again."""
        wanted = _prevents_sleep(item)
        if wanted and self.awake is None:
            self.awake = KeepAwake.start(f"running the sweep queue in {self.runs_dir}")
            self.awake.report(_log)
        elif not wanted and self.awake is not None:
            self.awake.release()
            self.awake = None
            _log(f"{item['id']} {item['label']}: sleep allowed again (training.prevent_sleep = false)")

    def _claim_next(self):
        """Mark the first queued item running and return it; "idle" while paused; None (and
        give up the runner role) when nothing is queued."""
        with Q.editing(self.runs_dir) as data:
            data["runner_pid"] = os.getpid()
            item = next((it for it in data["items"] if it.get("state") == ItemState.QUEUED), None)
            if item is None:
                data["runner_pid"] = None
                _log("queue empty; runner exits")
                return None
            if data.get("paused"):
                return "idle"
            item.update(state=ItemState.RUNNING.value, started_at=time.time())
            _log(f"{item['id']} {item['label']}: running")
            return dict(item)

    def _release(self) -> None:
        with Q.editing(self.runs_dir) as data:
            if data.get("runner_pid") == os.getpid():
                data["runner_pid"] = None
        _log("terminated; runner exits")

    def _update(self, item_id: str, fn: Callable[[dict], None]) -> dict:
        with Q.editing(self.runs_dir) as data:
            item = Q.find(data, item_id)
            if item is not None:
                fn(item)
            return dict(item or {})

    def _execute(self, item: dict) -> None:
        proc = _start_trainer(item, self.runs_dir)
        announced = read_run_dir(proc)
        proc.stdout.close()  # --log-only: nothing more comes there
        run_dir = str(announced.resolve()) if announced else None
        self._update(item["id"], lambda it: it.update(run_dir=run_dir, pid=proc.pid))
        if run_dir:
            _log(f"{item['id']} {item['label']}: run {run_dir} (pid {proc.pid})")
        code = self._wait(item["id"], proc)
        self._finish(item["id"], code)
        if run_dir and effective_state(read_status(run_dir)) == RunState.CRASHED:
            # The trainer notifies of its own end; one that died before it could, we tell of.
            notify_run_end(Path(run_dir), _log)

    def _wait(self, item_id: str, proc: subprocess.Popen) -> int:
        """Wait for the trainer, passing on a cancel from the app or our own stop signal."""
        while True:
            try:
                return proc.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
            stop = self.terminating

            def request(it: dict, stop: bool = stop) -> None:
                if stop and not it.get("stop_requested"):
                    it["stop_requested"] = True
                    if not it.get("signalled"):
                        it["signalled"] = _sigint(proc.pid)
                Q.signal_cancel(it)

            self._update(item_id, request)

    def _finish(self, item_id: str, code: int) -> None:
        def outcome(it: dict) -> None:
            if it.get("cancel_requested"):
                state = ItemState.CANCELLED
            elif code == ExitCode.OK:
                state = ItemState.COMPLETED
            elif code == ExitCode.STOPPED or it.get("stop_requested"):
                state = ItemState.STOPPED
            else:
                state = ItemState.FAILED
            it.update(state=state.value, exit_code=code, ended_at=time.time())

        item = self._update(item_id, outcome)
        _log(f"{item_id} {item.get('label')}: {item.get('state')} (exit {code})")

    def _adopt_orphans(self) -> None:
        """Items left "running" by a runner that died: wait for a trainer that still lives
        (it runs in its own session), then take the outcome from its status.json."""
        for item in Q.read(self.runs_dir)["items"]:
            if item.get("state") != ItemState.RUNNING:
                continue
            pid = Q.trainer_pid(item)
            while pid and pid_alive(pid) and not self.terminating:
                time.sleep(POLL_S)
            if self.terminating:
                return
            state = (read_status(item["run_dir"]) or {}).get("state") if item.get("run_dir") else None
            final = ItemState.CANCELLED if item.get("cancel_requested") else item_state_after(state)
            self._update(item["id"], lambda it, final=final: it.update(state=final.value, ended_at=time.time()))
            _log(f"{item['id']} {item.get('label')}: {final} (adopted after a runner restart)")


def _prevents_sleep(item: dict) -> bool:
    """The item's training.prevent_sleep; a preset that cannot be read counts as the default
    (its trainer reports the problem)."""
    try:
        return apply_overrides(load_preset(item["preset"]), item.get("overrides", [])).training.prevent_sleep
    except (ConfigError, OSError, KeyError, TypeError):
        return True


def _sigint(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGINT)
        return True
    except ProcessLookupError:
        return False


def _start_trainer(item: dict, runs_dir: Path) -> subprocess.Popen:
    name = sanitize_label(item.get("label") or "")
    return subprocess.Popen(
        train_argv(item["preset"], runs_dir, [*item.get("overrides", []), f"output.name={name}"]),
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
    signal.signal(signal.SIGTERM, runner.on_stop_signal)
    signal.signal(signal.SIGINT, runner.on_stop_signal)
    registered = Q.read(runs_dir).get("runner_pid")
    if registered != os.getpid() and Q.is_runner(registered):
        return 0  # one is alive, or just started and not yet holding the lock
    lock = runs_dir / Q.RUNNER_LOCK_FILE
    try:
        with Q.flock(lock, blocking=False) as got:
            if got:
                return runner.loop()
        if Q.read(runs_dir).get("runner_pid") != os.getpid():
            return 0
        with Q.flock(lock):
            return runner.loop()
    except Q.QueueDamaged as exc:
        _log(f"stopped: {exc}")
        return ExitCode.ERROR


# ---------------------------------------------------------------------------- CLI


def _print_status(runs_dir: Path) -> int:
    data = Q.read(runs_dir)
    if Q.DAMAGED in data:
        print(f"{runs_dir / Q.QUEUE_FILE}: {data[Q.DAMAGED]}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    pid = data.get("runner_pid")
    print(f"runner: {'pid ' + str(pid) if Q.is_runner(pid) else 'not running'}"
          f"{'  (paused)' if data.get('paused') else ''}")
    for it in data["items"]:
        code = "" if it.get("exit_code") is None else f" exit={it['exit_code']}"
        print(f"{it['id']}  {it['state']:<9}  {it['label']}{code}  {it.get('run_dir') or ''}".rstrip())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=f"python -m {Q.RUNNER_MODULE}", description="The sweep queue's runner.")
    p.add_argument("command", choices=("run", "status"))
    p.add_argument("--runs-dir", required=True, metavar="DIR")
    args = p.parse_args(argv)
    if args.command == "run":
        return run_queue(args.runs_dir)
    return _print_status(Path(args.runs_dir))


if __name__ == "__main__":
    sys.exit(main())
