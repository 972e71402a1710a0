"""The footer of key bindings, drawn with the screen's first frame and rebuilt only when the
keys it shows change.

Textual's Footer starts empty and fills in a refresh or two after its screen shows, then
rebuilds its keys (tens of widgets) on every bindings signal: each focus change and screen
resume, four times while a form opens, though the keys shown stay the same, and on screens
covered by another. A screen that opens with this footer paints its keys in its first frame,
and moving the focus between inputs costs no footer rebuild."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    def __init__(self, *, compact: bool = False) -> None:
        super().__init__(compact=compact)
        # Ready at once: the screen's bindings are known when the footer is composed, and
        # any change after that (a focus, a dialog) arrives as a bindings signal.
        self.set_reactive(Footer._bindings_ready, True)
        self._shown: tuple | None = None

    def shown_keys(self) -> tuple:
        """What the footer's keys are made of: every shown binding with whether it is
        enabled and its tooltip, and the command palette's key."""
        keys = tuple((binding.key, binding.action, binding.description, binding.group, enabled, tooltip)
                     for _, binding, enabled, tooltip in self.screen.active_bindings.values() if binding.show)
        return keys, self.show_command_palette, self.compact

    def compose(self):
        self._shown = self.shown_keys()
        for widget in super().compose():
            # A key takes the footer's `compact` when it mounts, and its watcher sets the
            # class then: a restyle per key before the first paint. Built with it, none.
            if hasattr(widget, "key_display"):
                widget.set_class(self.compact, "-compact", update=False)
            yield widget

    def bindings_changed(self, screen: Screen) -> None:
        if not screen.app.app_focus:
            return  # as Footer: no rebuild while the terminal is not focused
        if self.is_attached and screen is self.screen:
            self.call_after_refresh(self._rebuild_if_changed)

    async def _rebuild_if_changed(self) -> None:
        # A covered screen's keys do not act: its footer catches up on the signal the screen
        # sends when it is on top again. (Rebuilding it meanwhile holds back the frames of
        # the screen on top: Textual paints nothing while any widget recomposes.)
        if self.is_attached and self.app.screen is self.screen and self.shown_keys() != self._shown:
            await self.recompose()
