"""Why a trainer died without writing its final status, from the end of its train.log.

A trainer records its end in status.json; one that is gone with an active state is shown as
``crashed`` (trainer.pure.runs.effective_state). What killed it is in train.log when
anything could write it: faulthandler's ``Fatal Python error: Aborted`` on SIGABRT (the
trainer enables faulthandler into train.log), a Metal abort from MLX
(``[metal::malloc] Resource limit exceeded``, ``kIOGPUCommandBufferCallbackErrorOutOfMemory``)
with the C++ runtime's ``terminating due to uncaught exception`` before it, a Python
traceback. A SIGKILL (the kernel's out-of-memory killer, ``kill -9``) writes nothing.

Only the end of the log is read (:data:`TAIL_BYTES`), and only what the last trainer wrote
(after its start line, trainer.pure.train_log), so a resumed run never shows an earlier
attempt's crash; the trainer's own time-stamped progress lines are not taken for errors.

Pure module: no mlx, no textual.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from trainer.pure.train_log import is_failure_line, is_stamped, is_start_line

__all__ = ["TAIL_BYTES", "NO_ERROR_WRITTEN", "crash_cause", "cause_in_text", "LogCause"]

TAIL_BYTES = 32 * 1024
NO_ERROR_WRITTEN = "killed (no error written)"
MAX_CHARS = 300

# The lines that name a fatal error, best first: the first kind found wins, and within a
# kind the last line. A Metal abort is followed by the C++ runtime's terminate message and
# by faulthandler's "Aborted", which say less about why.
_KINDS = (
    re.compile(r"\[metal::|\[METAL\]|kIOGPUCommandBufferCallbackError", re.IGNORECASE),
    re.compile(r"terminating due to uncaught exception|terminate called after throwing|^\s*what\(\):"),
    re.compile(r"^Fatal Python error:"),
)
_ERROR_WORD = re.compile(r"error|exception", re.IGNORECASE)
_TRACEBACK = "Traceback (most recent call last):"


def cause_in_text(text: str) -> str | None:
    """The line of ``text`` (the end of a train.log) that says why the trainer died, folded
    onto one line; None when no line names an error."""
    lines = text.splitlines()
    last_start = max((i for i, ln in enumerate(lines) if is_start_line(ln)), default=-1)
    lines = lines[last_start + 1:]
    for kind in _KINDS:
        found = [ln for ln in lines if kind.search(ln)]
        if found:
            return _one_line(found[-1])
    best = None
    for i, ln in enumerate(lines):
        if _TRACEBACK in ln:  # the trainer logs the ones it catches after a time stamp
            exc = next((x for x in lines[i + 1:] if x.strip() and not x[0].isspace()), None)
            if exc is not None:
                best = exc
        elif is_failure_line(ln) or _printed_error(ln):
            best = ln
    return _one_line(best) if best is not None else None


def _printed_error(line: str) -> bool:
    # Not the trainer's own progress lines (a data note may well say "error"), nor the
    # indented frames of a stack.
    return bool(line.strip()) and not line[0].isspace() and not is_stamped(line) and bool(_ERROR_WORD.search(line))


def _one_line(line: str) -> str:
    text = " ".join(line.split())
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


def _read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    with path.open("rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(size - limit, 0))
        data = fh.read(limit)
    if size > limit:  # the first line is cut: drop it
        data = data.partition(b"\n")[2]
    return data.decode("utf-8", "replace")


def crash_cause(log_path: Any) -> str:
    """Why the trainer writing ``log_path`` died: its last error line, or
    :data:`NO_ERROR_WRITTEN`; never raises."""
    path = Path(log_path)
    try:
        text = _read_tail(path)
    except FileNotFoundError:
        return NO_ERROR_WRITTEN
    except OSError as exc:
        return f"{NO_ERROR_WRITTEN}; {path.name} cannot be read: {exc.strerror or exc}"
    return cause_in_text(text) or NO_ERROR_WRITTEN


class LogCause:
    """:func:`crash_cause` of one train.log, read again only when its size or modification
    time changed: a list refreshing every few seconds pays one ``stat`` per crashed run."""

    __slots__ = ("path", "_key", "_cause", "reads")

    def __init__(self, log_path: Any):
        self.path = Path(log_path)
        self._key: tuple | None = None
        self._cause = NO_ERROR_WRITTEN
        self.reads = 0

    def current(self) -> str:
        try:
            st = self.path.stat()
            key: tuple | None = (st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        if key is None or key != self._key:
            self._key, self._cause = key, crash_cause(self.path)
            self.reads += 1
        return self._cause
