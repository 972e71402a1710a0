"""The lines a trainer writes into its run's train.log, written and recognised here.

Its own lines start with a time stamp (``[12:34:56] step 10/200: loss ...``). Everything
else in the file is what the process printed with ``--log-only`` (warnings, a Python
traceback, a C++ runtime abort) or faulthandler's dump of a fatal signal. Each trainer
first writes :func:`start_line`, so a reader can tell the attempts of a resumed run apart,
and on failure :func:`failure_line`.

Pure module: no mlx, no textual.
"""

from __future__ import annotations

import re
import time

__all__ = ["stamped", "is_stamped", "start_line", "is_start_line", "failure_line", "is_failure_line"]

_STAMP = "[%H:%M:%S] "
_STAMPED = re.compile(r"^\[\d\d:\d\d:\d\d\] ")
_START = "orpo-train started, pid"
_FAILED = "failed: "


def stamped(message: str, now: float | None = None) -> str:
    return time.strftime(_STAMP, time.localtime(now)) + message


def is_stamped(line: str) -> bool:
    return bool(_STAMPED.match(line))


def start_line(pid: int) -> str:
    return f"{_START} {pid}"


def is_start_line(line: str) -> bool:
    return is_stamped(line) and line[_STAMPED.match(line).end():].startswith(_START)


def failure_line(message: str) -> str:
    return f"{_FAILED}{message}"


def is_failure_line(line: str) -> bool:
    return is_stamped(line) and line[_STAMPED.match(line).end():].startswith(_FAILED)
