"""A DataTable that always fits its width: every table of the app is one.

Its columns share the width the table is given (:func:`tui.fit.fit_widths`): the columns
named `elastic` (names, notes, descriptions, causes, the values of a diff) give way first,
and a cell or a header that is cut ends in "…" instead of running off the edge. The fit is
made again whenever the table's width or its content changes. Everything else (rows, keys,
sorting, the cursor) is the DataTable's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from tui.fit import fit_widths

__all__ = ["FitTable", "as_cell"]


def as_cell(value: Any) -> Text:
    """A cell as the table shows it: one line of plain text (never markup: a run name or a
    description may hold brackets), cut with an ellipsis when its column is narrower."""
    if isinstance(value, Text):
        text = value.copy()
    else:
        text = Text("" if value is None else str(value))
    text.no_wrap, text.overflow, text.end = True, "ellipsis", ""
    return text


class FitTable(DataTable):
    class WidthChanged(Message):
        """The table was given another width: a screen that picks its columns by the room
        there is (fewer at 80 columns, or beside the help panel) picks them again."""

        def __init__(self, table: FitTable, width: int) -> None:
            super().__init__()
            self.table, self.width = table, width

        @property
        def control(self) -> FitTable:
            return self.table

    def __init__(self, *, elastic: Iterable[str] = (), **kwargs: Any) -> None:
        """`elastic`: the keys of the columns that shrink first."""
        super().__init__(**kwargs)
        self.elastic = frozenset(elastic)
        self._natural: tuple[list[int], list[int]] | None = None  # None: the content changed since the last fit
        self._fitted_room: int | None = None

    # ------------------------------------------------------------------ content

    def add_column(self, label, *, width: int | None = None, key: str | None = None, default=None):
        self._natural = None
        return super().add_column(as_cell(label), width=width, key=key, default=default)

    def add_row(self, *cells, height: int | None = 1, key: str | None = None, label=None):
        self._natural = None
        return super().add_row(*map(as_cell, cells), height=height, key=key, label=label)

    def update_cell(self, row_key, column_key, value, *, update_width: bool = False) -> None:
        self._natural = None
        super().update_cell(row_key, column_key, as_cell(value), update_width=update_width)

    def clear(self, columns: bool = False):
        self._natural = None
        return super().clear(columns=columns)

    def remove_row(self, row_key) -> None:
        self._natural = None
        super().remove_row(row_key)

    def remove_column(self, column_key) -> None:
        self._natural = None
        super().remove_column(column_key)

    def set_cell(self, row_key, column_key, value) -> bool:
        """Show `value` in a cell unless it already shows exactly that; whether it changed."""
        cell, old = as_cell(value), self.get_cell(row_key, column_key)
        if (old.plain, old.style, old.spans) == (cell.plain, cell.style, cell.spans):
            return False
        self.update_cell(row_key, column_key, cell)
        return True

    def set_label(self, column_key, label) -> None:
        """A new header for a column (a sort arrow, say), keeping its rows."""
        self.columns[column_key].label = as_cell(label)
        self._natural = None
        self.refresh()

    # ------------------------------------------------------------------ fitting

    def natural_widths(self) -> tuple[list[int], list[int]]:
        """Each column's widest cell or header, uncut; and its widest cell alone."""
        cells = [max((c.cell_len for c in self.get_column(key) if isinstance(c, Text)), default=0) for key in self.columns]
        return [max(column.label.cell_len, w) for column, w in zip(self.columns.values(), cells)], cells

    def on_idle(self) -> None:
        # Before DataTable's own idle work, which then sizes the scroll area to the new widths.
        self.fit()

    def on_resize(self) -> None:
        self.fit()
        self.post_message(self.WidthChanged(self, self.size.width))

    def fit(self) -> None:
        width = self.scrollable_content_region.width
        if width <= 0 or not self.columns or (self._natural is not None and self._fitted_room == width):
            return
        if self._natural is None:
            self._natural = self.natural_widths()
        self._fitted_room = width
        keys = list(self.columns)
        room = width - 2 * self.cell_padding * len(keys)
        natural, cells = self._natural
        widths = fit_widths(natural, room, {i for i, key in enumerate(keys) if key.value in self.elastic}, cells)
        changed = False
        for key, width in zip(keys, widths):
            column = self.columns[key]
            if column.auto_width or column.width != width:
                column.width, column.auto_width, changed = width, False, True
        if changed:
            # The DataTable caches rendered cells and its scrollable size by column width.
            self._clear_caches()
            self._require_update_dimensions = True
            self.refresh()
