"""Starting, stopping and resuming `orpo-train` processes, detached from the app.

A run is started in its own session with no shell, its output going to its own train.log
(the trainer's `--log-only`), so closing the app or losing the SSH link never touches it.
Nothing here imports Textual: the screens call these functions from worker threads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from trainer.pure.rank_status import rank_pids
from trainer.pure.run_lock import holder
from trainer.pure.runs import pid_alive, read_status, write_status
from trainer.pure.states import ACTIVE, RunState
from trainer.pure.trainer_process import RANK_OF_FLAG, error_line, read_run_dir, resume_argv, train_argv


class LaunchError(Exception):
    """The trainer refused to start (bad preset, bad --set); the one line it printed."""


@dataclass
class Launcher:
    """Keeps the Popen objects of the runs this app started, so they are reaped when they
    exit instead of lingering as zombies (runs started elsewhere are watched by pid)."""

    children: dict[int, subprocess.Popen] = field(default_factory=dict)
    # What this app is starting now (a preset's run, a resume): a double key press spawns
    # one trainer. Workers run in threads, so the set has its own lock.
    _in_flight: set[tuple[str, Path]] = field(default_factory=set)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def reap(self) -> None:
        for pid, proc in list(self.children.items()):
            if proc.poll() is not None:
                del self.children[pid]

    @contextmanager
    def _once(self, what: str, path: Path, refusal: str):
        key = (what, Path(path).resolve())
        with self._guard:
            busy = key in self._in_flight
            if not busy:
                self._in_flight.add(key)
        if busy:
            raise LaunchError(refusal)
        try:
            yield
        finally:
            with self._guard:
                self._in_flight.discard(key)

    def start(self, preset: Path, runs_dir: Path, overrides: Sequence[str] = ()) -> Path:
        """Start a run of a preset unless this app is already starting one of it (a double
        key press); once its trainer has said where it runs, the next start is a new run."""
        with self._once("start", preset, f"{Path(preset).name} is already being started"):
            return self._spawn(train_argv(preset, runs_dir, overrides), runs_dir)

    def resume(self, run_dir: Path, overrides: Sequence[str] = ()) -> Path:
        """Resume a run unless a trainer already holds it or this app is already starting one
        for it (a double key press): only then is a process spawned."""
        with self._once("resume", run_dir, f"{run_dir} is already being resumed"):
            pid = _holder_unless_exiting(run_dir)
            if pid is not None:
                raise LaunchError(f"{run_dir} is being trained by pid {pid}" if pid else f"{run_dir} is being trained")
            return self._spawn(resume_argv(run_dir, overrides), run_dir.parent)

    def _spawn(self, argv: list[str], runs_dir: Path, timeout: float = 60) -> Path:
        runs_dir.mkdir(parents=True, exist_ok=True)
        errors = runs_dir / f".launch-{os.getpid()}-{time.monotonic_ns()}.err"
        with errors.open("w") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True, text=True,
            )
        try:
            run_dir = read_run_dir(proc, timeout)
            if run_dir is None:
                proc.wait(timeout=timeout)
                raise LaunchError(error_line(errors.read_text(), proc.returncode))
        finally:
            errors.unlink(missing_ok=True)
        proc.stdout.close()  # the trainer writes nothing more there (--log-only)
        self.children[proc.pid] = proc
        return run_dir


# A trainer that wrote its final status lets go of its run within moments; a resume asked
# for right after a stop waits this long for it instead of being refused.
EXIT_GRACE_S = 15.0


def _holder_unless_exiting(run_dir: Path) -> int | None:
    """The pid holding the run, after giving a trainer that has finished writing (its status
    is no longer active) time to exit."""
    deadline = time.monotonic() + EXIT_GRACE_S
    while True:
        pid = holder(run_dir)
        status = read_status(run_dir) or {}
        if pid is None or status.get("state") in ACTIVE or time.monotonic() >= deadline:
            return pid
        time.sleep(0.1)


# ---------------------------------------------------------------------------- stopping


def kill_orphan_ranks(pids: Sequence[int]) -> list[int]:
    """A launcher killed with SIGKILL cannot pass it on: its ranks, each in its own session,
    would train on. End those still alive (a pid whose command line is not a rank's is some
    other process that got the number since, and is left alone). Returns the pids killed."""
    import psutil  # only here: the app starts without it (see tui/resources.py)

    killed = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if RANK_OF_FLAG not in proc.cmdline():
                continue
            proc.kill()
            killed.append(pid)
        except psutil.Error:
            continue
    return killed

STOP_PHASES = ("SIGINT", "SIGTERM", "SIGKILL")


def stop_process(pid: int, on_phase: Callable[[str, float], None] = lambda phase, wait: None,
                 waits: Sequence[float] = (60.0, 15.0, 5.0), alive: Callable[[int], bool] = pid_alive) -> str:
    """Ask politely, then firmly, then end it: SIGINT lets the trainer finish its step and
    save; SIGTERM (its second signal) makes it stop at once; SIGKILL if it still lives.
    Returns the phase that ended the process ("" if it was already gone)."""
    for phase, wait in zip(STOP_PHASES, waits):
        if not alive(pid):
            return ""
        on_phase(phase, wait)
        try:
            os.kill(pid, getattr(signal, phase))
        except ProcessLookupError:
            return phase
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                return phase
            time.sleep(0.1)
    return STOP_PHASES[-1]


def stop_run(run_dir: Path, on_phase: Callable[[str, float], None] = lambda phase, wait: None,
             waits: Sequence[float] = (60.0, 15.0, 5.0), alive: Callable[[int], bool] = pid_alive) -> str:
    """Stop a run's trainer; after a SIGKILL the trainer could not record its own end, so the
    status says what happened (its last checkpoint is intact and resumable)."""
    status = read_status(run_dir) or {}
    pid = status.get("pid")
    if not pid or status.get("state") not in ACTIVE:
        return ""
    ended_by = stop_process(pid, on_phase, waits, alive)
    if ended_by == "SIGKILL":
        kill_orphan_ranks(rank_pids(status) or [])
        write_status(run_dir, state=RunState.STOPPED, ended_at=time.time(),
                     error="killed with SIGKILL after ignoring SIGINT and SIGTERM; resumes from its last checkpoint")
    return ended_by
