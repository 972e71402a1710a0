"""Ask a question with a few answers, one button each."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static

from tui.widgets.dialog import Dialog

CANCEL = "cancel"


class Confirm(Dialog[str]):
    """Dismisses with the id of the chosen button, or "cancel" on escape. `choices` are
    (id, label, button variant); the last one has the focus."""

    BINDINGS = [Binding("escape", f"dismiss('{CANCEL}')", "Cancel", id="dialog.cancel")]

    def __init__(self, title: str, message: str, choices: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self._title, self._message, self._choices = title, message, choices

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="title")
            yield Static(self._message)
            with Horizontal(classes="buttons"):
                for ident, label, variant in self._choices:
                    yield Button(label, id=ident, variant=variant)

    def on_mount(self) -> None:
        self.query(Button).last().focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or CANCEL)
