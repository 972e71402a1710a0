"""What the app leaves behind when something it did not expect goes wrong: the traceback in
a crash file, and one line on the terminal saying where it is.

The file goes to the user's state folder (``$XDG_STATE_HOME/orpo-tui``, by default
``~/.local/state/orpo-tui``) and, when that cannot be written (a read-only home, a full
disk), to the system's temporary folder. No Textual here: the CLI prints the line after
the app has left the terminal.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path

__all__ = ["write_crash_file", "crash_folders", "crash_line"]


def crash_folders() -> list[Path]:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return [Path(base) / "orpo-tui", Path(tempfile.gettempdir()) / "orpo-tui"]


def write_crash_file(error: BaseException, context: str = "") -> Path | None:
    """Write the traceback of ``error`` (with ``context``, e.g. the folders in use) and return
    the file, or None when no folder could take it."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    body = f"orpo-tui crashed at {time.strftime('%Y-%m-%d %H:%M:%S')} (pid {os.getpid()})\n{context}\n\n{text}"
    for folder in crash_folders():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"crash-{stamp}-{os.getpid()}.log"
            path.write_text(body, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def crash_line(error: BaseException, path: Path | None) -> str:
    """The one line the user sees on the terminal after the crash."""
    first = (str(error).strip().splitlines() or [""])[0]
    what = f"{type(error).__name__}: {first}" if first else type(error).__name__
    where = f"the traceback is in {path}" if path else "no crash file could be written"
    return f"orpo-tui stopped on an unexpected error: {what}; {where}"
