"""The footer of every screen, fitted to its width.

Textual's footer lays its keys out in a row that simply runs off the right edge (and the
command palette key, docked right, is painted over whatever is there). This one shows what
fits and marks what does not: when the keys are too many, the palette key shortens to
"^p …" (the palette lists every command), then the screen's own keys go from the last one,
and only then the app's (quit, F1 help, F2-F4). It is a split of the screen rather than a
dock, so the F1 help panel, which splits the screen to the right, sits above it and the
footer keeps the whole width. Like KeysFooter, it shows its keys in the screen's first
frame and rebuilds only when they change.
"""

from __future__ import annotations

from rich.cells import cell_len
from textual.widgets import Label

from tui.fit import ELLIPSIS
from tui.widgets.keys_footer import KeysFooter

__all__ = ["FitFooter"]

_GAP = 1  # the compact footer's margin after each key
_PALETTE_EDGE = 1  # the bar left of the palette key


def key_width(key) -> int:
    """Columns a footer key takes in the compact footer: its key, a space, its description."""
    return cell_len(key.key_display) + (1 + cell_len(key.description) if key.description else 0)


def fitted(screen_keys: list, app_keys: list, palette, width: int) -> tuple[list, str | None]:
    """Which keys to show in `width` columns, and the palette key's description (None: no
    palette key). Returned keys keep their order: the screen's, then the app's."""
    palette_text = palette.description if palette is not None else None

    def total(keys: list, description: str | None) -> int:
        # A gap between two keys; the palette key's bar is the gap before it.
        shown = sum(key_width(k) for k in keys) + _GAP * max(len(keys) - 1, 0)
        if description is not None:
            shown += _PALETTE_EDGE + cell_len(palette.key_display) + 1 + cell_len(description)
        return shown

    if total(screen_keys + app_keys, palette_text) <= width:
        return screen_keys + app_keys, palette_text
    short = ELLIPSIS if palette is not None and total([], ELLIPSIS) <= width else None
    marker = 0 if short is not None else 1 + _GAP  # the lone "…" that stands for a dropped palette key
    while screen_keys + app_keys and total(screen_keys + app_keys, short) + marker > width:
        # The screen's keys go first, from the last; the app's (quit, help, F2-F4) are the way out.
        if screen_keys:
            screen_keys = screen_keys[:-1]
        else:
            app_keys = app_keys[:-1]
    return screen_keys + app_keys, short


class FitFooter(KeysFooter):
    DEFAULT_CSS = """
    FitFooter {
        dock: none;
        split: bottom;
    }
    FitFooter.-compact FooterKey.-command-palette {
        margin-right: 0;  /* flush right: the bar left of it is its gap */
    }
    FitFooter .footer-more {
        width: auto;
        color: $footer-description-foreground;
    }
    """

    def __init__(self) -> None:
        super().__init__(compact=True)
        self._composed_width = 0

    def compose(self):
        made = list(super().compose())
        # Footer's keys (FooterKey, not exported by textual.widgets) are known by their key display.
        palette = next((w for w in made if hasattr(w, "key_display") and w.has_class("-command-palette")), None)
        keys = [w for w in made if hasattr(w, "key_display") and w is not palette]
        app_keys = {binding.key for node, binding, _, _ in self.screen.active_bindings.values() if node is self.app}
        width = self.size.width or self.screen.size.width
        self._composed_width = width
        shown, palette_text = fitted([k for k in keys if k.key not in app_keys], [k for k in keys if k.key in app_keys],
                                     palette, width)
        yield from (k for k in keys if k in shown)
        if palette is not None and palette_text is not None:
            palette.description = palette_text
            yield palette
        elif palette is not None or len(shown) < len(keys):
            yield Label(ELLIPSIS, classes="footer-more")

    def on_resize(self) -> None:
        if self.size.width != self._composed_width:
            self.call_after_refresh(self.recompose)
