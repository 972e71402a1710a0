"""A run's metrics as chartable series, fed incrementally from ``metrics.jsonl`` events.

:class:`RunSeries` is what the monitor keeps per run: it takes the events that
:class:`trainer.pure.events.MetricsTail` hands over and files every numeric field of ``train``
and ``val`` events into its own (step, value, time) track. The transforms below turn a
track into what a chart of a given width needs: :func:`ema` smoothing, :func:`last_n`
for a zoom on the recent past, and :func:`downsample`, which keeps every column's
minimum and maximum so that a spike survives the reduction.

Pure module: no textual, no plotext, so it can be tested and benchmarked alone.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Track", "RunSeries", "ema", "last_n", "downsample"]

# Fields every event carries that are not metrics.
_ENVELOPE = frozenset(("v", "event", "step", "time"))

_isfinite = math.isfinite


class Track:
    """One metric of one event kind: parallel arrays of steps, values and times.

    Steps are kept strictly increasing. A resumed run restarts from its last checkpoint and
    reports again steps that the crashed attempt had already reported; the new report wins
    and everything the old attempt logged from that step on is dropped, so the track shows
    the run the checkpoints actually continue.

    Also kept, so that alarms need no scan: where the current trailing run of non-finite
    values began (``bad_since``, ``bad_value``) and the first non-finite value ever seen
    (``first_bad``).
    """

    __slots__ = ("steps", "values", "times", "bad_since", "bad_value", "first_bad")

    def __init__(self) -> None:
        self.steps = array("q")
        self.values = array("d")
        self.times = array("d")
        self.bad_since: int | None = None
        self.bad_value: float | None = None
        self.first_bad: tuple[int, float] | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def append(self, step: int, value: float, time: float) -> None:
        steps = self.steps
        if steps and step <= steps[-1]:
            self._truncate(step)
        self.values.append(value)  # first: an int too big for a double raises before any change
        steps.append(step)
        self.times.append(time)
        # Inlined finite fast path: this runs once per metric per report.
        if _isfinite(value):
            if self.bad_since is not None:
                self.bad_since = self.bad_value = None
        else:
            self._note_bad(step, value)

    def _note_bad(self, step: int, value: float) -> None:
        if self.bad_since is None:
            self.bad_since, self.bad_value = step, value
        if self.first_bad is None:
            self.first_bad = (step, value)

    def _truncate(self, step: int) -> None:
        cut = bisect_left(self.steps, step)
        del self.steps[cut:], self.values[cut:], self.times[cut:]
        # Rare (once per resume), so rebuilding the bookkeeping by a scan is fine.
        self.bad_since = self.bad_value = self.first_bad = None
        for s, v in zip(self.steps, self.values):
            if _isfinite(v):
                self.bad_since = self.bad_value = None
            else:
                self._note_bad(s, v)


class RunSeries:
    """Everything a monitor draws about one run, grown by :meth:`add`.

    ``last_train`` / ``last_val`` map each metric to its most recent value (a metric that a
    later event lacks keeps its older value), plus ``step`` and ``time`` of the newest
    event. ``samples``, ``checkpoints`` and ``status_events`` are the raw events in arrival
    order. ``version`` changes whenever :meth:`add` took in at least one event, so a view
    can skip its redraw when it did not.

    The arrays that :meth:`train` and :meth:`val` return are the live storage, shared for
    speed: read them, never modify them.
    """

    def __init__(self) -> None:
        self._tracks: dict[str, dict[str, Track]] = {"train": {}, "val": {}}
        self.last_train: dict[str, Any] = {}
        self.last_val: dict[str, Any] = {}
        self.samples: list[dict] = []
        self.checkpoints: list[dict] = []
        self.status_events: list[dict] = []
        self.version = 0
        self.ignored = 0  # events of an unknown type or without a usable step

    # -- feeding ---------------------------------------------------------------------------

    def add(self, events: Iterable[dict]) -> int:
        """File a batch of events; returns how many were taken in."""
        taken = 0
        for event in events:
            taken += self._add_one(event)
        if taken:
            self.version += 1
        return taken

    def _add_one(self, event: dict) -> bool:
        kind = event.get("event")
        if kind == "train" or kind == "val":
            step = _as_step(event.get("step"))
            if step is None:
                self.ignored += 1
                return False
            self._add_metrics(kind, step, event)
            return True
        target = {"sample": self.samples, "checkpoint": self.checkpoints, "status": self.status_events}.get(kind)
        if target is None:
            self.ignored += 1
            return False
        target.append(event)
        return True

    def _add_metrics(self, kind: str, step: int, event: dict) -> None:
        tracks = self._tracks[kind]
        last = self.last_train if kind == "train" else self.last_val
        t = event.get("time")
        t = float(t) if _is_number(t) else math.nan
        for name, value in event.items():
            kind_of = type(value)
            # bool is an int subclass, and a flag is not a metric: exact types only.
            if (kind_of is not float and kind_of is not int) or name in _ENVELOPE:
                continue
            track = tracks.get(name)
            if track is None:
                track = tracks[name] = Track()
            try:
                track.append(step, value, t)
            except OverflowError:
                value = math.inf if value > 0 else -math.inf
                track.append(step, value, t)
            last[name] = value
        last["step"] = step
        last["time"] = t

    # -- reading ---------------------------------------------------------------------------

    def train(self, name: str) -> tuple[Sequence[int], Sequence[float]]:
        """(steps, values) of a train metric; empty sequences when never reported."""
        return self._pair("train", name)

    def val(self, name: str) -> tuple[Sequence[int], Sequence[float]]:
        """(steps, values) of a validation metric; empty sequences when never reported."""
        return self._pair("val", name)

    def track(self, kind: str, name: str) -> Track | None:
        """The full track (with times and non-finite bookkeeping), or None."""
        return self._tracks[kind].get(name)

    def names(self, kind: str) -> list[str]:
        """Metric names seen in ``train`` or ``val`` events, in order of first appearance."""
        return list(self._tracks[kind])

    def _pair(self, kind: str, name: str) -> tuple[Sequence[int], Sequence[float]]:
        track = self._tracks[kind].get(name)
        if track is None:
            return array("q"), array("d")
        return track.steps, track.values

    @property
    def last_step(self) -> int:
        """Newest step of any train or val report (0 before the first)."""
        return max(self.last_train.get("step", 0), self.last_val.get("step", 0))


def _is_number(value: Any) -> bool:
    # bool is an int subclass, and a flag is not a metric.
    return type(value) is float or type(value) is int


def _as_step(value: Any) -> int | None:
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    return None


# ------------------------------------------------------------------------------------------
# Transforms
# ------------------------------------------------------------------------------------------


def ema(values: Iterable[float], alpha: float) -> list[float]:
    """Exponential moving average, ``s = alpha * x + (1 - alpha) * s``, seeded by the first
    finite value. ``alpha`` in (0, 1]: 1 is no smoothing.

    A non-finite input is passed through at its own position and left out of the running
    average, so one NaN report shows as a gap instead of turning the rest of the curve NaN.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    keep = 1.0 - alpha
    out: list[float] = []
    push = out.append
    s = math.nan
    for x in values:
        if not _isfinite(x):
            push(x)
        elif s != s:  # first finite value: nothing to average with yet
            s = x
            push(s)
        else:
            s = alpha * x + keep * s
            push(s)
    return out


def last_n(steps: Sequence[int], values: Sequence[float], n: int) -> tuple[list, list]:
    """The newest ``n`` points (all of them when there are fewer)."""
    if n <= 0:
        return [], []
    return list(steps[-n:]), list(values[-n:])


def downsample(steps: Sequence[float], values: Sequence[float], width: int) -> tuple[list, list]:
    """At most two points per column for a chart ``width`` columns wide, plus both ends.

    The step range is cut into ``width`` equal buckets; each bucket keeps its minimum and
    maximum, in step order, so spikes and dips stay visible however many points fall in
    one column. The first and last points are kept too, so the curve starts and ends where
    the data does: the result holds at most ``2 * width + 2`` points.

    ``steps`` must be ascending (as :class:`Track` keeps them). Non-finite values cannot be
    drawn and are dropped. Cost is O(n), and the per-point work runs in C (slices, ``sum``,
    ``min``, ``max``, ``index``) with only O(width) steps in Python, which is what makes
    100k points take milliseconds; a bucket holding a NaN falls back to a Python scan of
    that bucket alone.
    """
    if width < 1:
        raise ValueError(f"width must be at least 1, got {width}")
    n = len(values)
    if n <= 2 * width + 2:
        keep = [i for i in range(n) if _isfinite(values[i])]
    else:
        keep = _bucket_extremes(steps, values, width)
    return [steps[i] for i in keep], [values[i] for i in keep]


def _bucket_extremes(steps: Sequence[float], values: Sequence[float], width: int) -> list[int]:
    n = len(values)
    lo, span = steps[0], steps[-1] - steps[0]
    keep = list(_ends(values))
    start = 0
    for b in range(1, width + 1):
        stop = n if b == width else bisect_right(steps, lo + span * b / width, start)
        if stop > start:
            keep.extend(_extremes(values[start:stop], start))
        start = stop
    return sorted(set(keep))


def _extremes(chunk: Sequence[float], offset: int) -> tuple[int, ...]:
    # min() and max() give arbitrary answers around a NaN, so a chunk whose sum is not
    # finite (it holds a NaN or an infinity) is searched over its finite values only.
    if _isfinite(sum(chunk)):
        return offset + chunk.index(min(chunk)), offset + chunk.index(max(chunk))
    good = [i for i, v in enumerate(chunk) if _isfinite(v)]
    if not good:
        return ()
    at = chunk.__getitem__
    return offset + min(good, key=at), offset + max(good, key=at)


def _ends(values: Sequence[float]) -> tuple[int, ...]:
    n = len(values)
    first = next((i for i in range(n) if _isfinite(values[i])), None)
    if first is None:
        return ()
    last = next(i for i in range(n - 1, -1, -1) if _isfinite(values[i]))
    return first, last


def cursor_move(positions: Sequence[float], current: float | None, delta: int) -> float | None:
    """Where a step cursor goes from ``current`` over sorted ``positions`` (the first press
    shows the newest one; it stops at either end). None when there is nowhere to go."""
    if not positions:
        return None
    if current is None:
        at = len(positions) - 1
    elif delta < 0:
        at = max(bisect_left(positions, current) - 1, 0)
    else:
        at = min(bisect_right(positions, current), len(positions) - 1)
    return positions[at]


def index_at_or_before(steps: Sequence[float], x: float) -> int | None:
    """The index of the last step at or before ``x``, or None when all come after it."""
    at = bisect_right(steps, x) - 1
    return at if at >= 0 else None

