"""Run directories: creating, listing and trashing them, and their status file.

A run directory is the whole truth about a run (its layout: trainer.pure.run_folder): the
app may be closed or opened twice, so everything here works from the files alone.
The status file is only ever replaced atomically, so a reader sees either the
old or the new version, never half of one.

Only the trainer process should call :func:`write_status` for a run: it
reads, merges and replaces, which is not atomic across writers.

Pure module: no mlx, no textual.
"""

import errno
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trainer.pure.run_folder import RunFolder
from trainer.pure.run_lock import exclusive
from trainer.pure.states import ACTIVE, WRITTEN, RunState

__all__ = [
    "TRASH_DIR",
    "move_to_trash",
    "trash_run",
    "run_label",
    "atomic_write_text",
    "atomic_write_json",
    "create_run_dir",
    "sanitize_label",
    "write_status",
    "read_status",
    "pid_alive",
    "effective_state",
    "list_runs",
]

TRASH_DIR = ".trash"

_STATUS_DEFAULTS = {
    "state": RunState.PENDING.value,
    "pid": None,
    "started_at": None,
    "ended_at": None,
    "step": 0,
    "total_steps": None,
    "error": None,
    "updated_at": None,
}


# --------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform allows opening a
    # directory, and losing this only weakens crash safety, so errors pass.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Any, text: str) -> None:
    """Replace ``path`` with ``text`` so readers never see a partial file.

    The temp file lives in the same directory because ``os.replace`` is only
    atomic within one file system.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; these are ordinary user documents.
        try:
            os.chmod(tmp, 0o644)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Any, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (strict: no NaN tokens)."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


# --------------------------------------------------------------------------
# Creating run directories
# --------------------------------------------------------------------------


def sanitize_label(label: str) -> str:
    """A label safe for a folder name: ``[A-Za-z0-9._-]``, not hidden, not empty."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", label or "")
    clean = clean.strip(".-")[:64].rstrip(".-")
    return clean or "run"


def create_run_dir(runs_dir: Any, label: str, now: float | None = None) -> Path:
    """Create and return ``runs_dir/<YYYYmmdd-HHMMSS>-<label>/``.

    Two runs started in the same second get ``-2``, ``-3``...  ``os.mkdir``
    fails if the folder exists, so two processes can never share one.
    """
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = f"{stamp}-{sanitize_label(label)}"
    n = 1
    while True:
        candidate = runs_dir / (base if n == 1 else f"{base}-{n}")
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            n += 1


# --------------------------------------------------------------------------
# status.json
# --------------------------------------------------------------------------


def _one_line(text: Any) -> str | None:
    if text is None:
        return None
    return " ".join(str(text).split())


DAMAGED = "damaged"  # key a reader adds to a status it could not take as written


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _moment(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


# What each field may hold; anything else is replaced by its default and reported.
_FIELD_OK = {
    "state": lambda v: v in WRITTEN,
    "pid": lambda v: v is None or (_whole(v) and v > 0),
    "started_at": lambda v: v is None or _moment(v),
    "ended_at": lambda v: v is None or _moment(v),
    "updated_at": lambda v: v is None or _moment(v),
    "step": lambda v: _whole(v) and v >= 0,
    "total_steps": lambda v: v is None or (_whole(v) and v >= 0),
    "error": lambda v: v is None or isinstance(v, str),
}


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def read_status(run_dir: Any) -> dict | None:
    """The run's status with every schema key present and of its type, or None when there is
    no status file (a folder someone made by hand, or a run from before statuses).

    A file that cannot be read or parsed, or a field of the wrong type or value, does not
    raise: the status comes back with that field at its default (``state`` None for an
    unreadable file) and a one-line reason under :data:`DAMAGED`, which the app shows."""
    path = RunFolder(run_dir).status
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {**_STATUS_DEFAULTS, "state": None, DAMAGED: f"{path.name}: cannot be read: {exc.strerror or exc}"}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # JSON, UTF-8, or absurd nesting
        why = "is empty" if not raw.strip() else "is not valid JSON"
        return {**_STATUS_DEFAULTS, "state": None, DAMAGED: f"{path.name} {why}"}
    if not isinstance(data, dict):
        return {**_STATUS_DEFAULTS, "state": None, DAMAGED: f"{path.name} is not a JSON object"}
    status = {**_STATUS_DEFAULTS, **data}
    for key, ok in _FIELD_OK.items():
        if not ok(status[key]):
            if DAMAGED not in status:
                status[DAMAGED] = f"{path.name}: {key} = {_short(status[key])} is not valid"
            status[key] = None if key == "state" else _STATUS_DEFAULTS[key]
    return status


def write_status(run_dir: Any, **fields: Any) -> dict:
    """Merge ``fields`` into the run's status and write it atomically.

    ``updated_at`` is set to now; ``error`` is folded onto one line.
    Returns the status as written.
    """
    state = fields.get("state")
    if state is not None:
        if state not in WRITTEN:
            raise ValueError(f"unknown run state {state!r}; expected one of {', '.join(map(str, WRITTEN))}")
        fields["state"] = RunState(state).value
    if "error" in fields:
        fields["error"] = _one_line(fields["error"])
    status = read_status(run_dir) or dict(_STATUS_DEFAULTS)
    # What could not be read is replaced, not carried on: the trainer's write repairs it.
    status.pop(DAMAGED, None)
    if status["state"] is None:
        status["state"] = _STATUS_DEFAULTS["state"]
    status.update(fields)
    status["updated_at"] = time.time()
    _write_status_file(RunFolder(run_dir).status, status)
    return status


# Status files are padded to this size (JSON allows trailing whitespace), so that on a full
# disk the final status can still be written into the blocks the file already has.
STATUS_FILE_BYTES = 4096


def _write_status_file(path: Path, status: dict) -> None:
    text = json.dumps(status, indent=2, allow_nan=False) + "\n"
    padded = text.ljust(STATUS_FILE_BYTES) if len(text) < STATUS_FILE_BYTES else text
    try:
        atomic_write_text(path, padded)
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        original = exc
    # No room for a temporary copy: overwrite the existing file in place, within its size.
    # Not atomic, but a reader that catches it half-written sees a damaged status for an
    # instant, which is better than a run that says "running" forever.
    data = padded.encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        raise original from None
    try:
        if len(data) > os.fstat(fd).st_size:
            raise original
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# Liveness
# --------------------------------------------------------------------------


def _is_zombie(pid: int) -> bool:
    """True when ``pid`` has exited but not been reaped.

    For our own children ``waitid(WNOWAIT)`` peeks without reaping, so a
    ``subprocess.Popen`` holding the pid still gets the real exit code.  On
    Linux, /proc also covers zombies whose parent is another process.
    """
    if hasattr(os, "waitid") and hasattr(os, "WNOWAIT"):
        try:
            result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            if result is not None and result.si_pid == pid:
                return True
        except ChildProcessError:
            pass  # not our child
        except OSError:
            pass
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        # The command name is in parentheses and may contain spaces.
        fields = stat[stat.rfind(")") + 2 :].split()
        return bool(fields) and fields[0] in ("Z", "X")
    return False


def pid_alive(pid: Any) -> bool:
    """Whether a process with this pid is running (zombies count as dead).

    A pid recycled by an unrelated process reads as alive; with pids this
    is rare enough that the UI's "crashed" label is still worth having.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return not _is_zombie(pid)


def effective_state(status: dict | None) -> RunState:
    """The state to show: ``crashed`` for an active state whose process is gone (a trainer
    records its pid with its first status, so an active state without one has no process
    either), ``unknown`` when there is no readable status, else the written state."""
    if not status:
        return RunState.UNKNOWN
    try:
        state = RunState(status.get("state"))
    except ValueError:
        return RunState.UNKNOWN
    if state in ACTIVE and not pid_alive(status.get("pid")):
        return RunState.CRASHED
    return state


# --------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------

_STAMP = re.compile(r"^(\d{8}-\d{6})")
_RUN_NAME = re.compile(r"^\d{8}-\d{6}-(.+?)(?:-\d+)?$")


def run_label(name: str) -> str:
    """The label a run folder was created with (`<stamp>-<label>[-N]`), or the whole name
    for a folder someone named by hand."""
    m = _RUN_NAME.match(name)
    return m.group(1) if m else name


def move_to_trash(path: Path) -> Path:
    """Move a file or folder into `.trash/` beside it, stamped so repeated deletes of the
    same name never collide. Nothing is erased: the user can move it back."""
    folder = path.parent / TRASH_DIR
    folder.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder / f"{stamp}-{path.name}"
    n = 2
    while target.exists():
        target = folder / f"{stamp}-{n}-{path.name}"
        n += 1
    path.rename(target)
    return target


def trash_run(run_dir: Path) -> Path:
    """Move a run folder to the trash, holding the run's lock while it moves: a run that a
    trainer holds (training, or still loading) is refused with RunBusy naming its pid, and no
    trainer can take the folder in the middle of the move."""
    with exclusive(run_dir):
        return move_to_trash(Path(run_dir))


def _natural(name: str) -> list:
    # re.split with a group alternates text and digits, so items at the same
    # index always have the same type; "-10" then sorts after "-9".
    return [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", name))]


def _sort_key(run: Path) -> tuple:
    m = _STAMP.match(run.name)
    if m:
        try:
            return (time.mktime(time.strptime(m.group(1), "%Y%m%d-%H%M%S")), _natural(run.name))
        except (ValueError, OverflowError):
            pass
    # A renamed or hand-made folder: fall back to when it was last touched.
    try:
        return (run.stat().st_mtime, _natural(run.name))
    except OSError:
        return (0.0, _natural(run.name))


def list_runs(runs_dir: Any) -> list:
    """Run folders under ``runs_dir`` (those with a config.toml or a
    status.json), newest first; an absent folder has no runs."""
    try:
        entries = list(Path(runs_dir).iterdir())
    except OSError:
        return []
    runs = [p for p in entries if RunFolder(p).is_run()]
    return sorted(runs, key=_sort_key, reverse=True)


def last_sign_of_life(run_dir: Path) -> float | None:
    """When a trainer that died without recording its end was last heard of: the newest
    write to its status, metrics or log (a fatal-signal dump lands in the log as it dies).
    A crashed run's clock stops there instead of running on for ever."""
    folder = RunFolder(run_dir)
    times = []
    for path in (folder.status, folder.metrics, folder.log):
        try:
            times.append(path.stat().st_mtime)
        except OSError:
            pass
    return max(times, default=None)


def run_end_time(run_dir: Path, state: str, status: dict) -> float | None:
    """When the run ended, as far as anyone can tell: None while it is active; the recorded
    end; for a crashed run, its last sign of life."""
    if state in ACTIVE:
        return None
    return status.get("ended_at") or (last_sign_of_life(run_dir) if state == RunState.CRASHED else None)
