"""The chart widget: a plotext chart (drawn by :func:`tui.charts.render_chart`) that fills
the widget. It renders at its own content size and keeps the result until the data version
or its size changes, so a screen refresh that changed nothing costs nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text
from textual.widget import Widget

from tui.charts import WAITING, ChartSeries, render_chart

__all__ = ["ChartView", "SeriesSource"]

SeriesSource = Sequence[ChartSeries] | Callable[[int], Sequence[ChartSeries]]


class ChartView(Widget):
    """A chart that fills the widget.

    ``series`` is a list of :class:`ChartSeries`, or a callable that is given the width in
    columns and returns one, so that the caller can downsample to exactly what is shown.
    The chart is rebuilt only when :meth:`update_series` brings a new ``version`` (or new
    options) or the widget's size changes; any other repaint reuses the last one.
    ``renders`` counts the rebuilds.
    """

    DEFAULT_CSS = """
    ChartView {
        width: 1fr;
        height: 1fr;
        min-height: 3;
    }
    """

    def __init__(
        self,
        series: SeriesSource = (),
        *,
        title: str = "",
        log_y: bool = False,
        xlabel: str = "step",
        version: object = 0,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._source: SeriesSource = series
        self._options = (title, log_y, xlabel, WAITING)
        self._version = version
        self._cursor: float | None = None
        self._cache_key: tuple | None = None
        self._cached = Text()
        self.renders = 0

    @property
    def version(self) -> object:
        return self._version

    def update_series(
        self,
        series: SeriesSource,
        version: object,
        *,
        title: str | None = None,
        log_y: bool | None = None,
        xlabel: str | None = None,
        empty: str | None = None,
    ) -> bool:
        """Show new data. Returns False, and does nothing, when neither ``version`` nor any
        option changed: the caller can call this on every tick. ``empty`` is what the chart
        says while it has no data (see :func:`tui.charts.render_chart`)."""
        new = (title, log_y, xlabel, empty)
        options = tuple(old if value is None else value for old, value in zip(self._options, new))
        if version == self._version and options == self._options:
            return False
        self._source, self._version, self._options = series, version, options
        self.refresh()
        return True

    def set_cursor(self, x: float | None) -> None:
        """Draw a vertical marker at step (or x value) ``x``; None takes it away."""
        if x != self._cursor:
            self._cursor = x
            self.refresh()

    def on_resize(self) -> None:
        self.refresh()

    def render(self) -> Text:
        size = self.content_size
        key = (self._version, self._options, self._cursor, size.width, size.height)
        if key != self._cache_key:
            self._cached = self._build(size.width, size.height)
            self._cache_key = key
        return self._cached

    def _build(self, width: int, height: int) -> Text:
        if width <= 0 or height <= 0:
            return Text()
        source = self._source
        series = source(width) if callable(source) else source
        title, log_y, xlabel, empty = self._options
        self.renders += 1
        text = Text.from_ansi(render_chart(series, width, height, title=title, log_y=log_y, xlabel=xlabel,
                                           cursor=self._cursor, empty=empty))
        text.no_wrap = True
        text.overflow = "crop"
        text.end = ""
        return text
