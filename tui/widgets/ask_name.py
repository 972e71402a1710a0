"""Ask for one line of text: a name, tags, a number of steps."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label

from tui.widgets.dialog import Dialog


class AskName(Dialog[str | None]):
    """Dismisses with the answer, or None when cancelled. An empty answer counts as
    cancelled unless `allow_empty` (clearing tags)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str, value: str = "", allow_empty: bool = False) -> None:
        super().__init__()
        self._title, self._value, self._allow_empty = title, value, allow_empty

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="title")
            yield Input(self._value, id="name")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("OK", id="ok", variant="primary")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(self._answer(event.value))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(self._answer(self.query_one("#name", Input).value) if event.button.id == "ok" else None)

    def _answer(self, text: str) -> str | None:
        text = text.strip()
        return text if text or self._allow_empty else None
