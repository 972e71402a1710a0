"""Line charts in the terminal, drawn by plotext; the widget that shows them is
:class:`tui.widgets.chart_view.ChartView`. Nothing here imports Textual.

:func:`render_chart` turns a few named series into an ANSI string of an exact size: one
header row (the title and a coloured legend) above a plotext chart. The legend lives in
the header rather than inside the plot so that it never hides the curves. Validation
series are drawn as markers over the training lines.

plotext keeps one global figure, so every build holds :data:`_PLOT_LOCK`: a chart may be
rendered from a worker thread while another renders on the event loop.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import plotext as plt

from tui.series import downsample

__all__ = ["ChartSeries", "render_chart", "visible_lines", "WAITING", "PALETTE"]

WAITING = "waiting for data…"
NO_POSITIVE = "no positive values for a log scale"
NO_FINITE = "no finite values to draw"
TOO_SMALL = "(too small for a chart)"

# 256-colour indices: bright enough on a dark background, still legible on a light one,
# and far enough apart in hue to tell up to six curves apart.
PALETTE = (39, 208, 77, 170, 220, 203)

LINE_GLYPH = "━"
POINT_GLYPH = "◆"

# Below this many rows for the plot itself there is no room for a canvas between the
# frame and the tick labels; the axis label is only worth a row on a roomy chart.
_MIN_PLOT_ROWS = 4
_MIN_WIDTH = 16
_XLABEL_MIN_ROWS = 10

_PLOT_LOCK = threading.Lock()
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class ChartSeries:
    """One named curve. ``style`` is ``"line"`` (a connected braille line, for training
    reports) or ``"points"`` (a marker per value, for validation). ``color`` is a 256-colour
    index (the same code in plotext and in the legend); None takes the next one from
    :data:`PALETTE`."""

    label: str
    steps: Sequence[float]
    values: Sequence[float]
    style: str = "line"
    color: int | None = None

    def __post_init__(self) -> None:
        if self.style not in ("line", "points"):
            raise ValueError(f"style must be 'line' or 'points', got {self.style!r}")
        if len(self.steps) != len(self.values):
            raise ValueError(f"{self.label}: {len(self.steps)} steps but {len(self.values)} values")


def visible_lines(ansi: str) -> list[str]:
    """The rows of a rendered chart as the eye sees them (escape codes removed)."""
    return _ANSI.sub("", ansi).split("\n")


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------


def render_chart(
    series: Sequence[ChartSeries],
    width: int,
    height: int,
    *,
    title: str = "",
    log_y: bool = False,
    xlabel: str = "step",
) -> str:
    """An ANSI string of exactly ``height`` rows, none wider than ``width`` columns.

    Row one holds ``title`` and the legend (each label after a sample of its colour and
    glyph; labels that do not fit are cut). The rest is the chart. Non-finite values are
    not drawn, and with ``log_y`` neither are values ≤ 0. A series with more points than
    the chart has room for is reduced by :func:`tui.series.downsample` (steps must be
    ascending), so passing a whole track is correct, only slower than passing it already
    reduced. With nothing left to draw the chart area says so (:data:`WAITING` when there
    is no data at all).
    """
    if width <= 0 or height <= 0:
        return ""
    colors = _assign_colors(series)
    header = _header(title, series, colors, width)
    if height == 1:
        return header
    body_rows = height - 1
    drawable = [_drawable(s, log_y, width) for s in series]
    if not any(xs for xs, _ in drawable):
        body = _message(_empty_reason(series, log_y), width, body_rows)
    elif width < _MIN_WIDTH or body_rows < _MIN_PLOT_ROWS:
        body = _message(TOO_SMALL, width, body_rows)
    else:
        body = _plot(series, drawable, colors, width, body_rows, log_y=log_y, xlabel=xlabel)
    return header + "\n" + body


def _assign_colors(series: Sequence[ChartSeries]) -> list:
    auto = iter(PALETTE * (len(series) // len(PALETTE) + 1))
    return [s.color if s.color is not None else next(auto) for s in series]


def _drawable(s: ChartSeries, log_y: bool, width: int) -> tuple[list, list]:
    # More points than columns only slow plotext down; downsample also drops non-finite.
    xs, ys = downsample(s.steps, s.values, width)
    if not log_y:
        return xs, ys
    keep = [i for i, y in enumerate(ys) if y > 0]
    return [xs[i] for i in keep], [ys[i] for i in keep]


def _empty_reason(series: Sequence[ChartSeries], log_y: bool) -> str:
    values = [v for s in series for v in s.values]
    if not values:
        return WAITING
    if log_y and any(math.isfinite(v) for v in values):
        return NO_POSITIVE
    return NO_FINITE


def _colored(glyph: str, color: int) -> str:
    return f"\x1b[38;5;{color}m{glyph}\x1b[0m"


def _header(title: str, series: Sequence[ChartSeries], colors: list, width: int) -> str:
    used = min(len(title), width)
    out = f"\x1b[1m{title[:used]}\x1b[0m" if used else ""
    for s, color in zip(series, colors):
        glyph = LINE_GLYPH if s.style == "line" else POINT_GLYPH
        gap = 2 if used else 0
        room = width - used - gap - 2  # glyph and a space before the label
        if room < 1:
            break
        label = s.label if len(s.label) <= room else s.label[: max(room - 1, 0)] + "…"
        out += " " * gap + _colored(glyph, color) + " " + label
        used += gap + 2 + len(label)
        if label != s.label:
            break
    return out


def _message(text: str, width: int, rows: int) -> str:
    text = text if len(text) <= width else text[: max(width - 1, 0)] + "…"
    lines = [""] * rows
    lines[(rows - 1) // 2] = text.center(width).rstrip()
    return "\n".join(lines)


def _plot(series, drawable, colors, width: int, rows: int, *, log_y: bool, xlabel: str) -> str:
    # Markers go on last so that a validation point is never painted over by a line.
    order = sorted(range(len(series)), key=lambda i: series[i].style == "points")
    with _PLOT_LOCK:
        fig = plt.figure
        fig.clear()
        plt.terminal.limit(False, False)  # size from plot_size, not from the real terminal
        fig.plot_size(width, rows)
        fig.theme("simple")  # frame and ticks in the widget's own colours
        for i in order:
            xs, ys = drawable[i]
            if xs:
                fig.draw(_signal(fig, series[i], xs, ys, colors[i]))
        if xlabel and rows >= _XLABEL_MIN_ROWS:
            fig.label(xlabel, "x")
        _x_ticks(fig, drawable, width)
        if log_y:
            fig.ruler("y").scale("log")
        out = fig.build().string()
    return _fit_rows(out, rows)


def _signal(fig, s: ChartSeries, xs: list, ys: list, color):
    pixel = plt.pixel(foreground=color)
    if s.style == "points":
        return fig.signal(xs, ys, marker=plt.marker(POINT_GLYPH, pixel))
    return fig.signal(xs, ys, marker=plt.marker("braille", pixel)).lines()


def _x_ticks(fig, drawable, width: int) -> None:
    xs = [x for pts, _ in drawable if pts for x in (pts[0], pts[-1])]
    lo, hi = min(xs), max(xs)
    # About one tick per ten columns of canvas leaves room for labels like "12.5k".
    ticks = nice_ticks(lo, hi, max(2, (width - 8) // 10))
    fig.ruler("x").ticks(ticks, [step_label(t) for t in ticks])


def _fit_rows(ansi: str, rows: int) -> str:
    # plotext builds the size it was asked for; this only guards against a version that
    # adds or drops a trailing row.
    lines = ansi.rstrip("\n").split("\n")[:rows]
    lines += [""] * (rows - len(lines))
    return "\n".join(lines)


def nice_ticks(lo: float, hi: float, most: int) -> list[float]:
    """Up to ``most`` ticks at round steps (1, 2 or 5 times a power of ten, never below
    1 since steps are whole numbers) covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(most - 1, 1)
    base = 10 ** math.floor(math.log10(raw))
    step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
    step = max(step, 1.0)
    first = math.ceil(lo / step) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [first + k * step for k in range(count)]


def step_label(x: float) -> str:
    """A short label for a step count: 950, 12.5k, 1.2M."""
    for scale, suffix in ((1e6, "M"), (1e4, "k")):
        if abs(x) >= scale:
            unit = scale if suffix == "M" else 1e3
            return f"{x / unit:.4g}{suffix}"
    return f"{x:.6g}"
