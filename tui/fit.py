"""Fitting text and tables into the columns there are: one rule for every cut in the app,
so that whatever is cut ends in an ellipsis and nothing runs off an edge unmarked.

:func:`clip` cuts one text; :func:`fit_widths` shares a table's width among its columns
(:class:`tui.widgets.fit_table.FitTable` applies it to every table of the app). Pure module:
no textual, so the CLI and the chart renderer use it too.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

__all__ = ["ELLIPSIS", "clip", "fit_widths"]

ELLIPSIS = "…"

# How far a column shrinks at each stage of a fit (see fit_widths): an elastic column (a
# name, a note, a description) first to a width that still tells most values apart, then to
# a few characters; any other column at last to one character and the ellipsis.
ELASTIC_ROOMY = 16
ELASTIC_FLOOR = 8
HEADER_FLOOR = 4
FIXED_FLOOR = 2


def clip(text: str, width: int) -> str:
    """`text` in at most `width` characters; a cut one ends in an ellipsis."""
    if len(text) <= width:
        return text
    if width <= 0:
        return ""
    return text[: width - 1] + ELLIPSIS


def fit_widths(natural: Sequence[int], available: int, elastic: Collection[int] = (),
               cells: Sequence[int] | None = None) -> list[int]:
    """Widths for columns whose content is `natural` wide (header included), so that together
    they take at most `available` columns.

    Columns give way in stages, each stage only as far as the table still overflows, and
    within a stage the widest column first (so no column is cut while a wider one of its
    stage stays whole): the `elastic` columns (indexes) down to :data:`ELASTIC_ROOMY`; the
    headers that are wider than their column's `cells` down to those cells (a header that
    is cut ends in "…" like any cell); the elastic columns down to :data:`ELASTIC_FLOOR`;
    then every other column down to :data:`FIXED_FLOOR`. A table that does not fit even
    then keeps those floors (it is wider than `available`): a column squeezed to nothing
    would hide that it exists.
    """
    widths = list(natural)
    cells = natural if cells is None else cells
    elastic_cols = [i for i in range(len(widths)) if i in elastic]
    fixed_cols = [i for i in range(len(widths)) if i not in elastic]
    stages = (
        (elastic_cols, lambda i: ELASTIC_ROOMY),
        (fixed_cols, lambda i: max(cells[i], HEADER_FLOOR)),
        (elastic_cols, lambda i: ELASTIC_FLOOR),
        (fixed_cols, lambda i: FIXED_FLOOR),
    )
    excess = sum(widths) - available
    for members, floor in stages:
        floors = {i: min(natural[i], floor(i)) for i in members}
        while excess > 0:
            shrinkable = [i for i in members if widths[i] > floors[i]]
            if not shrinkable:
                break
            widest = max(shrinkable, key=lambda i: (widths[i], i))
            widths[widest] -= 1
            excess -= 1
    return widths
