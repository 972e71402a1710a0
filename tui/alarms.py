"""Health checks on a training run, each a one-line alarm the monitor can show.

:func:`health_alarms` looks at a :class:`~tui.series.RunSeries` and reports what a person
watching the curves would want to be told about: values that stopped being numbers, a loss
that stopped moving, a reward accuracy stuck at 0 or 1 from the start, a validation
loss climbing while the training loss keeps falling, and training that slowed down well
below its own pace. :func:`swap_alarm` looks at the swap in use that the app sampled while
the run trained. Every message says what was seen and from which step. Pure module: cheap
enough to run after every batch of new events.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from trainer.pure.metrics import LOSS, PAIRS_PER_SECOND, REWARDS_ACCURACIES
from tui.resources import format_bytes
from tui.series import RunSeries

__all__ = ["Alarm", "health_alarms", "swap_alarm", "NONFINITE", "FLAT", "PINNED", "OVERFIT", "SLOW", "SWAP"]

NONFINITE = "nonfinite"
FLAT = "flat"
PINNED = "pinned"
OVERFIT = "overfit"
SLOW = "slow"
SWAP = "swap"

ACCURACY = REWARDS_ACCURACIES


@dataclass(frozen=True)
class Alarm:
    """``kind`` is one of NONFINITE, FLAT, PINNED, OVERFIT, SLOW, SWAP; ``since_step`` is where the
    condition began (None when no step can be named)."""

    kind: str
    message: str
    since_step: int | None


def health_alarms(
    series: RunSeries,
    *,
    loss: str = LOSS,
    total_steps: int | None = None,
    flat_reports: int = 20,
    flat_rel: float = 1e-3,
    early_steps: int | None = None,
    early_fraction: float = 0.1,
    pinned_reports: int = 5,
    pinned_tol: float = 1e-6,
    rising_points: int = 3,
    trend_reports: int = 3,
    slow_fraction: float = 0.3,
    slow_reports: int = 3,
    slow_min_reports: int = 8,
) -> list[Alarm]:
    """The alarms that hold now, most serious first.

    NONFINITE: the newest value of a train or val metric is NaN or ±inf; ``since_step`` is
    where the unbroken run of non-finite values began. A metric that went non-finite and
    came back is reported too (it should not happen and hints at overflow).

    FLAT: the last ``flat_reports`` train reports of ``loss`` all lie within a band of
    ``flat_rel`` times their mean magnitude. ORPO losses fluctuate by far more than 0.1%
    from batch to batch, so a band that narrow means the weights are not moving (learning
    rate 0, frozen adapters, a constant batch). ``since_step`` is where the flat stretch
    began, traced back past the window as long as it stays within the band.

    PINNED: ``rewards/accuracies`` reported exactly 0 (or exactly 1, within
    ``pinned_tol``) in each of the first ``pinned_reports`` train reports and in every
    report of the early phase. The early phase is the reports at steps up to
    ``early_steps``; when that is None it is ``early_fraction`` of ``total_steps`` (pass
    the value from status.json), and with neither it is just those first reports. Each
    report averages many pairs, so a value that never leaves 0 or 1 while the model is
    still close to its base says the data, not the model, decides: chosen and rejected
    swapped or identical (always 0), or trivially different (always 1).

    OVERFIT: the last ``rising_points`` validation values of ``loss`` each rose, while the
    training loss fell between the first and the last of those validation steps (each
    level taken as the mean of the ``trend_reports`` train reports up to that step, to
    ride over batch noise). ``since_step`` is where the rise began.

    SLOW: the last ``slow_reports`` train reports of pairs/s (at least; the stretch is
    traced back as long as it lasts) each lie more than ``slow_fraction`` below the median
    of all the run's reports, once it has ``slow_min_reports`` of them. A run keeps a steady
    pace on a machine that keeps up with it; a lasting drop is the machine throttling
    (heat), swapping, or sharing with other work. ``since_step`` is the first slow report.
    """
    alarms = _nonfinite(series)
    alarms += _slow(series, slow_fraction, slow_reports, slow_min_reports)
    alarms += _overfit(series, loss, rising_points, trend_reports)
    alarms += _pinned(series, _early_limit(early_steps, early_fraction, total_steps), pinned_reports, pinned_tol)
    alarms += _flat(series, loss, flat_reports, flat_rel)
    return [a for a in alarms if a is not None]


# -- NaN and infinity ---------------------------------------------------------------------


def _nonfinite(series: RunSeries) -> list[Alarm]:
    out = []
    for kind in ("train", "val"):
        prefix = "" if kind == "train" else "val "
        for name in series.names(kind):
            track = series.track(kind, name)
            if track.bad_since is not None:
                message = f"{prefix}{name} is {_word(track.bad_value)} since step {track.bad_since}"
                out.append(Alarm(NONFINITE, message, track.bad_since))
            elif track.first_bad is not None:
                step, value = track.first_bad
                message = f"{prefix}{name} was {_word(value)} at step {step}, finite again since"
                out.append(Alarm(NONFINITE, message, step))
    return out


def _word(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


# -- flat loss ----------------------------------------------------------------------------


def _flat(series: RunSeries, loss: str, reports: int, rel: float) -> list[Alarm]:
    steps, values = series.train(loss)
    n = len(values)
    if reports < 2 or n < reports:
        return []
    window = values[n - reports :]
    if not math.isfinite(sum(window)) or not _within(min(window), max(window), sum(window) / reports, rel):
        return []
    start = _flat_start(values, n - reports, min(window), max(window), rel)
    level = sum(window) / reports
    message = (
        f"{loss} flat at {level:.4g} for {n - start} reports since step {steps[start]} "
        f"(band {max(window) - min(window):.2g})"
    )
    return [Alarm(FLAT, message, int(steps[start]))]


def _within(lo: float, hi: float, level: float, rel: float) -> bool:
    return hi - lo <= rel * max(abs(level), 1e-12)


def _flat_start(values: Sequence[float], start: int, lo: float, hi: float, rel: float) -> int:
    # Walk back while the widened band still qualifies; the band is judged against the
    # values it holds, so a slow drift eventually breaks it.
    total, count = sum(values[start:]), len(values) - start
    while start > 0:
        v = values[start - 1]
        if not math.isfinite(v):
            break
        nlo, nhi = min(lo, v), max(hi, v)
        if not _within(nlo, nhi, (total + v) / (count + 1), rel):
            break
        lo, hi, total, count, start = nlo, nhi, total + v, count + 1, start - 1
    return start


# -- reward accuracy pinned early ---------------------------------------------------------


def _early_limit(early_steps: int | None, fraction: float, total_steps: int | None) -> float | None:
    if early_steps is not None:
        return early_steps
    if total_steps:
        return fraction * total_steps
    return None


def _pinned(series: RunSeries, early_limit: float | None, reports: int, tol: float) -> list[Alarm]:
    steps, values = series.train(ACCURACY)
    if reports < 1 or len(values) < reports:
        return []
    early_count = 0 if early_limit is None else bisect_right(steps, early_limit)
    for target in (0.0, 1.0):
        run = _prefix_at(values, target, tol)
        # A value that left 0 or 1 inside the early phase is learning, not pinning.
        if run >= reports and run >= early_count:
            return [Alarm(PINNED, _pinned_message(steps, run, target, len(values)), int(steps[0]))]
    return []


def _prefix_at(values: Sequence[float], target: float, tol: float) -> int:
    run = 0
    for v in values:
        if not abs(v - target) <= tol:
            break
        run += 1
    return run


def _pinned_message(steps: Sequence[int], run: int, target: float, total: int) -> str:
    cause = "chosen never beats rejected" if target == 0.0 else "chosen always beats rejected"
    where = f"since step {steps[0]}" if run == total else f"steps {steps[0]}–{steps[run - 1]}"
    return f"{ACCURACY} pinned at {target:g} for the first {run} reports ({where}): {cause}, check the data"


# -- validation loss rising while training loss falls -------------------------------------


def _overfit(series: RunSeries, loss: str, points: int, trend_reports: int) -> list[Alarm]:
    vsteps, vvalues = series.val(loss)
    n = len(vvalues)
    if points < 2 or n < points:
        return []
    rise = _rising_start(vvalues)
    if n - rise < points:
        return []
    tsteps, tvalues = series.train(loss)
    first, last = vsteps[n - points], vsteps[n - 1]
    before = _level(tsteps, tvalues, first, trend_reports)
    after = _level(tsteps, tvalues, last, trend_reports)
    if before is None or after is None or not after < before:
        return []
    message = (
        f"val {loss} rising since step {vsteps[rise]} ({vvalues[rise]:.4g} → {vvalues[n - 1]:.4g}) "
        f"while train {loss} falls ({before:.4g} → {after:.4g}): overfitting"
    )
    return [Alarm(OVERFIT, message, int(vsteps[rise]))]


def _rising_start(values: Sequence[float]) -> int:
    i = len(values) - 1
    while i > 0 and values[i - 1] < values[i]:  # False for NaN: a NaN ends the run
        i -= 1
    return i


def _level(steps: Sequence[int], values: Sequence[float], step: int, reports: int) -> float | None:
    end = bisect_right(steps, step)
    window = [v for v in values[max(end - reports, 0) : end] if math.isfinite(v)]
    return sum(window) / len(window) if window else None


# -- throughput fallen below the run's own pace -------------------------------------------


def _slow(series: RunSeries, fraction: float, reports: int, min_reports: int) -> list[Alarm]:
    steps, values = series.train(PAIRS_PER_SECOND)
    finite = sorted(v for v in values if math.isfinite(v))
    if reports < 1 or len(finite) < max(min_reports, reports):
        return []
    median = _median(finite)
    limit = (1.0 - fraction) * median
    start = len(values)
    while start > 0 and values[start - 1] < limit:  # False for NaN: a NaN ends the stretch
        start -= 1
    if len(values) - start < reports:
        return []
    now = values[-1]
    message = (
        f"{PAIRS_PER_SECOND} {now:.3g} is {1 - now / median:.0%} below the run's median {median:.3g} "
        f"for {len(values) - start} reports since step {steps[start]}: thermal throttling, swapping or other load"
    )
    return [Alarm(SLOW, message, int(steps[start]))]


def _median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


# -- swap growing while the run trains ----------------------------------------------------


def swap_alarm(samples: Sequence[tuple[int, float]], min_growth: float = 64 * 2**20) -> Alarm | None:
    """SWAP: the system's swap in use, sampled as (run step, bytes) while the run trains,
    has grown by at least ``min_growth`` bytes above its lowest level in the run. Swap that
    grows during training means the run and everything else no longer fit in memory: each
    step gets slower, and on a Mac oversubscribed unified memory can freeze the machine.
    ``since_step`` is the step of the first sample above that lowest level (the last one,
    when the level was touched again)."""
    if len(samples) < 2:
        return None
    values = [v for _, v in samples]
    low = min(values)
    at_low = len(values) - 1 - values[::-1].index(low)
    if at_low == len(values) - 1 or values[-1] - low < min_growth:
        return None
    since = samples[at_low + 1][0]
    message = (
        f"swap in use grew by {format_bytes(values[-1] - low)} since step {since} ({format_bytes(low)} → {format_bytes(values[-1])}): "
        "the run does not fit in memory"
    )
    return Alarm(SWAP, message, int(since))

