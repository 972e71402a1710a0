"""Which sleep inhibitor keeps the machine awake while a process lives, per platform.

A run left training over SSH must not stop because the machine went to sleep. The holder
(the trainer, or the sweep-queue runner) starts the command chosen here and never has to
stop it: it ends by itself when the holder dies, however it dies (SIGKILL included).

- macOS: ``caffeinate -i -w PID``: an idle-sleep power assertion that caffeinate drops when
  process PID exits.
- Linux: ``systemd-inhibit --what=sleep:idle ... cat``, with cat's stdin a pipe whose only
  writer is the holder: when the holder dies the kernel closes its end, cat reads EOF and
  exits, and systemd-inhibit lets go. (Waiting on a pid instead would hang on a holder whose
  parent has not reaped it yet: a zombie still answers ``kill -0``.)
- Anything else, or the tool not installed: no inhibitor, and the holder says so.

Pure module: no mlx, no textual. The process side is trainer.keep_awake.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Inhibitor", "PLATFORM_ENV", "inhibitor_for", "platform_name"]

# Picks the platform whose inhibitor is used instead of sys.platform: how the tests run the
# macOS branch (with a stand-in caffeinate on PATH) on Linux.
PLATFORM_ENV = "ORPO_TUI_SLEEP_PLATFORM"

CAFFEINATE = "caffeinate"
SYSTEMD_INHIBIT = "systemd-inhibit"


@dataclass(frozen=True)
class Inhibitor:
    """The command that holds the machine awake, or why there is none (``argv`` empty)."""

    name: str
    argv: tuple[str, ...] = ()
    # True: it runs until the holder's end of a pipe on its stdin closes; False: it watches
    # the holder's pid itself.
    needs_pipe: bool = False
    missing: str = ""

    @property
    def available(self) -> bool:
        return bool(self.argv)


def platform_name(platform: str) -> str:
    return {"darwin": "macOS", "linux": "Linux", "win32": "Windows"}.get(platform, platform)


def inhibitor_for(platform: str, pid: int, why: str,
                  which: Callable[[str], str | None] = shutil.which) -> Inhibitor:
    """The sleep inhibitor for a holder with ``pid`` on ``platform`` (a ``sys.platform``
    value), or one whose ``missing`` says why there is none."""
    if platform == "darwin":
        path = which(CAFFEINATE)
        if not path:
            return Inhibitor(CAFFEINATE, missing=f"{CAFFEINATE} not found on PATH")
        return Inhibitor(CAFFEINATE, (path, "-i", "-w", str(pid)))
    if platform.startswith("linux"):
        path = which(SYSTEMD_INHIBIT)
        if not path:
            return Inhibitor(SYSTEMD_INHIBIT, missing=f"{SYSTEMD_INHIBIT} not found on PATH")
        return Inhibitor(SYSTEMD_INHIBIT, (path, "--what=sleep:idle", "--mode=block", "--who=orpo-tui",
                                           f"--why={why}", "cat"), needs_pipe=True)
    return Inhibitor("", missing=f"no sleep inhibitor known for {platform_name(platform)}")


def current_platform(environ: dict) -> str:
    return environ.get(PLATFORM_ENV) or sys.platform


__all__ += ["current_platform", "CAFFEINATE", "SYSTEMD_INHIBIT"]
