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

from tui.fit import clip
from tui.series import downsample

__all__ = ["ChartSeries", "YScale", "layout_chart", "render_chart", "visible_lines", "WAITING", "NO_VALUES", "PALETTE"]

WAITING = "waiting for data…"
NO_VALUES = "this run recorded no values"  # a finished run's chart of a metric it never logged
NO_POSITIVE = "no positive values for a log scale"
NO_FINITE = "no finite values to draw"
TOO_SMALL = "(too small for a chart)"

# 256-colour indices: bright enough on a dark background, still legible on a light one,
# and far enough apart in hue to tell up to six curves apart.
PALETTE = (39, 208, 77, 170, 220, 203)

CURSOR_COLOR = 250  # light grey: visible on both backgrounds, unlike any series colour

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
    cursor: float | None = None,
    empty: str = WAITING,
) -> str:
    """An ANSI string of exactly ``height`` rows, none wider than ``width`` columns.

    Row one holds ``title`` and the legend (each label after a sample of its colour and
    glyph; labels that do not fit are cut). The rest is the chart. Non-finite values are
    not drawn, and with ``log_y`` neither are values ≤ 0 (the title then says how many were
    hidden). A series with more points than the chart has room for is reduced by
    :func:`tui.series.downsample` (steps must be ascending), so passing a whole track is
    correct, only slower than passing it already reduced. With nothing left to draw the
    chart area says so: ``empty`` when there is no data at all (:data:`WAITING` while the
    data may still come, :data:`NO_VALUES` once it cannot).

    Every y label names the value of the row it is printed on (see :class:`YScale`).
    ``cursor``, an x value, draws a vertical marker there when it is inside the data.
    """
    return layout_chart(series, width, height, title=title, log_y=log_y, xlabel=xlabel, cursor=cursor, empty=empty)[0]


def layout_chart(
    series: Sequence[ChartSeries],
    width: int,
    height: int,
    *,
    title: str = "",
    log_y: bool = False,
    xlabel: str = "step",
    cursor: float | None = None,
    empty: str = WAITING,
) -> tuple[str, YScale | None]:
    """:func:`render_chart`, and the y scale it drew with (None when no plot was drawn)."""
    if width <= 0 or height <= 0:
        return "", None
    colors = _assign_colors(series)
    drawable = [_drawable(s, log_y, width) for s in series]
    hidden = _hidden_by_log(series) if log_y else 0
    note = ""
    if hidden:
        note = f"(log y: {hidden} point{'s' if hidden != 1 else ''} ≤ 0 hidden)"
        if len(title) + 2 + len(note) > width // 2:
            note = f"({hidden} ≤0 hidden)"
    header = _header(title, series, colors, width, note)
    if height == 1:
        return header, None
    body_rows = height - 1
    scale = None
    if not any(xs for xs, _ in drawable):
        body = _message(_empty_reason(series, log_y, empty), width, body_rows)
    elif width < _MIN_WIDTH or body_rows < _MIN_PLOT_ROWS:
        body = _message(TOO_SMALL, width, body_rows)
    else:
        body, scale = _plot(series, drawable, colors, width, body_rows, log_y=log_y, xlabel=xlabel, cursor=cursor)
    return header + "\n" + body, scale


def _hidden_by_log(series: Sequence[ChartSeries]) -> int:
    return sum(1 for s in series for v in s.values if v <= 0 and math.isfinite(v))


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


def _empty_reason(series: Sequence[ChartSeries], log_y: bool, empty: str) -> str:
    values = [v for s in series for v in s.values]
    if not values:
        return empty
    if log_y and any(math.isfinite(v) for v in values):
        return NO_POSITIVE
    return NO_FINITE


def _colored(glyph: str, color: int) -> str:
    return f"\x1b[38;5;{color}m{glyph}\x1b[0m"


def _header(title: str, series: Sequence[ChartSeries], colors: list, width: int, note: str = "") -> str:
    """The title, a note, then every series' glyph and label. When they do not all fit, the
    title gives way first (down to a quarter of the width; the note is kept whole), then the
    longest labels are cut in the middle, each keeping its start and its end, so no series
    goes unnamed while a few columns per label are left."""
    full = f"{title}  {note}".strip()
    labels = [s.label for s in series]
    entry = 4  # two spaces before, the glyph and a space
    legend = sum(entry + len(label) for label in labels) - (0 if full else 2)
    floor = max(width // 4, (len(note) + 2 if note else 0) + min(len(title), 10))
    title_room = max(min(len(full), width - legend), min(len(full), floor))
    room = width - title_room - entry * len(labels) + (0 if title_room else 2)
    fitted = _fit_labels(labels, room)
    if fitted is None:  # not even a few columns each: the first ones, and a mark for the rest
        return _header_cut(f"{note}  {title}".strip(), series, colors, width)
    if note and title_room < len(full):
        shown = (clip(title, title_room - len(note) - 2) + "  " + note).strip()
    else:
        shown = clip(full, title_room)
    out = f"\x1b[1m{shown}\x1b[0m" if shown else ""
    for i, (s, color) in enumerate(zip(series, colors)):
        gap = "  " if shown or i else ""
        glyph = LINE_GLYPH if s.style == "line" else POINT_GLYPH
        out += gap + _colored(glyph, color) + " " + fitted[i]
    return out


_MIN_LABEL = 4


def _fit_labels(labels: list[str], room: int) -> list[str] | None:
    """Labels cut to share ``room`` columns: short ones whole, long ones to one length."""
    if sum(map(len, labels)) <= room:
        return labels
    if not labels or room < _MIN_LABEL * len(labels):
        return None
    cap = room // len(labels)
    # Water-filling: what a short label does not use goes to the longer ones.
    while True:
        short = [len(x) for x in labels if len(x) <= cap]
        longer = len(labels) - len(short)
        new_cap = (room - sum(short)) // longer if longer else cap
        if new_cap == cap:
            break
        cap = new_cap
    return [_middle_cut(x, cap) for x in labels]


def _middle_cut(text: str, room: int) -> str:
    if len(text) <= room:
        return text
    if room <= 1:
        return clip(text, room)
    head = room // 2
    tail = room - 1 - head
    return text[:head] + "…" + (text[-tail:] if tail else "")


def _header_cut(title: str, series: Sequence[ChartSeries], colors: list, width: int) -> str:
    used = min(len(title), width)
    out = f"\x1b[1m{title[:used]}\x1b[0m" if used else ""
    for s, color in zip(series, colors):
        glyph = LINE_GLYPH if s.style == "line" else POINT_GLYPH
        gap = 2 if used else 0
        room = width - used - gap - 2  # glyph and a space before the label
        if room < 1:
            break
        label = clip(s.label, room)
        out += " " * gap + _colored(glyph, color) + " " + label
        used += gap + 2 + len(label)
        if label != s.label:
            break
    return out


def _message(text: str, width: int, rows: int) -> str:
    text = clip(text, width)
    lines = [""] * rows
    lines[(rows - 1) // 2] = text.center(width).rstrip()
    return "\n".join(lines)


def _plot(series, drawable, colors, width: int, rows: int, *, log_y: bool, xlabel: str, cursor: float | None = None):
    # Markers go on last so that a validation point is never painted over by a line.
    order = sorted(range(len(series)), key=lambda i: series[i].style == "points")
    show_xlabel = bool(xlabel) and rows >= _XLABEL_MIN_ROWS
    # The log is taken here rather than by plotext, whose log scale fails on any limit ≤ 0.
    plotted = [(xs, [math.log10(y) for y in ys] if log_y else ys) for xs, ys in drawable]
    values = [y for _, ys in plotted for y in ys]
    xs_all = [x for xs, _ in plotted for x in xs]
    # Only inside the data: a line outside would stretch the x axis to reach it.
    cursor = cursor if cursor is not None and min(xs_all) <= cursor <= max(xs_all) else None
    canvas_rows = rows - _BELOW_CANVAS - show_xlabel
    with _PLOT_LOCK:
        out = _build(series, plotted, order, colors, width, rows, show_xlabel, xlabel, drawable,
                     scale := YScale.fit(values, canvas_rows, log_y), cursor)
        # plotext leaves out a part that does not fit (the x tick row, say); the labels are
        # only true for the canvas really drawn, so a surprise costs one more build.
        drawn_rows = _canvas_rows(out)
        if drawn_rows and drawn_rows != canvas_rows:
            scale = YScale.fit(values, drawn_rows, log_y)
            out = _build(series, plotted, order, colors, width, rows, show_xlabel, xlabel, drawable, scale, cursor)
    return _fit_rows(out, rows), scale


def _build(series, plotted, order, colors, width, rows, show_xlabel, xlabel, drawable, scale, cursor) -> str:
    fig = plt.figure
    fig.clear()
    plt.terminal.limit(False, False)  # size from plot_size, not from the real terminal
    fig.plot_size(width, rows)
    fig.theme("simple")  # frame and ticks in the widget's own colours
    for i in order:
        xs, ys = plotted[i]
        if xs:
            fig.draw(_signal(fig, series[i], xs, ys, colors[i]))
    if cursor is not None:
        fig.line(cursor, 1, pixel=plt.pixel(foreground=CURSOR_COLOR))
    if show_xlabel:
        fig.label(xlabel, "x")
    _x_ticks(fig, drawable, width)
    fig.ruler("y").lim(scale.lo, scale.hi)
    ticks = scale.ticks()
    fig.ruler("y").ticks([scale.plotted_at_row(r) for r, _ in ticks], [label for _, label in ticks])
    return fig.build().string()


def _canvas_rows(ansi: str) -> int | None:
    lines = _ANSI.sub("", ansi).split("\n")
    top = next((i for i, line in enumerate(lines) if "┌" in line), None)
    bottom = next((i for i, line in enumerate(lines) if "└" in line), None)
    return bottom - top - 1 if top is not None and bottom is not None else None


# Rows of a plot body that are not canvas: the frame's top and bottom and the x tick labels
# (the x axis label, when shown, is one more).
_BELOW_CANVAS = 3

# plotext puts the braille canvas's sub-rows (four per row) at
# ``int(_SUB_OFFSET + (4 * rows - _SUB_SHRINK) * fraction)`` counted from the bottom, where
# ``fraction`` runs from 0 at the lower limit to 1 at the upper one (its rescale with its
# own alignment constants). So the lower limit is the middle of the bottom row and the upper
# limit the middle of the top one: row r's value is the limits' linear interpolation.
# tests/test_charts.py checks this against plotext's drawing.
_SUB_OFFSET = 2.0016585662
_SUB_SHRINK = 4.0031747182


@dataclass(frozen=True)
class YScale:
    """How a chart maps values to canvas rows. ``lo`` and ``hi`` are the values (their
    log10 on a log scale) at the middle of the bottom and top rows; ``rows`` is the canvas
    height; row 0 is the top canvas row, printed on the body's second line (under the
    frame)."""

    lo: float
    hi: float
    rows: int
    log: bool = False

    @classmethod
    def fit(cls, values: Sequence[float], rows: int, log: bool) -> YScale:
        lo, hi = min(values), max(values)
        # A flat series (or one too flat to tell apart in a double) gets a small range
        # around its value, so that the axis names the value instead of a unit range at 0.
        # Its value goes on the labelled row nearest the middle.
        rows = max(rows, 1)
        if hi - lo <= 1e-9 * max(abs(lo), abs(hi)):
            mid = (lo + hi) / 2
            pad = 0.1 if log else (abs(mid) * 0.1 or 1.0)
            span = rows - 1
            if span == 0:
                return cls(mid - pad, mid + pad, rows, log)
            at = min(_tick_rows(rows), key=lambda r: abs(2 * r - span))
            step = 2 * pad / span
            lo, hi = mid - (span - at) * step, mid + at * step
        return cls(lo, hi, rows, log)

    @property
    def row_step(self) -> float:
        """The value (log10 on a log scale) one row stands for."""
        return (self.hi - self.lo) / max(self.rows - 1, 1)

    def plotted_at_row(self, row: int) -> float:
        if self.rows == 1:
            return (self.lo + self.hi) / 2
        return self.hi - row * self.row_step

    def value_at_row(self, row: int) -> float:
        """The value a y label on canvas row ``row`` must name."""
        y = self.plotted_at_row(row)
        return 10**y if self.log else y

    def row_of(self, value: float) -> int | None:
        """The canvas row a value is drawn on (None when off the chart or not drawable)."""
        if self.log:
            if not value > 0:
                return None
            value = math.log10(value)
        if not math.isfinite(value):
            return None
        fraction = (value - self.lo) / (self.hi - self.lo)
        sub = int(_SUB_OFFSET + (4 * self.rows - _SUB_SHRINK) * fraction)
        row = self.rows - 1 - sub // 4
        return row if 0 <= row < self.rows else None

    def ticks(self) -> list[tuple[int, str]]:
        """(row, label) for evenly spaced rows, top and bottom included where the spacing
        allows, each label the value of its row to within a quarter of a row."""
        rows = _tick_rows(self.rows)
        return list(zip(rows, _labels([self.plotted_at_row(r) for r in rows], self.row_step, self.log)))


def _tick_rows(rows: int) -> list[int]:
    """Rows (0 at the top) to label: a label every two to four rows, evenly spaced from the
    bottom; the top row too when it is not right above the last one."""
    span = rows - 1
    if span <= 0:
        return [0]
    want = 2 if rows < 12 else 3 if rows < 24 else 4
    divisors = [k for k in range(max(want - 1, 1), want + 2) if span % k == 0]
    every = min(divisors, key=lambda k: (abs(k - want), k)) if divisors else want
    from_bottom = list(range(0, span + 1, every))
    if from_bottom[-1] != span and span - from_bottom[-1] >= 2:
        from_bottom.append(span)
    return sorted(span - c for c in from_bottom)


def _labels(plotted: list[float], step: float, log: bool) -> list[str]:
    """The shortest labels, fixed-point or scientific, that each read back within a quarter
    of ``step`` of their value and that all differ."""
    tolerance = step / 4
    largest = max(abs(10**y if log else y) for y in plotted)
    tiny_or_huge = 0.5 if largest and not 1e-2 <= largest < 1e5 else 0
    best: list[str] | None = None
    for form in ("f", "e"):
        for digits in range(0, 13):
            labels = [_number(10**y if log else y, form, digits) for y in plotted]
            if _readable(labels, plotted, tolerance, log):
                # Scientific wins a tie for tiny or huge numbers (1.00e-3 over 0.00100).
                longer = max(map(len, labels)) - (tiny_or_huge if form == "e" else 0)
                if best is None or longer < max(map(len, best)):
                    best = labels
                break
    return best or [f"{10**y if log else y:.12g}" for y in plotted]


def _number(value: float, form: str, digits: int) -> str:
    text = f"{value:.{digits}{form}}"
    if form == "e":
        mantissa, exponent = text.split("e")
        text = mantissa if int(exponent) == 0 else f"{mantissa}e{int(exponent)}"
    if text.startswith("-") and float(text) == 0:
        text = text[1:]
    return text


def _readable(labels: list[str], plotted: list[float], tolerance: float, log: bool) -> bool:
    if len(set(labels)) != len(labels):
        return False
    for label, y in zip(labels, plotted):
        read = float(label)
        if log:
            if read <= 0:
                return False
            read = math.log10(read)
        if abs(read - y) > tolerance:
            return False
    return True


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
    # A round step wider than the range can leave no tick inside it (1..400 in steps of 500).
    return [first + k * step for k in range(count)] if count >= 2 else [lo, hi]


def step_label(x: float) -> str:
    """A short label for a step count: 950, 12.5k, 1.2M."""
    for scale, suffix in ((1e6, "M"), (1e4, "k")):
        if abs(x) >= scale:
            unit = scale if suffix == "M" else 1e3
            return f"{x / unit:.4g}{suffix}"
    return f"{x:.6g}"
