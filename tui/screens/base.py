"""What the app may ask of any of its screens. Every screen inherits this, so the app asks
instead of probing for attributes a screen may or may not have."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from textual.app import SystemCommand
from textual.screen import Screen


class OrpoScreen(Screen):
    """The defaults fit a screen with nothing to lose: leaving it needs no question."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The width class (HORIZONTAL_BREAKPOINTS) from the start: Textual adds it on the
        # first resize, after the widgets were styled and laid out for the other width, so
        # every widget would be restyled and every chart drawn again before the first paint.
        if self.HORIZONTAL_BREAKPOINTS:
            width = self.app.size.width
            self.add_class(next(name for edge, name in reversed(self.HORIZONTAL_BREAKPOINTS) if width >= edge))

    @property
    def dirty(self) -> bool:
        """Whether leaving now would lose something the user has not saved."""
        return False

    def leave(self, then: Callable[[], object]) -> None:
        """Run `then` (go back, quit) once the screen agrees to be left; a screen with
        unsaved work may ask first, and may never call it."""
        then()

    def commands(self) -> Iterable[SystemCommand]:
        """This screen's entries in the command palette, after the app's own."""
        return ()
