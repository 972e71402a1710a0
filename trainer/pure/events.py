"""The metrics stream: ``metrics.jsonl`` in a run directory.

One JSON object per line, appended and flushed line by line::

    {"v": 1, "event": "train", "step": 10, "time": 1700000000.0, "loss": 1.23, ...}

``event`` is one of :data:`EVENT_TYPES`; train and val events carry the metrics of the
registry (trainer.pure.metrics: TRL's ORPO names, rates, memory).  ``time`` is seconds
since the epoch, taken when the line is written (after the step's values were
computed).

The schema (version 1), by event:

- ``train``: the ORPO metrics averaged over the steps since the last report, plus
  ``learning_rate``, ``tokens_per_second``, ``pairs_per_second``, and the memory metrics
  ``peak_memory_gb``, ``active_memory_gb``, ``cache_memory_gb``, ``rss_gb``.
- ``val``: the ORPO metrics over the validation batches, plus ``val_time`` (seconds).
  Step 0 is the untrained baseline.
- ``checkpoint``: ``path`` (relative to the run folder); ``best: true`` and ``val_loss`` for
  a new best.
- ``sample``: ``prompt``, ``completion`` (greedy text) and ``index`` per sample prompt.
- ``status``: ``state`` (a run state) and, as they apply, ``resumed``, ``error``,
  ``early_stopped``, ``best_step``.

A resumed run drops the events past its checkpoint's step before it writes again, so the
steps of each event type only grow.

Non-finite numbers.  JSON has no NaN or infinity, and a diverging run is
exactly when a reader must still see what happened, so the writer stores
non-finite floats as the strings ``"nan"``, ``"inf"`` and ``"-inf"``, and
:class:`MetricsTail` turns them back into floats.  The reader converts those
three strings anywhere in a record except the ``event`` field; in ``sample``
events, whose other fields are generated text, only the known metric names
are converted.

Readers skip lines that are not JSON objects and leave a partial last line
(a write in progress) for the next read.

Pure module: no mlx, no textual.
"""

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from trainer.pure.metrics import BY_NAME

__all__ = [
    "SCHEMA_VERSION",
    "EVENT_TYPES",
    "MetricsWriter",
    "MetricsTail",
    "read_events",
    "last_event",
    "last_step",
    "encode_value",
]

SCHEMA_VERSION = 1

EVENT_TYPES = ("train", "val", "checkpoint", "sample", "status")

_RESERVED = ("v", "event", "step", "time")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_METRIC_NAMES = frozenset(BY_NAME)


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    # numpy / mlx scalars expose .item(); handled without importing them.
    item = getattr(value, "item", None)
    if callable(item):
        return _encode(item())
    raise TypeError(f"cannot write {type(value).__name__} to metrics.jsonl")


def encode_value(value: Any) -> Any:
    """``value`` as it may go into strict JSON the way metrics.jsonl writes it: non-finite
    floats as the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    return _encode(value)


class MetricsWriter:
    """Appends events to a metrics.jsonl file, one flushed line each.

    Metric names with a slash go in through a dict:
    ``writer.write("train", 10, **{"loss": 1.2, "rewards/margins": 0.3})``.
    """

    def __init__(self, path: Any):
        self.path = Path(path)
        # Line buffering flushes at every newline, so a reader (or a crash)
        # never loses more than the line being written.
        self._file = open(self.path, "a", buffering=1, encoding="utf-8", newline="\n")

    def write(self, event: str, step: int, *, time: float | None = None, **values: Any) -> dict:
        """Append one event and return the record as written."""
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event!r}; expected one of {', '.join(EVENT_TYPES)}")
        clash = [k for k in values if k in _RESERVED]
        if clash:
            raise ValueError(f"reserved metric name(s): {', '.join(clash)}")
        record = {
            "v": SCHEMA_VERSION,
            "event": event,
            "step": int(step),
            "time": _now() if time is None else float(time),
        }
        record.update({k: _encode(v) for k, v in values.items()})
        # allow_nan=False guarantees the line is standard JSON.
        self._file.write(json.dumps(record, allow_nan=False, ensure_ascii=False) + "\n")
        return record

    def close(self) -> None:
        self._file.close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _now() -> float:
    # `time` is a keyword of write(); keep the module reachable.
    return time.time()


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


def _decode(value: Any) -> Any:
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


def _decode_record(record: dict) -> dict:
    text_event = record.get("event") == "sample"
    out = {}
    for key, value in record.items():
        if key == "event" or (text_event and key not in _METRIC_NAMES):
            out[key] = value
        else:
            out[key] = _decode(value)
    return out


def _parse_line(line: bytes) -> dict | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, absurd nesting
        return None
    return _decode_record(record) if isinstance(record, dict) else None


class MetricsTail:
    """Incremental reader of a metrics.jsonl that another process appends to.

    Each :meth:`read_new` reads only the bytes added since the previous call.
    An unterminated last line is kept in memory until its newline arrives.
    If the file shrinks or is replaced by another file, reading restarts from
    its beginning.  ``skipped`` counts lines that were not JSON objects.
    """

    def __init__(self, path: Any):
        self.path = Path(path)
        self.offset = 0  # bytes consumed, including the pending partial line
        self.skipped = 0
        self.problem: str | None = None  # why the file cannot be read, while it cannot
        self._pending = b""
        self._identity: tuple | None = None

    def _restart(self) -> None:
        self.offset = 0
        self._pending = b""

    def read_new(self) -> list:
        """Events completed since the previous call (oldest first)."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            self.problem = None
            return []
        except OSError as exc:  # a directory in its place, no permission...
            self.problem = f"{self.path.name}: cannot be read: {exc.strerror or exc}"
            return []
        self.problem = None
        with f:
            st = os.fstat(f.fileno())
            identity = (st.st_dev, st.st_ino)
            if identity != self._identity or st.st_size < self.offset:
                if self._identity is not None:
                    self._restart()
                self._identity = identity
            if st.st_size == self.offset:
                return []
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        data = self._pending + chunk
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:]
        return self._parse(data[:cut].split(b"\n"))

    def _parse(self, lines: list) -> list:
        events = []
        for line in lines:
            if not line.strip():
                continue
            record = _parse_line(line)
            if record is None:
                self.skipped += 1
            else:
                events.append(record)
        return events

    def read_rest(self) -> list:
        """Like :meth:`read_new`, then also the unterminated last line if it
        is already a whole JSON object (for reading a finished file)."""
        events = self.read_new()
        if self._pending.strip():
            record = _parse_line(self._pending)
            if record is not None:
                events.append(record)
                self._pending = b""
        return events


def read_events(path: Any) -> list:
    """All events in a metrics file; an absent file has none."""
    return MetricsTail(path).read_rest()


def last_step(path: Any) -> int:
    """The largest step of any ``train`` event (0 when there is none)."""
    best = 0
    for record in read_events(path):
        step = record.get("step")
        if record.get("event") == "train" and isinstance(step, int) and not isinstance(step, bool):
            best = max(best, step)
    return best


def last_event(path: Any, event: str, block: int = 64 * 1024) -> dict | None:
    """The newest event of one type, read from the end of the file backwards block by block,
    so a finished run's last evaluation is found without parsing a long history."""
    try:
        f = open(path, "rb")
    except OSError:
        return None
    with f:
        end = f.seek(0, 2)
        tail = b""
        while end > 0:
            start = max(end - block, 0)
            f.seek(start)
            data = f.read(end - start) + tail
            lines = data.split(b"\n")
            # The first piece may be the end of a line that begins in the block before.
            tail, whole = (lines[0], lines[1:]) if start > 0 else (b"", lines)
            for line in reversed(whole):
                if f'"{event}"'.encode() in line:
                    record = _parse_line(line)
                    if record is not None and record.get("event") == event:
                        return record
            end = start
    return None
