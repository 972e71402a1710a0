"""The user's ``notify_command``, run when a run ends: by the trainer itself for a run that
completed, failed or stopped (so a run started from a shell or by the queue notifies with no
app open), and by the queue runner for a trainer that crashed before it could.

The command (trainer/pure/user_settings.py) runs without a shell, in its own session, with
its placeholders filled (trainer/pure/run_end.py); its stdout is dropped and its stderr goes
where the caller's goes (train.log for a trainer started with --log-only, queue.log for the
queue). The caller waits a few seconds to log how it went, then leaves it to finish.

No mlx, no textual.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from trainer.pure.run_end import command_argv, command_env, read_run_end
from trainer.pure.states import RunState
from trainer.pure.user_settings import NOTIFY_COMMAND, notify_settings, read_user_settings

__all__ = ["ENDED", "WAIT_S", "notify_run_end"]

# What a run can end as; a state still active means the trainer has not ended it.
ENDED = (RunState.COMPLETED, RunState.FAILED, RunState.STOPPED, RunState.CRASHED)
WAIT_S = 10.0


def notify_run_end(run_dir: Path, log: Callable[[str], None], state: str | None = None,
                   settings_file: Path | None = None, wait: float = WAIT_S) -> int | None:
    """Run the user's notify_command for this run's end, if there is one. Returns its exit
    code (None when nothing ran or it is still running). Never raises: a notification that
    cannot be sent is a line in the log, not a run that fails."""
    settings, problem = read_user_settings(settings_file)
    if problem:
        log(f"{NOTIFY_COMMAND}: not run: {problem}")
        return None
    notify, problems = notify_settings(settings, settings_file)
    for line in problems:
        log(f"{NOTIFY_COMMAND}: not run: {line}")
    if not notify.command:
        return None
    end = read_run_end(run_dir, state)
    if end.state not in ENDED:
        return None
    argv = command_argv(notify.command, end)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                env={**os.environ, **command_env(end)}, start_new_session=True)
    except OSError as exc:
        log(f"{NOTIFY_COMMAND}: cannot run {argv[0]}: {exc.strerror or exc}")
        return None
    try:
        code = proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        log(f"{NOTIFY_COMMAND}: {argv[0]} still running after {wait:.0f}s; left to finish on its own")
        return None
    log(f"{NOTIFY_COMMAND}: ran {argv[0]} for {end.name} {end.state}" if code == 0
        else f"{NOTIFY_COMMAND}: {argv[0]} exited with {code}")
    return code
